//! The writes of [`Batches::commit`](super::Batches::commit): each kind of change as
//! multi-row statements on the open transaction.
//!
//! Statement order matters for locks. Keys that decide whether the batch may commit at all
//! (dedupe, enter-once, instance versions) go first, so a conflict fails fast; per-profile rows
//! follow; the event catalog, whose rows every batch touches, goes last so its row locks are held
//! for the shortest time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Statement,
};
use serde_json::{Map, Value};

use journeys_core::partition::partition_of;

use crate::entity::{
    audience, audience_member, dedupe, enter_once, instance, outbox, profile, timeline, timer,
};
use crate::error::StoreError;
use crate::repo::instances::{InstanceRecord, to_active_model, truncated};
use crate::repo::profiles::into_object;
use crate::repo::{
    INSERT_CHUNK, catalog, conflict_on_unique, instances, micros, padded, placeholders, quoted,
    sized_chunks,
};

use super::Changes;

/// Why [`apply`] failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// A database error, already mapped (unique violations to conflicts).
    Store(StoreError),
    /// Some of these `(instance id, expected version)` did not match. Which one is best read
    /// after the rollback: inside the transaction the rows that did match already carry their
    /// new version, which can equal the stale one's.
    Versions(Vec<(String, i64)>),
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// Writes all of `changes` on `db` (the caller's transaction).
pub(super) async fn apply<C: ConnectionTrait>(
    db: &C,
    changes: &Changes,
    now: DateTime<Utc>,
    shard: i16,
) -> Result<(), Failure> {
    insert_dedupe(db, &changes.dedupe, changes.dedupe_expired_before).await?;
    insert_enter_once(db, &changes.enter_once, now).await?;
    crate::repo::identities::write_links(db, &changes.links, &changes.refusals).await?;
    crate::repo::identities::relink(db, &changes.relinks).await?;
    crate::repo::identities::apply_merges(
        db,
        &changes.merges,
        &changes.enter_once_merged,
        changes.partitions,
        now,
    )
    .await?;
    // Updates first: an event may end an instance (freeing its `active_key`) and start a new
    // one with the same unique value in the same batch.
    update_instances(db, &changes.instances_updated).await?;
    insert_instances(db, &changes.instances_new).await?;
    delete_timers(db, &changes.timers_deleted).await?;
    insert_timers(db, changes).await?;
    instances::insert_timeline(db, &changes.timeline).await?;
    insert_outbox(db, changes).await?;
    merge_traits(db, &changes.traits, now).await?;
    update_audiences(db, &changes.audience_adds, &changes.audience_removes, now).await?;
    delete_profiles(db, &changes.deletions, now).await?;
    // Counters and the catalog are rows every batch touches: last, so their locks are held
    // the shortest; counters first in every batch, each in key order, so no two batches wait
    // on each other in opposite orders.
    // Both in the batch's shard, so the lanes do not queue on each other's rows.
    super::stats::upsert(db, &changes.counters, shard).await?;
    catalog::record_seen(db, &changes.catalog_seen, shard).await?;
    Ok(())
}

/// Remembers `seen`. A key stored before `expired_before` is past the window (the purge has
/// not reached it yet): only when the insert conflicts are such keys deleted and the insert
/// tried again, so the common path stays one statement; a second conflict is a real one.
async fn insert_dedupe<C: ConnectionTrait>(
    db: &C,
    seen: &[(String, DateTime<Utc>)],
    expired_before: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let insert = |chunk: &[(String, DateTime<Utc>)]| {
        let models = chunk.iter().map(|(message_id, at)| dedupe::ActiveModel {
            message_id: Set(message_id.clone()),
            seen_at: Set(micros(*at)),
        });
        dedupe::Entity::insert_many(models).exec_without_returning(db)
    };
    for chunk in sized_chunks(seen) {
        let Err(err) = insert(chunk).await else {
            continue;
        };
        let err = conflict_on_unique("messageId already seen", err);
        let (StoreError::Conflict(_), Some(before)) = (&err, expired_before) else {
            return Err(err);
        };
        dedupe::Entity::delete_many()
            .filter(dedupe::Column::MessageId.is_in(chunk.iter().map(|(id, _)| id.as_str())))
            .filter(dedupe::Column::SeenAt.lt(micros(before)))
            .exec(db)
            .await?;
        insert(chunk)
            .await
            .map_err(|e| conflict_on_unique("messageId already seen", e))?;
    }
    Ok(())
}

