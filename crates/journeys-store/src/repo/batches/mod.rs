//! The evaluator's batches: one all-or-nothing commit per micro-batch (or timer firing), the
//! batched reads the engine needs before evaluating, statistics, and housekeeping.

mod commit;
mod stats;

pub(crate) use stats::upsert as upsert_counters;
pub use stats::{COUNTER_SHARDS, CounterKey, CounterKind, StatsRange, hour_start};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};
use serde_json::{Map, Value};

use crate::entity::{
    audience, audience_member, dedupe, enter_once, instance, profile, timeline, timer,
};
use crate::error::StoreError;
use crate::repo::instances::{InstanceRecord, InstanceState, TimelineEntry};
use crate::repo::outbox::OutboxRecord;
use crate::repo::partitions::Held;
use crate::repo::profiles::into_object;
use crate::repo::timers::TimerRecord;
use crate::repo::{INSERT_CHUNK, PurgePace, finish, micros, rollback};

/// Everything one micro-batch (or one timer firing) changes, committed by [`Batches::commit`]
/// in one transaction with multi-row statements.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// `(messageId, seen at)` to remember; a key already stored is a conflict, unless it was
    /// seen before `dedupe_expired_before`.
    pub dedupe: Vec<(String, DateTime<Utc>)>,
    /// The start of the dedupe window: a key of `dedupe` stored but seen before it is past the
    /// window (not yet purged) and is replaced, not a conflict. `None`: every stored key
    /// conflicts.
    pub dedupe_expired_before: Option<DateTime<Utc>>,
    /// `(profile id, traits)` shallow-merged into the profile (created when missing), in order.
    pub traits: Vec<(String, Map<String, Value>)>,
    /// `(event name, received at)` for the event catalog.
    pub catalog_seen: Vec<(String, DateTime<Utc>)>,
    /// `(audience key, user id)` memberships to add; existing ones, unknown and archived
    /// audiences are skipped.
    pub audience_adds: Vec<(String, String)>,
    /// `(audience key, user id)` memberships to remove (applied after the adds); missing ones,
    /// unknown and archived audiences are skipped.
    pub audience_removes: Vec<(String, String)>,
    /// `(journey id, profile id)` entries of enter-once journeys; an existing pair is a conflict.
    pub enter_once: Vec<(String, String)>,
    /// New instances; a taken id or `active_key` is a conflict.
    pub instances_new: Vec<InstanceRecord>,
    /// `(instance as it should be stored, version it is expected to have now)`; the caller sets
    /// `record.version` to `expected + 1`. A stored version other than `expected` is a conflict.
    pub instances_updated: Vec<(InstanceRecord, i64)>,
    /// Timeline rows to append.
    pub timeline: Vec<TimelineEntry>,
    /// Timers to create.
    pub timers_new: Vec<TimerRecord>,
    /// Ids of timers to delete (fired or cancelled); missing ones are ignored.
    pub timers_deleted: Vec<String>,
    /// Sends to queue.
    pub outbox_new: Vec<OutboxRecord>,
    /// The deployment's profile partitions: new timers are stamped with their profile's
    /// partition so owners claim only their own. `0` leaves them unstamped.
    pub partitions: u32,
    /// Increments of the journey counters, summed per key: one upsert row per key.
    pub counters: BTreeMap<CounterKey, i64>,
    /// Profiles deleted (`DeleteProfile`): applied after every other change of the batch, so
    /// rows the batch wrote for them before their deletion go too.
    pub deletions: Vec<ProfileDeletion>,
    /// Ids linked to a profile (identity resolution); an id linked already is a conflict.
    pub links: Vec<crate::repo::IdentityLink>,
    /// Links refused because the id belongs to another profile (upserted, counted).
    pub refusals: Vec<crate::repo::IdentityRefusal>,
    /// Linked profiles' states moved into their new profile; a merge no longer pending is a
    /// conflict.
    pub merges: Vec<crate::repo::ProfileMerge>,
    /// `(journey id, profile id)` enter-once records carried over by a merge: inserted unless
    /// present.
    pub enter_once_merged: Vec<(String, String)>,
    /// Links whose merge is still pending moved on to another profile (the profile they were
    /// linked to was itself linked since): `identity` now belongs to `profile_id`.
    pub relinks: Vec<crate::repo::IdentityLink>,
}

