//! Identities: ids linked to a profile (an `anonymousId`, or an `alias`'s `previousId`), the
//! pending merges of the linked profiles' state, and the links refused because the id already
//! belongs to another profile.
//!
//! The rows are written in the engine's batch commits ([`crate::Changes::links`],
//! [`crate::Changes::merges`], [`crate::Changes::refusals`]); this repository reads them.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use serde_json::{Map, Value};

use journeys_core::partition::partition_of;

use crate::entity::{
    audience_member, enter_once, identity, identity_refusal, instance, outbox, profile, timeline,
    timer,
};
use crate::error::StoreError;
use crate::repo::{INSERT_CHUNK, conflict_on_unique, micros};

/// `identity` now belongs to profile `profile_id`; the state of the profile `identity` had
/// waits to be merged into it ([`ProfileMerge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    pub identity: String,
    pub profile_id: String,
    pub linked_at: DateTime<Utc>,
}

/// The state of profile `from` (traits, memberships, enter-once records, instances with their
/// timelines, timers and sends) moves into profile `into`: rows keyed by `from` are re-keyed
/// (timers also to `into`'s partition); the pending merge of the link `from -> into` is marked
/// done. The merged traits, memberships and enter-once records of `into` are written as the
/// batch's other changes ([`crate::Changes::traits`], `audience_adds`,
/// [`crate::Changes::enter_once_merged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileMerge {
    pub from: String,
    pub into: String,
    pub merged_at: DateTime<Utc>,
}

/// A link not made: `identity` already belongs to `profile_id`, and an event (or `alias`)
/// tried to link it to `refused_profile_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRefusal {
    pub identity: String,
    pub refused_profile_id: String,
    pub profile_id: String,
    pub refused_at: DateTime<Utc>,
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRecord {
    pub identity: String,
    pub profile_id: String,
    pub linked_at: DateTime<Utc>,
    /// `None` while the linked profile's state waits to be merged.
    pub merged_at: Option<DateTime<Utc>>,
}

/// A stored refusal: how many times, and the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRecord {
    pub identity: String,
    pub refused_profile_id: String,
    pub profile_id: String,
    pub refused_at: DateTime<Utc>,
    pub refusals: i64,
}

impl From<identity::Model> for IdentityRecord {
    fn from(m: identity::Model) -> Self {
        Self {
            identity: m.identity,
            profile_id: m.profile_id,
            linked_at: m.linked_at,
            merged_at: m.merged_at,
        }
    }
}

impl From<identity_refusal::Model> for RefusalRecord {
    fn from(m: identity_refusal::Model) -> Self {
        Self {
            identity: m.identity,
            refused_profile_id: m.refused_profile_id,
            profile_id: m.profile_id,
            refused_at: m.refused_at,
            refusals: m.refusals,
        }
    }
}

/// Repository of identities; obtained from [`crate::Store::identities`].
#[derive(Debug, Clone, Copy)]
pub struct Identities<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Identities<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// The profile `id` belongs to: the one it is linked to, else `id` itself.
    ///
    /// # Errors
    /// Database errors.
    pub async fn resolve(&self, id: &str) -> Result<String, StoreError> {
        Ok(identity::Entity::find_by_id(id)
            .one(self.db)
            .await?
            .map_or_else(|| id.to_owned(), |m| m.profile_id))
    }

    /// Whether any id is linked to a profile at all.
    ///
    /// # Errors
    /// Database errors.
    pub async fn any(&self) -> Result<bool, StoreError> {
        Ok(identity::Entity::find()
            .select_only()
            .column(identity::Column::Identity)
            .into_tuple::<String>()
            .one(self.db)
            .await?
            .is_some())
    }

    /// The ids linked to `profile_id`, in link order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn of_profile(&self, profile_id: &str) -> Result<Vec<IdentityRecord>, StoreError> {
        Ok(identity::Entity::find()
            .filter(identity::Column::ProfileId.eq(profile_id))
            .order_by_asc(identity::Column::LinkedAt)
            .order_by_asc(identity::Column::Identity)
            .all(self.db)
            .await?
            .into_iter()
            .map(IdentityRecord::from)
            .collect())
    }

    /// The refused links that concern `profile_id`: ids of it that another profile tried to
    /// take, and ids it tried to take from another profile.
    ///
    /// # Errors
    /// Database errors.
    pub async fn refusals_of(&self, profile_id: &str) -> Result<Vec<RefusalRecord>, StoreError> {
        Ok(identity_refusal::Entity::find()
            .filter(
                identity_refusal::Column::ProfileId
                    .eq(profile_id)
                    .or(identity_refusal::Column::RefusedProfileId.eq(profile_id)),
            )
            .order_by_asc(identity_refusal::Column::RefusedAt)
            .all(self.db)
            .await?
            .into_iter()
            .map(RefusalRecord::from)
            .collect())
    }

    /// How many links were refused, over all profiles (each id and refused profile counted
    /// every time).
    ///
    /// # Errors
    /// Database errors.
    pub async fn refused_total(&self) -> Result<i64, StoreError> {
        let rows = identity_refusal::Entity::find().all(self.db).await?;
        Ok(rows.iter().map(|r| r.refusals).sum())
    }
}