async fn insert_enter_once<C: ConnectionTrait>(
    db: &C,
    entries: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = micros(now);
    for chunk in sized_chunks(entries) {
        let models = chunk
            .iter()
            .map(|(journey_id, profile_id)| enter_once::ActiveModel {
                journey_id: Set(journey_id.clone()),
                profile_id: Set(profile_id.clone()),
                entered_at: Set(now),
            });
        enter_once::Entity::insert_many(models)
            .exec_without_returning(db)
            .await
            .map_err(|e| conflict_on_unique("profile already entered enter-once journey", e))?;
    }
    Ok(())
}

async fn insert_instances<C: ConnectionTrait>(
    db: &C,
    new: &[InstanceRecord],
) -> Result<(), StoreError> {
    for chunk in sized_chunks(new) {
        let models = chunk.iter().map(|r| to_active_model(&truncated(r)));
        instance::Entity::insert_many(models)
            .exec_without_returning(db)
            .await
            .map_err(|e| conflict_on_unique("instance id or active key taken", e))?;
    }
    Ok(())
}

/// Rows per instance `UPDATE`. On SQLite each row's values are picked by `CASE id WHEN ...`
/// with one arm per row, so a statement costs rows² comparisons; past about a hundred rows that
/// outweighs the round trips saved.
const UPDATE_CHUNK: usize = 100;

/// Columns an instance update writes; the others (journey, revision, profile, unique value,
/// entry time) never change after entry.
const UPDATED_COLUMNS: [&str; 11] = [
    "state",
    "current_step",
    "waiting_event",
    "context",
    "state_blob",
    "passes",
    "version",
    "updated_at",
    "ended_at",
    "active_key",
    "expires_at",
];

/// The value of `UPDATED_COLUMNS[column]` for `r`.
fn updated_value(r: &InstanceRecord, column: usize) -> sea_orm::Value {
    match column {
        0 => r.state.as_str().into(),
        1 => r.current_step.clone().into(),
        2 => r.waiting_event.clone().into(),
        3 => r.context.clone().into(),
        4 => r.state_blob.clone().into(),
        5 => r.passes.into(),
        6 => r.version.into(),
        7 => micros(r.updated_at).into(),
        8 => r.ended_at.map(micros).into(),
        9 => r.active_key.clone().into(),
        _ => Some(micros(r.expires_at)).into(),
    }
}

/// Optimistic updates, many rows per statement: a single `UPDATE` that matches each row by its
/// id and expected version ([`joined_update`] on MySQL, [`case_update`] on SQLite). Fewer rows
/// changed than given means some version did not match, and the batch conflicts.
///
/// An instance updated twice in one batch goes into two statements, in order.
async fn update_instances<C: ConnectionTrait>(
    db: &C,
    updates: &[(InstanceRecord, i64)],
) -> Result<(), Failure> {
    let mut group: Vec<&(InstanceRecord, i64)> = Vec::new();
    let mut ids: HashSet<&str> = HashSet::new();
    for update in updates {
        if group.len() == UPDATE_CHUNK || !ids.insert(update.0.id.as_str()) {
            update_group(db, &group).await?;
            group.clear();
            ids.clear();
            ids.insert(update.0.id.as_str());
        }
        group.push(update);
    }
    if !group.is_empty() {
        update_group(db, &group).await?;
    }
    Ok(())
}

async fn update_group<C: ConnectionTrait>(
    db: &C,
    rows: &[&(InstanceRecord, i64)],
) -> Result<(), Failure> {
    // Padded to a power of two by repeating the last row (which changes nothing: a row is
    // updated once however often it matches), so the statement's text repeats across batches.
    let group: Vec<&(InstanceRecord, i64)> = match rows.last() {
        Some(&last) => {
            let mut group = rows.to_vec();
            group.resize(rows.len().next_power_of_two().max(8), last);
            group
        }
        None => return Ok(()),
    };
    let group = group.as_slice();
    let backend = db.get_database_backend();
    let (sql, values) = if backend == DbBackend::MySql {
        joined_update(group)
    } else {
        case_update(backend, group)
    };
    let result = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(|e| conflict_on_unique("instance active key taken", e))?;
    if result.rows_affected() == rows.len() as u64 {
        return Ok(());
    }
    Err(Failure::Versions(
        rows.iter()
            .map(|(record, expected)| (record.id.clone(), *expected))
            .collect(),
    ))
}