/// A profile deletion: its traits, memberships, enter-once records, instances with their
/// timelines and timers, and sends (delivered or not) are removed; its row stays as the
/// tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileDeletion {
    pub profile_id: String,
    pub deleted_at: DateTime<Utc>,
    /// Whether every later event of the id is dropped too, not only those sent before.
    pub suppressed: bool,
}

/// A deleted profile's tombstone, as loaded with its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tombstone {
    pub deleted_at: DateTime<Utc>,
    pub suppressed: bool,
}

impl Tombstone {
    /// Whether an event with `timestamp` is dropped: every event of a suppressed id, else
    /// those sent no later than the deletion (in flight when it ran).
    #[must_use]
    pub fn drops(&self, timestamp: DateTime<Utc>) -> bool {
        self.suppressed || timestamp <= self.deleted_at
    }
}

impl Changes {
    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dedupe.is_empty()
            && self.traits.is_empty()
            && self.catalog_seen.is_empty()
            && self.audience_adds.is_empty()
            && self.audience_removes.is_empty()
            && self.enter_once.is_empty()
            && self.instances_new.is_empty()
            && self.instances_updated.is_empty()
            && self.timeline.is_empty()
            && self.timers_new.is_empty()
            && self.timers_deleted.is_empty()
            && self.outbox_new.is_empty()
            && self.counters.is_empty()
            && self.deletions.is_empty()
            && self.links.is_empty()
            && self.refusals.is_empty()
            && self.merges.is_empty()
            && self.enter_once_merged.is_empty()
            && self.relinks.is_empty()
    }
}

/// What the data plane needs to know about one profile before evaluating its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileState {
    /// Stored traits (empty when the profile has none yet).
    pub traits: Map<String, Value>,
    /// Keys of the active audiences the profile belongs to, sorted.
    pub audiences: Vec<String>,
    /// The profile's active instances, across journeys, in id order.
    pub active_instances: Vec<InstanceRecord>,
    /// Ids of the enter-once journeys the profile has entered, sorted.
    pub entered_once: Vec<String>,
    /// Set when the profile was deleted.
    pub tombstone: Option<Tombstone>,
    /// The profile this id is linked to (identity resolution): everything reaching the id
    /// belongs there.
    pub linked_to: Option<String>,
    /// Ids linked to this profile.
    pub identities: Vec<String>,
    /// Ids linked to this profile whose former state is not merged into it yet.
    pub pending_merges: Vec<String>,
    /// When the profile's traits were last written (`None`: no profile row).
    pub updated_at: Option<DateTime<Utc>>,
}

impl ProfileState {
    /// Puts the lists in their documented (sorted) order.
    fn sort(&mut self) {
        self.audiences.sort();
        self.entered_once.sort();
        self.identities.sort();
        self.pending_merges.sort();
    }
}

/// Per-step counts of one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepCounts {
    pub step_key: String,
    /// Instances that reached the step (the `step` counter; entering the journey is counted
    /// apart, in [`JourneyStats::entries`]).
    pub entered: i64,
    /// Active instances currently at the step (always as of now, whatever the range; 0 in
    /// hourly buckets).
    pub waiting: i64,
    /// Instances that left the step onward, or completed the journey at it.
    pub completed: i64,
    /// Instances that exited while at the step.
    pub exited: i64,
    /// Instances that failed while at the step.
    pub failed: i64,
}

/// Per-step delivery counts of one journey.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendCounts {
    pub step_key: String,
    pub sent: i64,
    /// Failed delivery attempts, summed over the sends (a replayed dead letter starts again).
    pub failed: i64,
    pub dead_lettered: i64,
}

/// How often one branch of a step was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchCounts {
    pub step_key: String,
    /// Empty for a data split's "everyone else" and a hold-until's timeout.
    pub branch_name: String,
    pub taken: i64,
    /// The data split's "everyone else" branch.
    pub everyone_else: bool,
    /// The hold-until's timeout branch (its maximum duration passed).
    pub timed_out: bool,
}

/// The statistics of one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HourStats {
    /// The start of the hour (the Unix epoch for counts older than hourly counting).
    pub start: DateTime<Utc>,
    pub stats: JourneyStats,
}