/// The links of `ids`, as a redirect (`identity` in `ids`) or as an identity of theirs
/// (`profile_id` in `ids`).
pub(crate) async fn load_links<C: ConnectionTrait>(
    db: &C,
    ids: &[&str],
) -> Result<Vec<IdentityRecord>, StoreError> {
    let ids = crate::repo::padded(ids);
    Ok(identity::Entity::find()
        .filter(
            identity::Column::Identity
                .is_in(ids.iter().copied())
                .or(identity::Column::ProfileId.is_in(ids.iter().copied())),
        )
        .all(db)
        .await?
        .into_iter()
        .map(IdentityRecord::from)
        .collect())
}

/// Inserts the links (an id taken already is a conflict: the batch is redone with the link
/// loaded) and upserts the refusals.
pub(crate) async fn write_links<C: ConnectionTrait>(
    db: &C,
    links: &[IdentityLink],
    refusals: &[IdentityRefusal],
) -> Result<(), StoreError> {
    for chunk in links.chunks(INSERT_CHUNK) {
        let models = chunk.iter().map(|l| identity::ActiveModel {
            identity: Set(l.identity.clone()),
            profile_id: Set(l.profile_id.clone()),
            linked_at: Set(micros(l.linked_at)),
            merged_at: Set(None),
        });
        identity::Entity::insert_many(models)
            .exec_without_returning(db)
            .await
            .map_err(|e| conflict_on_unique("identity already linked", e))?;
    }
    for r in refusals {
        identity_refusal::Entity::insert(identity_refusal::ActiveModel {
            identity: Set(r.identity.clone()),
            refused_profile_id: Set(r.refused_profile_id.clone()),
            profile_id: Set(r.profile_id.clone()),
            refused_at: Set(micros(r.refused_at)),
            refusals: Set(1),
        })
        .on_conflict(
            OnConflict::columns([
                identity_refusal::Column::Identity,
                identity_refusal::Column::RefusedProfileId,
            ])
            .update_columns([
                identity_refusal::Column::ProfileId,
                identity_refusal::Column::RefusedAt,
            ])
            .value(
                identity_refusal::Column::Refusals,
                Expr::col((identity_refusal::Entity, identity_refusal::Column::Refusals)).add(1),
            )
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}

/// Moves pending links on to their new profile (see [`crate::Changes::relinks`]); a link
/// merged meanwhile stays.
pub(crate) async fn relink<C: ConnectionTrait>(
    db: &C,
    relinks: &[IdentityLink],
) -> Result<(), StoreError> {
    for l in relinks {
        identity::Entity::update_many()
            .col_expr(
                identity::Column::ProfileId,
                Expr::value(l.profile_id.as_str()),
            )
            .col_expr(identity::Column::LinkedAt, Expr::value(micros(l.linked_at)))
            .filter(identity::Column::Identity.eq(l.identity.as_str()))
            .filter(identity::Column::MergedAt.is_null())
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Applies the merges (see [`ProfileMerge`]). A merge whose link is not pending any more (done
/// by another writer) is a conflict: the batch is redone with fresh state.
pub(crate) async fn apply_merges<C: ConnectionTrait>(
    db: &C,
    merges: &[ProfileMerge],
    enter_once_merged: &[(String, String)],
    partitions: u32,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = micros(now);
    for m in merges {
        let marked = identity::Entity::update_many()
            .col_expr(identity::Column::MergedAt, Expr::value(micros(m.merged_at)))
            .filter(identity::Column::Identity.eq(m.from.as_str()))
            .filter(identity::Column::ProfileId.eq(m.into.as_str()))
            .filter(identity::Column::MergedAt.is_null())
            .exec(db)
            .await?;
        if marked.rows_affected != 1 {
            return Err(StoreError::Conflict(format!(
                "the merge of profile {} into {} is not pending",
                m.from, m.into
            )));
        }
        move_rows(db, m, partitions, now).await?;
    }
    for chunk in enter_once_merged.chunks(INSERT_CHUNK) {
        let models = chunk
            .iter()
            .map(|(journey_id, profile_id)| enter_once::ActiveModel {
                journey_id: Set(journey_id.clone()),
                profile_id: Set(profile_id.clone()),
                entered_at: Set(now),
            });
        enter_once::Entity::insert_many(models)
            .on_conflict_do_nothing()
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// Re-keys the rows of `m.from` to `m.into` and empties `m.from`'s profile row.
async fn move_rows<C: ConnectionTrait>(
    db: &C,
    m: &ProfileMerge,
    partitions: u32,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (from, into) = (m.from.as_str(), m.into.as_str());
    instance::Entity::update_many()
        .col_expr(instance::Column::ProfileId, Expr::value(into))
        .filter(instance::Column::ProfileId.eq(from))
        .exec(db)
        .await?;
    timeline::Entity::update_many()
        .col_expr(timeline::Column::ProfileId, Expr::value(into))
        .filter(timeline::Column::ProfileId.eq(from))
        .exec(db)
        .await?;
    let mut timers = timer::Entity::update_many()
        .col_expr(timer::Column::ProfileId, Expr::value(into))
        .filter(timer::Column::ProfileId.eq(from));
    if partitions > 0 {
        let partition = i32::try_from(partition_of(into, partitions)).ok();
        timers = timers.col_expr(timer::Column::PartitionId, Expr::value(partition));
    }
    timers.exec(db).await?;
    outbox::Entity::update_many()
        .col_expr(outbox::Column::ProfileId, Expr::value(into))
        .filter(outbox::Column::ProfileId.eq(from))
        .exec(db)
        .await?;
    enter_once::Entity::delete_many()
        .filter(enter_once::Column::ProfileId.eq(from))
        .exec(db)
        .await?;
    audience_member::Entity::delete_many()
        .filter(audience_member::Column::UserId.eq(from))
        .exec(db)
        .await?;
    profile::Entity::update_many()
        .col_expr(
            profile::Column::Traits,
            Expr::value(Value::Object(Map::new())),
        )
        .col_expr(profile::Column::UpdatedAt, Expr::value(now))
        .filter(profile::Column::UserId.eq(from))
        .exec(db)
        .await?;
    Ok(())
}

/// Removes the links of deleted profiles (ids linked to them, and their own redirects).
pub(crate) async fn delete_links<C: ConnectionTrait>(
    db: &C,
    profile_ids: &[&str],
) -> Result<(), StoreError> {
    identity::Entity::delete_many()
        .filter(
            identity::Column::ProfileId
                .is_in(profile_ids.iter().copied())
                .or(identity::Column::Identity.is_in(profile_ids.iter().copied())),
        )
        .exec(db)
        .await?;
    identity_refusal::Entity::delete_many()
        .filter(
            identity_refusal::Column::ProfileId
                .is_in(profile_ids.iter().copied())
                .or(identity_refusal::Column::RefusedProfileId.is_in(profile_ids.iter().copied())),
        )
        .exec(db)
        .await?;
    Ok(())
}