/// MySQL: the group's rows as a derived table joined by primary key, so each row is found
/// once by its id. (The `CASE id WHEN …` form searched every column's arms for every row:
/// rows² comparisons per column, the top of the server's profile while timers fired.)
fn joined_update(group: &[&(InstanceRecord, i64)]) -> (String, Vec<sea_orm::Value>) {
    let backend = DbBackend::MySql;
    let mut sql = format!("UPDATE {} AS i JOIN (", quoted(backend, "instances"));
    let mut values: Vec<sea_orm::Value> =
        Vec::with_capacity(group.len() * (UPDATED_COLUMNS.len() + 2));
    for (n, (record, expected)) in group.iter().enumerate() {
        if n == 0 {
            sql.push_str("SELECT ? AS id, ? AS expected");
            for c in 0..UPDATED_COLUMNS.len() {
                let _ = write!(sql, ", ? AS c{c}");
            }
        } else {
            sql.push_str(" UNION ALL SELECT ?, ?");
            sql.push_str(&", ?".repeat(UPDATED_COLUMNS.len()));
        }
        values.push(record.id.as_str().into());
        values.push((*expected).into());
        values.extend((0..UPDATED_COLUMNS.len()).map(|c| updated_value(record, c)));
    }
    sql.push_str(") AS v ON i.id = v.id AND i.version = v.expected SET ");
    for (c, column) in UPDATED_COLUMNS.iter().enumerate() {
        if c > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "i.{} = v.c{c}", quoted(backend, column));
    }
    (sql, values)
}

/// SQLite: one `UPDATE` whose values are `CASE id WHEN … END` and whose `WHERE` demands each
/// row's expected version.
fn case_update(
    backend: DbBackend,
    group: &[&(InstanceRecord, i64)],
) -> (String, Vec<sea_orm::Value>) {
    let id = quoted(backend, "id");
    let mut sql = format!("UPDATE {} SET ", quoted(backend, "instances"));
    let mut values: Vec<sea_orm::Value> =
        Vec::with_capacity(group.len() * (UPDATED_COLUMNS.len() * 2 + 3));
    for (c, column) in UPDATED_COLUMNS.iter().enumerate() {
        if c > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "{} = CASE {id}", quoted(backend, column));
        for (record, _) in group {
            sql.push_str(" WHEN ? THEN ?");
            values.push(record.id.as_str().into());
            values.push(updated_value(record, c));
        }
        sql.push_str(" END");
    }
    let _ = write!(
        sql,
        " WHERE {id} IN ({}) AND {} = CASE {id}",
        placeholders(group.len()),
        quoted(backend, "version")
    );
    values.extend(
        group
            .iter()
            .map(|(r, _)| sea_orm::Value::from(r.id.as_str())),
    );
    for (record, expected) in group {
        sql.push_str(" WHEN ? THEN ?");
        values.push(record.id.as_str().into());
        values.push((*expected).into());
    }
    sql.push_str(" END");
    (sql, values)
}

/// The conflict for a version mismatch among `candidates`, read after the rollback.
pub(super) async fn version_conflict<C: ConnectionTrait>(
    db: &C,
    candidates: &[(String, i64)],
) -> StoreError {
    let found: Result<HashMap<String, i64>, _> = instance::Entity::find()
        .select_only()
        .column(instance::Column::Id)
        .column(instance::Column::Version)
        .filter(instance::Column::Id.is_in(candidates.iter().map(|(id, _)| id.as_str())))
        .into_tuple::<(String, i64)>()
        .all(db)
        .await
        .map(|rows| rows.into_iter().collect());
    let found = match found {
        Ok(found) => found,
        Err(err) => return err.into(),
    };
    let message = candidates
        .iter()
        .find_map(|(id, expected)| match found.get(id) {
            None => Some(format!("instance {id} does not exist")),
            Some(v) if v != expected => {
                Some(format!("instance {id} is at version {v}, not {expected}"))
            }
            Some(_) => None,
        })
        .unwrap_or_else(|| "instance version changed concurrently".to_owned());
    StoreError::Conflict(message)
}