/// The delivery counts of one destination in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryHour {
    /// The start of the hour (the Unix epoch for counts older than hourly counting).
    pub start: DateTime<Utc>,
    pub sent: i64,
    /// Failed delivery attempts.
    pub failed: i64,
    pub dead_lettered: i64,
}

/// Statistics of one journey, each list sorted by step key (then branch name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JourneyStats {
    pub steps: Vec<StepCounts>,
    pub sends: Vec<SendCounts>,
    pub branches: Vec<BranchCounts>,
    /// Entries into the journey.
    pub entries: i64,
    /// Entries not made, by skip reason.
    pub entries_skipped: BTreeMap<String, i64>,
    /// Exits by reason: `exit_rule:<index>`, `journey_archived`, `operator`,
    /// `lifetime_reached`.
    pub exits: BTreeMap<String, i64>,
    /// One bucket per hour with counts, earliest first, when asked for.
    pub hours: Vec<HourStats>,
}

/// The evaluator's batch repository; obtained from [`crate::Store::batches`].
#[derive(Debug, Clone, Copy)]
pub struct Batches<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Batches<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Writes `changes` in one transaction: all of them or, on any error, none. Rows are
    /// written with multi-row statements of at most 500 rows (100 for instance updates).
    /// Profile, enter-once and audience timestamps are the commit time.
    ///
    /// Never call back into the [`crate::Store`] from inside: on SQLite the transaction holds
    /// the only connection.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a taken dedupe key, enter-once pair, instance id, active key,
    /// timer or outbox id, or an instance version mismatch (the message names what collided);
    /// [`StoreError::Unavailable`] on a deadlock or lock timeout (retry the batch); other
    /// database errors.
    pub async fn commit(&self, changes: &Changes) -> Result<(), StoreError> {
        self.commit_fenced(changes, &[]).await
    }

    /// [`Batches::commit`] by a partition owner: the transaction's first statement is the
    /// epoch fence over `held` (the partitions of the batch's profiles, at the epochs the owner
    /// acquired them with). If another node has taken any of them since, nothing is written.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when a partition moved to a newer epoch; otherwise as
    /// [`Batches::commit`].
    pub async fn commit_fenced(&self, changes: &Changes, held: &[Held]) -> Result<(), StoreError> {
        self.commit_with_progress(changes, held, None).await
    }

    /// [`Batches::commit_fenced`] by an owner reading the partition log: each partition listed
    /// in `seqs` records that stream sequence as its `log_seq` (where the owner resumes), in the
    /// same transaction as the effects; the other fenced partitions keep theirs. With `changes`
    /// empty it records progress alone (an entry with no effect).
    ///
    /// # Errors
    /// As [`Batches::commit_fenced`].
    pub async fn commit_logged(
        &self,
        changes: &Changes,
        held: &[Held],
        seqs: &[(u32, i64)],
    ) -> Result<(), StoreError> {
        self.commit_with_progress(changes, held, Some(seqs)).await
    }

    async fn commit_with_progress(
        &self,
        changes: &Changes,
        held: &[Held],
        seqs: Option<&[(u32, i64)]>,
    ) -> Result<(), StoreError> {
        if changes.is_empty() && held.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await?;
        if let Err(err) = crate::repo::fence(&txn, held, seqs).await {
            return finish(txn, Err(err)).await;
        }
        let shard = stats::shard_of(held);
        match commit::apply(&txn, changes, Utc::now(), shard).await {
            Ok(()) => finish(txn, Ok(())).await,
            Err(commit::Failure::Store(err)) => finish(txn, Err(err)).await,
            Err(commit::Failure::Versions(candidates)) => {
                rollback(txn).await;
                Err(commit::version_conflict(self.db, &candidates).await)
            }
        }
    }

    /// The ids among `message_ids` seen at or after `since`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn seen_message_ids(
        &self,
        message_ids: &[String],
        since: DateTime<Utc>,
    ) -> Result<HashSet<String>, StoreError> {
        let since = micros(since);
        let mut seen = HashSet::new();
        for chunk in message_ids.chunks(INSERT_CHUNK) {
            seen.extend(
                dedupe::Entity::find()
                    .select_only()
                    .column(dedupe::Column::MessageId)
                    .filter(dedupe::Column::MessageId.is_in(chunk.iter().map(String::as_str)))
                    .filter(dedupe::Column::SeenAt.gte(since))
                    .into_tuple::<String>()
                    .all(self.db)
                    .await?,
            );
        }
        Ok(seen)
    }

    /// The state of each profile in `profile_ids` (an entry for every id, empty for unknown
    /// profiles), read with four `IN (...)` queries per 500 profiles plus one for audiences.
    ///
    /// # Errors
    /// Database errors.
    pub async fn load_profiles(
        &self,
        profile_ids: &[String],
    ) -> Result<HashMap<String, ProfileState>, StoreError> {
        self.load_profiles_scoped(profile_ids, None).await
    }

    /// What firing timers needs of each profile in `profile_ids`: its traits and audiences and,
    /// of its active instances, only those in `instance_ids` (read by primary key); no
    /// enter-once records. A partial state: never to be kept as the profile's whole state.
    ///
    /// # Errors
    /// Database errors.
    pub async fn load_timer_profiles(
        &self,
        profile_ids: &[String],
        instance_ids: &[String],
    ) -> Result<HashMap<String, ProfileState>, StoreError> {
        self.load_profiles_scoped(profile_ids, Some(instance_ids))
            .await
    }

    /// [`Batches::load_profiles`], or with `only_instances` [`Batches::load_timer_profiles`].
    async fn load_profiles_scoped(
        &self,
        profile_ids: &[String],
        only_instances: Option<&[String]>,
    ) -> Result<HashMap<String, ProfileState>, StoreError> {
        let ids: BTreeSet<&str> = profile_ids.iter().map(String::as_str).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        let mut states: HashMap<String, ProfileState> = ids
            .iter()
            .map(|id| ((*id).to_owned(), ProfileState::default()))
            .collect();
        let mut memberships: Vec<(String, String)> = Vec::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let listed = crate::repo::padded(chunk);
            let profiles = profile::Entity::find()
                .filter(profile::Column::UserId.is_in(listed.iter().copied()))
                .all(self.db)
                .await?;
            for p in profiles {
                if let Some(state) = states.get_mut(&p.user_id) {
                    state.traits = into_object(p.traits);
                    state.updated_at = Some(p.updated_at);
                    state.tombstone = p.deleted_at.map(|deleted_at| Tombstone {
                        deleted_at,
                        suppressed: p.suppressed,
                    });
                }
            }
            self.load_links(chunk, &mut states).await?;
            memberships.extend(
                audience_member::Entity::find()
                    .select_only()
                    .column(audience_member::Column::AudienceKey)
                    .column(audience_member::Column::UserId)
                    .filter(audience_member::Column::UserId.is_in(listed.iter().copied()))
                    .into_tuple::<(String, String)>()
                    .all(self.db)
                    .await?,
            );
            if only_instances.is_some() {
                // Instances by id after the loop; firing timers reads no enter-once records.
                continue;
            }
            let active = instance::Entity::find()
                .filter(instance::Column::ProfileId.is_in(chunk.iter().copied()))
                .filter(instance::Column::State.eq(InstanceState::Active.as_str()))
                .order_by_asc(instance::Column::Id)
                .all(self.db)
                .await?;
            for m in active {
                let record = InstanceRecord::try_from(m)?;
                if let Some(state) = states.get_mut(&record.profile_id) {
                    state.active_instances.push(record);
                }
            }
            let entered = enter_once::Entity::find()
                .select_only()
                .column(enter_once::Column::JourneyId)
                .column(enter_once::Column::ProfileId)
                .filter(enter_once::Column::ProfileId.is_in(chunk.iter().copied()))
                .into_tuple::<(String, String)>()
                .all(self.db)
                .await?;
            for (journey_id, profile_id) in entered {
                if let Some(state) = states.get_mut(&profile_id) {
                    state.entered_once.push(journey_id);
                }
            }
        }
        if let Some(ids) = only_instances {
            self.load_active_instances(ids, &mut states).await?;
        }
        let active_keys = self.active_audience_keys(&memberships).await?;
        for (key, user) in memberships {
            if active_keys.contains(&key)
                && let Some(state) = states.get_mut(&user)
            {
                state.audiences.push(key);
            }
        }
        states.values_mut().for_each(ProfileState::sort);
        Ok(states)
    }

    /// Adds the links of the profiles `ids` to their `states`: where each id is linked to, the
    /// ids linked to it, and which of those wait to be merged.
    async fn load_links(
        &self,
        ids: &[&str],
        states: &mut HashMap<String, ProfileState>,
    ) -> Result<(), StoreError> {
        for link in crate::repo::identities::load_links(self.db, ids).await? {
            if let Some(state) = states.get_mut(&link.identity) {
                state.linked_to = Some(link.profile_id.clone());
            }
            if let Some(state) = states.get_mut(&link.profile_id) {
                if link.merged_at.is_none() {
                    state.pending_merges.push(link.identity.clone());
                }
                state.identities.push(link.identity);
            }
        }
        Ok(())
    }

    /// Adds the active ones among the instances `ids` to their profiles in `states`, in id
    /// order.
    async fn load_active_instances(
        &self,
        ids: &[String],
        states: &mut HashMap<String, ProfileState>,
    ) -> Result<(), StoreError> {
        let ids: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        let ids: Vec<&str> = ids.into_iter().collect();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let active = instance::Entity::find()
                .filter(instance::Column::Id.is_in(crate::repo::padded(chunk)))
                .filter(instance::Column::State.eq(InstanceState::Active.as_str()))
                .all(self.db)
                .await?;
            for m in active {
                let record = InstanceRecord::try_from(m)?;
                if let Some(state) = states.get_mut(&record.profile_id) {
                    state.active_instances.push(record);
                }
            }
        }
        for state in states.values_mut() {
            state.active_instances.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Ok(())
    }

    /// The keys among `memberships`' audiences that are active (archived ones do not count).
    async fn active_audience_keys(
        &self,
        memberships: &[(String, String)],
    ) -> Result<HashSet<String>, StoreError> {
        let keys: BTreeSet<&str> = memberships.iter().map(|(k, _)| k.as_str()).collect();
        let keys: Vec<&str> = keys.into_iter().collect();
        let mut active_keys: HashSet<String> = HashSet::new();
        for chunk in keys.chunks(INSERT_CHUNK) {
            active_keys.extend(
                audience::Entity::find()
                    .select_only()
                    .column(audience::Column::Key)
                    .filter(audience::Column::Key.is_in(chunk.iter().copied()))
                    .filter(audience::Column::Active.eq(true))
                    .into_tuple::<String>()
                    .all(self.db)
                    .await?,
            );
        }
        Ok(active_keys)
    }

    /// The instances among `ids` that exist, in id order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn instances_by_ids(
        &self,
        ids: &[String],
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let rows = instance::Entity::find()
                .filter(instance::Column::Id.is_in(chunk.iter().map(String::as_str)))
                .all(self.db)
                .await?;
            for m in rows {
                out.push(InstanceRecord::try_from(m)?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// Up to `limit` active instances of a journey, in id order (archive-with-exit works
    /// through them batch by batch, each batch ending its instances).
    ///
    /// # Errors
    /// Database errors.
    pub async fn active_instances_of_journey(
        &self,
        journey_id: &str,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        instance::Entity::find()
            .filter(instance::Column::JourneyId.eq(journey_id))
            .filter(instance::Column::State.eq(InstanceState::Active.as_str()))
            .order_by_asc(instance::Column::Id)
            .limit(u64::from(limit))
            .all(self.db)
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect()
    }

    /// Step, send and branch counts of a journey over all time (see [`JourneyStats`]), from
    /// its counters and its active instances. Purging finished instances changes nothing.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journey_stats(&self, journey_id: &str) -> Result<JourneyStats, StoreError> {
        stats::journey_stats(self.db, journey_id, &StatsRange::default(), false).await
    }

    /// [`Batches::journey_stats`] over the hours of `range`, with a bucket per hour in
    /// [`JourneyStats::hours`] when `hourly`. Waiting counts are as of now.
    ///
    /// # Errors
    /// Database errors.
    pub async fn journey_stats_in(
        &self,
        journey_id: &str,
        range: &StatsRange,
        hourly: bool,
    ) -> Result<JourneyStats, StoreError> {
        stats::journey_stats(self.db, journey_id, range, hourly).await
    }

    /// Delivery counts of a destination over the hours of `range`, per hour, earliest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn destination_stats(
        &self,
        destination_id: &str,
        range: &StatsRange,
    ) -> Result<Vec<DeliveryHour>, StoreError> {
        stats::destination_stats(self.db, destination_id, range).await
    }

    /// Merges the counter shards of hours before `before` into one row per key and hour (see
    /// [`COUNTER_SHARDS`]), in small transactions at `pace`; returns how many shard rows went.
    /// Counts do not change.
    ///
    /// # Errors
    /// Database errors; chunks folded before the error stay folded.
    pub async fn fold_counter_shards(
        &self,
        before: DateTime<Utc>,
        pace: PurgePace,
    ) -> Result<u64, StoreError> {
        stats::fold_shards(self.db, hour_start(before), pace).await
    }

    /// Deletes dedupe keys seen before `before`, in small transactions at `pace`; returns how
    /// many.
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_dedupe(
        &self,
        before: DateTime<Utc>,
        pace: PurgePace,
    ) -> Result<u64, StoreError> {
        let before = micros(before);
        pace.drain(
            self.db,
            |limit| {
                dedupe::Entity::find()
                    .select_only()
                    .column(dedupe::Column::MessageId)
                    .filter(dedupe::Column::SeenAt.lt(before))
                    .limit(limit)
                    .into_tuple::<String>()
                    .all(self.db)
            },
            |txn, ids| {
                Box::pin(async move {
                    let deleted = dedupe::Entity::delete_many()
                        .filter(dedupe::Column::MessageId.is_in(ids))
                        .filter(dedupe::Column::SeenAt.lt(before))
                        .exec(txn)
                        .await?;
                    Ok(deleted.rows_affected)
                })
            },
        )
        .await
    }

    /// Deletes finished (completed, exited or failed) instances that ended before
    /// `ended_before`, with their timeline and any leftover timers, one small transaction per
    /// chunk, at `pace`; returns how many instances. Outbox rows stay (dead letters remain
    /// visible).
    ///
    /// # Errors
    /// Database errors.
    pub async fn purge_finished_instances(
        &self,
        ended_before: DateTime<Utc>,
        pace: PurgePace,
    ) -> Result<u64, StoreError> {
        let ended_before = micros(ended_before);
        let finished = [
            InstanceState::Completed.as_str(),
            InstanceState::Exited.as_str(),
            InstanceState::Failed.as_str(),
        ];
        let mut purged = pace
            .drain(
                self.db,
                |limit| {
                    instance::Entity::find()
                        .select_only()
                        .column(instance::Column::Id)
                        .filter(instance::Column::State.is_in(finished))
                        .filter(instance::Column::EndedAt.lt(ended_before))
                        .limit(limit)
                        .into_tuple::<String>()
                        .all(self.db)
                },
                |txn, ids| {
                    Box::pin(async move {
                        let ids = || ids.iter().map(String::as_str);
                        timeline::Entity::delete_many()
                            .filter(timeline::Column::InstanceId.is_in(ids()))
                            .exec(txn)
                            .await?;
                        timer::Entity::delete_many()
                            .filter(timer::Column::InstanceId.is_in(ids()))
                            .exec(txn)
                            .await?;
                        let deleted = instance::Entity::delete_many()
                            .filter(instance::Column::Id.is_in(ids()))
                            .filter(instance::Column::State.is_in(finished))
                            .exec(txn)
                            .await?;
                        Ok(deleted.rows_affected)
                    })
                },
            )
            .await?;
        // The never-stored instances' timelines last: that purge walks the timeline by time,
        // and the rows of the stored instances purged above are then out of its way.
        purged += crate::repo::instances::purge_unstored(self.db, ended_before, pace).await?;
        Ok(purged)
    }

    /// Up to `limit` active instances whose `expires_at` is at or before `now`, earliest first
    /// (the age limit of SPEC §7; the caller ends them).
    ///
    /// # Errors
    /// Database errors.
    pub async fn expired_active_instances(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, StoreError> {
        instance::Entity::find()
            .filter(instance::Column::State.eq(InstanceState::Active.as_str()))
            .filter(instance::Column::ExpiresAt.lte(micros(now)))
            .order_by_asc(instance::Column::ExpiresAt)
            .order_by_asc(instance::Column::Id)
            .limit(u64::from(limit))
            .all(self.db)
            .await?
            .into_iter()
            .map(InstanceRecord::try_from)
            .collect()
    }
}