async fn delete_timers<C: ConnectionTrait>(db: &C, ids: &[String]) -> Result<(), StoreError> {
    for chunk in ids.chunks(INSERT_CHUNK) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        timer::Entity::delete_many()
            .filter(timer::Column::Id.is_in(padded(&chunk)))
            .exec(db)
            .await?;
    }
    Ok(())
}

async fn insert_timers<C: ConnectionTrait>(db: &C, changes: &Changes) -> Result<(), StoreError> {
    for chunk in sized_chunks(&changes.timers_new) {
        let models = chunk.iter().map(|timer| {
            let mut model = crate::repo::timers::to_active_model(timer);
            if changes.partitions > 0 {
                let partition = partition_of(&timer.profile_id, changes.partitions);
                model.partition_id = Set(i32::try_from(partition).ok());
            }
            model
        });
        timer::Entity::insert_many(models)
            .exec_without_returning(db)
            .await
            .map_err(|e| conflict_on_unique("timer id taken", e))?;
    }
    Ok(())
}

async fn insert_outbox<C: ConnectionTrait>(db: &C, changes: &Changes) -> Result<(), StoreError> {
    for chunk in sized_chunks(&changes.outbox_new) {
        let models = chunk.iter().map(crate::repo::outbox::to_active_model);
        outbox::Entity::insert_many(models)
            .exec_without_returning(db)
            .await
            .map_err(|e| conflict_on_unique("outbox id taken", e))?;
    }
    Ok(())
}

/// Shallow-merges traits like [`crate::Profiles::merge_traits`], for many profiles at once:
/// create missing rows (which also locks existing ones on MySQL), read them under lock, merge
/// in order, and write them back with one upsert per chunk. Profiles are handled in sorted
/// order so concurrent batches lock rows in the same order.
async fn merge_traits<C: ConnectionTrait>(
    db: &C,
    traits: &[(String, Map<String, Value>)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = micros(now);
    let mut by_profile: BTreeMap<&str, Vec<&Map<String, Value>>> = BTreeMap::new();
    for (profile_id, t) in traits {
        by_profile.entry(profile_id.as_str()).or_default().push(t);
    }
    let ids: Vec<&str> = by_profile.keys().copied().collect();
    let row = |user_id: &str, traits: Value| profile::ActiveModel {
        user_id: Set(user_id.to_owned()),
        traits: Set(traits),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    for chunk in ids.chunks(INSERT_CHUNK) {
        // An update on conflict (not `INSERT IGNORE`) takes the exclusive lock right away; a
        // shared lock upgraded by the read below could deadlock with a concurrent batch.
        profile::Entity::insert_many(chunk.iter().map(|id| row(id, Value::Object(Map::new()))))
            .on_conflict(
                OnConflict::column(profile::Column::UserId)
                    .update_column(profile::Column::UpdatedAt)
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
        let mut current: HashMap<String, Map<String, Value>> = profile::Entity::find()
            .filter(profile::Column::UserId.is_in(chunk.iter().copied()))
            .lock_exclusive()
            .all(db)
            .await?
            .into_iter()
            .map(|m| (m.user_id, into_object(m.traits)))
            .collect();
        let models = chunk.iter().map(|id| {
            let mut merged = current.remove(*id).unwrap_or_default();
            for update in by_profile.get(id).into_iter().flatten() {
                for (key, value) in *update {
                    merged.insert(key.clone(), value.clone());
                }
            }
            row(id, Value::Object(merged))
        });
        profile::Entity::insert_many(models)
            .on_conflict(
                OnConflict::column(profile::Column::UserId)
                    .update_columns([profile::Column::Traits, profile::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Removes everything of the deleted profiles but their rows, which become tombstones (no
/// traits, `deleted_at`, `suppressed`). Runs after the batch's other writes, so what the batch
/// wrote for a profile before deleting it goes too.
async fn delete_profiles<C: ConnectionTrait>(
    db: &C,
    deletions: &[super::ProfileDeletion],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if deletions.is_empty() {
        return Ok(());
    }
    let now = micros(now);
    let ids: BTreeSet<&str> = deletions.iter().map(|d| d.profile_id.as_str()).collect();
    let ids: Vec<&str> = ids.into_iter().collect();
    for chunk in ids.chunks(INSERT_CHUNK) {
        let of_profiles = || chunk.iter().copied();
        let instance_ids: Vec<String> = instance::Entity::find()
            .select_only()
            .column(instance::Column::Id)
            .filter(instance::Column::ProfileId.is_in(of_profiles()))
            .into_tuple::<String>()
            .all(db)
            .await?;
        for ids in instance_ids.chunks(INSERT_CHUNK) {
            timer::Entity::delete_many()
                .filter(timer::Column::InstanceId.is_in(ids.iter().map(String::as_str)))
                .exec(db)
                .await?;
        }
        outbox::Entity::delete_many()
            .filter(outbox::Column::ProfileId.is_in(of_profiles()))
            .exec(db)
            .await?;
        timeline::Entity::delete_many()
            .filter(timeline::Column::ProfileId.is_in(of_profiles()))
            .exec(db)
            .await?;
        instance::Entity::delete_many()
            .filter(instance::Column::ProfileId.is_in(of_profiles()))
            .exec(db)
            .await?;
        enter_once::Entity::delete_many()
            .filter(enter_once::Column::ProfileId.is_in(of_profiles()))
            .exec(db)
            .await?;
        audience_member::Entity::delete_many()
            .filter(audience_member::Column::UserId.is_in(of_profiles()))
            .exec(db)
            .await?;
        crate::repo::identities::delete_links(db, chunk).await?;
    }
    let tombstones = deletions.iter().map(|d| profile::ActiveModel {
        user_id: Set(d.profile_id.clone()),
        traits: Set(Value::Object(Map::new())),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(Some(micros(d.deleted_at))),
        suppressed: Set(d.suppressed),
    });
    for chunk in tombstones.collect::<Vec<_>>().chunks(INSERT_CHUNK) {
        profile::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(
                OnConflict::column(profile::Column::UserId)
                    .update_columns([
                        profile::Column::Traits,
                        profile::Column::UpdatedAt,
                        profile::Column::DeletedAt,
                        profile::Column::Suppressed,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Adds, then removes, memberships of active audiences; unknown and archived audiences are
/// skipped, as are members already present (adds) or absent (removes).
async fn update_audiences<C: ConnectionTrait>(
    db: &C,
    adds: &[(String, String)],
    removes: &[(String, String)],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    if adds.is_empty() && removes.is_empty() {
        return Ok(());
    }
    let now = micros(now);
    let keys: BTreeSet<&str> = adds
        .iter()
        .chain(removes)
        .map(|(key, _)| key.as_str())
        .collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut active: HashSet<String> = HashSet::new();
    for chunk in keys.chunks(INSERT_CHUNK) {
        active.extend(
            audience::Entity::find()
                .select_only()
                .column(audience::Column::Key)
                .filter(audience::Column::Key.is_in(chunk.iter().copied()))
                .filter(audience::Column::Active.eq(true))
                .into_tuple::<String>()
                .all(db)
                .await?,
        );
    }

    let added: BTreeSet<(&str, &str)> = adds
        .iter()
        .filter(|(key, _)| active.contains(key))
        .map(|(key, user)| (key.as_str(), user.as_str()))
        .collect();
    let added: Vec<(&str, &str)> = added.into_iter().collect();
    for chunk in added.chunks(INSERT_CHUNK) {
        let models = chunk
            .iter()
            .map(|(key, user)| audience_member::ActiveModel {
                audience_key: Set((*key).to_owned()),
                user_id: Set((*user).to_owned()),
                added_at: Set(now),
            });
        audience_member::Entity::insert_many(models)
            .on_conflict_do_nothing()
            .exec_without_returning(db)
            .await?;
    }

    let mut removed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, user) in removes.iter().filter(|(key, _)| active.contains(key)) {
        removed
            .entry(key.as_str())
            .or_default()
            .insert(user.as_str());
    }
    for (key, users) in removed {
        let users: Vec<&str> = users.into_iter().collect();
        for chunk in users.chunks(INSERT_CHUNK) {
            audience_member::Entity::delete_many()
                .filter(audience_member::Column::AudienceKey.eq(key))
                .filter(audience_member::Column::UserId.is_in(chunk.iter().copied()))
                .exec(db)
                .await?;
        }
    }
    Ok(())
}
