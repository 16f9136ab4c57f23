//! A lane: one task that owns a share of the profiles (by hash), collects micro-batches of
//! work and applies each in one transaction.
//!
//! Per batch: (a) dedupe against the batch and the store's recent `messageId`s, (b) the
//! per-profile rate limit, (c) one `load_profiles` for the batch, (d) evaluation in item order
//! ([`crate::plan`]), (e) one commit, (f) answers — only after the commit. A conflict (another
//! writer moved an instance on, or took a dedupe key or an enter-once pair first) redoes the
//! batch from (a) with fresh state, up to [`MAX_RETRIES`] times, then item by item so one
//! contended item cannot hold back the others. An unavailable store fails the batch's items
//! (`unavailable`); clients retry, and dedupe makes that safe.
//!
//! Tracing: an item whose call came with a trace context ([`Job::trace`]) gets an
//! `engine.evaluate` span, child of that context, open from the batch's start until its answers
//! go out (so it covers evaluation, commit and conflict retries); the outbox rows the item queues
//! carry that span's `traceparent`, which the dispatcher continues. Items without one cost
//! nothing: no span is made. Batch and commit latencies go to [`journeys_telemetry::metrics`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::partition::partition_of;
use journeys_store::{Held, Store, StoreError};
use journeys_telemetry::{metrics, trace_context};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

use crate::ack::AckStatus;
use crate::cache::JourneyCache;
use crate::cache::Snapshot;
use crate::config::EngineConfig;
use crate::job::{Item, Job, LaneMessage, Outcome, Routed, TimerStatus};
use crate::log::handed::HandOver;
use crate::owner_cache::{ProfileCache, RecentIds};
use crate::ownership::Ownership;
use crate::plan::{Gate, Plan, PlanContext, evaluate};
use crate::profile::ProfileWork;
use crate::rate_limit::RateLimiter;
use crate::stats::{Counters, StatsDelta};

/// Retries of a whole batch after a conflict (and of each item afterwards).
pub(crate) const MAX_RETRIES: usize = 3;

/// Called after each commit that queued sends: the delivery dispatcher's wake-up.
pub type OnCommit = Arc<dyn Fn() + Send + Sync>;

/// Runs once, right before a lane's next commit: lets tests slip a concurrent writer in
/// between a batch's reads and its commit.
#[cfg(test)]
pub(crate) type BeforeCommit = Box<
    dyn FnOnce(Store) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send,
>;

/// What every lane shares.
pub(crate) struct Shared {
    pub store: Store,
    pub config: EngineConfig,
    pub cache: JourneyCache,
    pub counters: Counters,
    /// Fixed when the engine starts (`Engine::start`).
    pub on_commit: Option<OnCommit>,
    /// The partitions this node holds, when the engine is an owner.
    pub ownership: Option<Arc<Ownership>>,
    /// Whether the owner reads its partitions from the NATS log: commits then also record the
    /// log sequences they applied as `log_seq` (where the next owner resumes).
    pub logged: bool,
    /// The NATS partition log an owner reads (`None` in-process): items handed on to another
    /// profile are published into its partition.
    pub log: Option<journeys_log::PartitionLog>,
    /// The bound on the event catalog's names.
    pub catalog: crate::catalog::CatalogNames,
    /// Every lane's mailbox (set once the lanes started): items handed on from a linked id to
    /// its profile go there.
    /// Weak, so that the lanes still stop when the engine is dropped.
    pub lanes: std::sync::OnceLock<Vec<tokio::sync::mpsc::WeakUnboundedSender<LaneMessage>>>,
    /// Links this engine made or saw (a routing shortcut).
    pub links: crate::links::LinkCache,
    #[cfg(test)]
    pub before_commit: std::sync::Mutex<Option<BeforeCommit>>,
}

/// The stable lane of a profile: its partition modulo the lane count, so each lane owns whole
/// partitions and one commit covers all the partitions pinned to it.
pub(crate) fn lane_of(profile_id: &str, partitions: u32, lanes: usize) -> usize {
    lane_of_partition(partition_of(profile_id, partitions), lanes)
}

/// The lane of `partition`.
pub(crate) fn lane_of_partition(partition: u32, lanes: usize) -> usize {
    let lanes = u64::try_from(lanes.max(1)).unwrap_or(1);
    usize::try_from(u64::from(partition) % lanes).unwrap_or(0)
}

/// One item of a batch while the lane works on it.
struct Slot {
    job: usize,
    position: usize,
    profile_id: String,
    partition: u32,
    item: Item,
    /// The rate-limit decision, taken once: a retried batch reuses it.
    allowed: Option<bool>,
    outcome: Option<Outcome>,
    /// The item's `engine.evaluate` span (traced calls only); ends when the slot is dropped,
    /// once the batch committed (or failed) and its answers are being sent.
    _span: Option<tracing::Span>,
    /// Trace context for the outbox rows the item queues.
    traceparent: Option<String>,
    /// Its partition-log sequence and its reader's epoch (items read from the NATS log).
    seq: Option<u64>,
    epoch: Option<i64>,
    /// How many times it was handed on already.
    hops: u8,
}

/// How many times an item may be handed on from a linked id to its profile (a chain of links
/// longer than this is a loop).
const MAX_HOPS: u8 = 4;

pub(crate) struct Lane {
    shared: Arc<Shared>,
    rx: UnboundedReceiver<LaneMessage>,
    limiter: RateLimiter,
    /// The owner's profiles in memory (empty unless the engine is an owner).
    cache: ProfileCache,
    /// The `messageId`s this owner lane committed (empty unless the engine is an owner).
    recent: RecentIds,
    /// Whether the first ownership round was awaited.
    ready: bool,
}

impl Lane {
    pub fn new(shared: Arc<Shared>, rx: UnboundedReceiver<LaneMessage>) -> Self {
        let limiter = RateLimiter::new(shared.config.max_events_per_profile_per_sec);
        let lanes = shared.config.lanes.max(1);
        let (capacity, recent) = match (&shared.ownership, &shared.config.owner) {
            (Some(_), Some(owner)) => (
                owner.profile_cache.div_ceil(lanes),
                owner.recent_message_ids.div_ceil(lanes),
            ),
            _ => (0, 0),
        };
        Self {
            shared,
            rx,
            limiter,
            cache: ProfileCache::new(capacity),
            recent: RecentIds::new(recent),
            ready: false,
        }
    }

    /// Runs until a stop message (after finishing everything queued before it) or until every
    /// sender is gone.
    pub async fn run(mut self) {
        loop {
            let first = match self.rx.recv().await {
                Some(LaneMessage::Work(first)) => first,
                Some(LaneMessage::Forget(profile_ids)) => {
                    self.forget(&profile_ids);
                    continue;
                }
                Some(LaneMessage::Stop) | None => return,
            };
            let (jobs, stop) = self.collect(first).await;
            self.process(jobs).await;
            if stop {
                return;
            }
        }
    }

    fn forget(&mut self, profile_ids: &[String]) {
        for profile_id in profile_ids {
            self.cache.forget(profile_id);
        }
    }

    /// Gathers more jobs until the batch is full or its delay ran out. Returns whether a stop
    /// message (or the end of the channel) was reached.
    async fn collect(&mut self, first: Job) -> (Vec<Job>, bool) {
        let max = self.shared.config.max_batch_events;
        let deadline = tokio::time::Instant::now() + self.shared.config.max_batch_delay;
        let mut size = first.items.len();
        let mut jobs = vec![first];
        while size < max {
            let next = match self.rx.try_recv() {
                Ok(message) => Some(message),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(message) => message,
                        Err(_elapsed) => break,
                    }
                }
            };
            match next {
                Some(LaneMessage::Work(job)) => {
                    size += job.items.len();
                    jobs.push(job);
                }
                // Forgotten before this batch reads them: the batch then sees the change.
                Some(LaneMessage::Forget(profile_ids)) => self.forget(&profile_ids),
                Some(LaneMessage::Stop) | None => return (jobs, true),
            }
        }
        (jobs, false)
    }

    async fn process(&mut self, mut jobs: Vec<Job>) {
        let started = Instant::now();
        if !self.ready {
            if let Some(ownership) = &self.shared.ownership {
                ownership.wait_ready().await;
            }
            self.ready = true;
        }
        let mut slots = Vec::new();
        for (j, job) in jobs.iter_mut().enumerate() {
            let trace = job.trace.take();
            let epoch = job.epoch;
            for routed in std::mem::take(&mut job.items) {
                let Routed {
                    position,
                    profile_id,
                    partition,
                    item,
                    seq,
                    hops,
                } = routed;
                let (span, traceparent) = match &trace {
                    Some(parent) => item_span(&item, parent),
                    None => (None, None),
                };
                slots.push(Slot {
                    job: j,
                    position,
                    profile_id,
                    partition,
                    item,
                    allowed: None,
                    outcome: None,
                    _span: span,
                    traceparent,
                    seq,
                    epoch,
                    hops,
                });
            }
        }
        let all = self.owned(&mut slots);
        match self.with_retries(&mut slots, &all).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                tracing::warn!(
                    items = slots.len(),
                    "batch kept conflicting; applying its items one by one"
                );
                // A log item that failed holds back the later items of its partition: they
                // are read again from the log after it, in order.
                let mut stalled: HashSet<u32> = HashSet::new();
                for i in all {
                    let logged = slots[i].seq.is_some();
                    let partition = slots[i].partition;
                    if logged && stalled.contains(&partition) {
                        let err = StoreError::Unavailable(
                            "an earlier entry of the partition is not applied yet".to_owned(),
                        );
                        self.fail(&mut slots, &[i], &err);
                        continue;
                    }
                    if let Err(err) = self.with_retries(&mut slots, &[i]).await {
                        self.fail(&mut slots, &[i], &err);
                        if logged {
                            stalled.insert(partition);
                        }
                    }
                }
            }
            Err(err) => self.fail(&mut slots, &all, &err),
        }
        reply(&self.shared, jobs, slots);
        metrics::metrics()
            .engine_batch_duration
            .observe(started.elapsed());
    }

    /// One attempt and up to [`MAX_RETRIES`] more while the commit conflicts.
    async fn with_retries(
        &mut self,
        slots: &mut [Slot],
        which: &[usize],
    ) -> Result<(), StoreError> {
        let mut retry = 0;
        loop {
            match self.attempt(slots, which, retry > 0).await {
                Err(StoreError::Conflict(detail)) if retry < MAX_RETRIES => {
                    self.shared.counters.conflict();
                    tracing::debug!(%detail, retry, "commit conflicted; re-evaluating");
                    retry += 1;
                }
                Err(StoreError::Conflict(detail)) => {
                    self.shared.counters.conflict();
                    return Err(StoreError::Conflict(detail));
                }
                other => return other,
            }
        }
    }

    /// The items of `slots` whose partition this node holds; the others are answered
    /// `unavailable` (another node owns them). All of them when the engine is no owner.
    fn owned(&self, slots: &mut [Slot]) -> Vec<usize> {
        let Some(ownership) = &self.shared.ownership else {
            return (0..slots.len()).collect();
        };
        let now = Instant::now();
        let (owned, foreign): (Vec<usize>, Vec<usize>) = (0..slots.len()).partition(|&i| {
            ownership
                .held(slots[i].partition, now)
                .is_some_and(|held| slots[i].epoch.is_none_or(|e| e == held.epoch))
        });
        if foreign.iter().any(|&i| slots[i].epoch.is_some()) {
            // Log entries read under a lease that ran out (the node was paused or cut off):
            // refused here, before the store's fence would refuse them.
            self.shared.counters.fenced();
        }
        if !foreign.is_empty() {
            let err = StoreError::Fenced(format!(
                "node {} does not hold the partition",
                ownership.node_id()
            ));
            self.fail(slots, &foreign, &err);
        }
        owned
    }

    /// The fence of a commit of the items `which`: their partitions at the held epochs.
    fn fence(&self, slots: &[Slot], which: &[usize]) -> Result<Vec<Held>, StoreError> {
        let Some(ownership) = &self.shared.ownership else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        let mut partitions: Vec<(u32, Option<i64>)> = which
            .iter()
            .map(|&i| (slots[i].partition, slots[i].epoch))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let mut fence: Vec<Held> = Vec::with_capacity(partitions.len());
        for (p, epoch) in partitions {
            let held = ownership
                .held(p, now)
                .filter(|held| epoch.is_none_or(|e| e == held.epoch))
                .ok_or_else(|| StoreError::Fenced(format!("the lease of partition {p} ran out")))?;
            if fence.last() != Some(&held) {
                fence.push(held);
            }
        }
        Ok(fence)
    }

    /// Evaluates and commits the items `which` of `slots`, setting their outcomes on success.
    async fn attempt(
        &mut self,
        slots: &mut [Slot],
        which: &[usize],
        check_existing: bool,
    ) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        let now = shared.config.clock.now();
        let mut snapshot = shared.cache.get().await?;
        let fence = self.fence(slots, which)?;
        // (a) dedupe, (b) rate limit, (c) load the profiles once.
        let gates = self.gates(slots, which, now, check_existing).await?;
        let (profiles, partial) = self
            .load_profiles(slots, which, &gates, &snapshot, &fence)
            .await?;
        // An instance of a journey this node has not loaded yet (published through another
        // node since the last poll, then started there): the newer journeys first.
        let unknown = |snapshot: &Snapshot| {
            profiles
                .values()
                .flat_map(ProfileWork::journey_ids)
                .any(|id| snapshot.index.by_id(id).is_none())
        };
        if unknown(&snapshot) {
            snapshot = shared.cache.refresh().await?;
        }
        // (d) evaluate.
        let items: Vec<(&str, &Item, &Gate, Option<&str>)> = which
            .iter()
            .zip(&gates)
            .map(|(&i, gate)| {
                let slot = &slots[i];
                let trace = slot.traceparent.as_deref();
                (slot.profile_id.as_str(), &slot.item, gate, trace)
            })
            .collect();
        let none = HashSet::new();
        let ctx = PlanContext {
            snapshot: &snapshot,
            now,
            max_active: shared.config.max_active_instances_per_profile,
            instance_limits: shared.config.instance_limits,
            instance_lifetime: chrono::TimeDelta::from_std(shared.config.max_instance_lifetime)
                .unwrap_or(chrono::TimeDelta::MAX),
            trait_limits: shared.config.trait_limits,
            existing: &none,
        };
        let mut plan = plan(&shared, &ctx, &profiles, &items, check_existing).await?;
        shared
            .catalog
            .admit(&shared.store, &mut plan.changes.catalog_seen)
            .await?;
        plan.changes.partitions = shared.config.partitions;
        plan.changes.dedupe_expired_before =
            chrono::TimeDelta::from_std(shared.config.dedupe_window)
                .ok()
                .and_then(|window| now.checked_sub_signed(window));
        drop(items);
        drop(profiles);
        hand_over_through_log(&shared, slots, which, &plan).await?;
        // (e) commit, with the log sequences applied.
        let seqs = log_progress(slots, which);
        if let Err(err) = commit(&shared, &plan, &fence, &seqs).await {
            if let (StoreError::Fenced(_), Some(ownership)) = (&err, &shared.ownership) {
                shared.counters.fenced();
                tracing::warn!(partitions = ?fence, "commit refused by the epoch fence: the partitions moved to another node");
                let lost: Vec<u32> = fence.iter().map(|h| h.partition).collect();
                ownership.lost(&lost);
            }
            return Err(err);
        }
        self.note_links(&plan).await;
        for (&i, outcome) in which.iter().zip(plan.outcomes) {
            slots[i].outcome = Some(outcome);
        }
        self.recent.remember(plan.changes.dedupe.iter());
        self.settle(plan.profiles, &partial, &fence);
        Ok(())
    }

    /// Remembers the links the committed `plan` made, and forgets those of the profiles it
    /// deleted.
    async fn note_links(&mut self, plan: &Plan) {
        let links = &self.shared.links;
        for link in &plan.changes.links {
            links.insert(link.identity.clone(), link.profile_id.clone());
        }
        if plan.changes.deletions.is_empty() {
            return;
        }
        let deleted: Vec<&str> = plan
            .changes
            .deletions
            .iter()
            .map(|d| d.profile_id.as_str())
            .collect();
        links.forget(&deleted);
        self.unlink(&plan.unlinked).await;
    }

    /// Makes the owners of `ids` (ids linked to a profile just deleted) forget them: in memory
    /// they still hand their items on to the deleted profile. Best effort on the log (the
    /// links are gone from the store: an owner that reads the id again sees it alone).
    async fn unlink(&mut self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let partitions = self.shared.config.partitions;
        if let Some(log) = &self.shared.log {
            if let Err(err) = crate::log::handed::forget(log, partitions, ids).await {
                tracing::warn!(error = %err, ids = ids.len(), "owners of unlinked ids not told");
            }
            return;
        }
        let Some(lanes) = self.shared.lanes.get() else {
            return;
        };
        let mut parts: Vec<Vec<String>> = lanes.iter().map(|_| Vec::new()).collect();
        for id in ids {
            self.cache.forget(id);
            parts[lane_of(id, partitions, lanes.len())].push(id.clone());
        }
        for (lane, ids) in lanes.iter().zip(parts) {
            if let (false, Some(sender)) = (ids.is_empty(), lane.upgrade()) {
                let _ = sender.send(LaneMessage::Forget(ids));
            }
        }
    }

    /// Keeps the committed profiles in memory (owners only), except the `partial` ones.
    fn settle(
        &mut self,
        profiles: Vec<(String, ProfileWork)>,
        partial: &HashSet<String>,
        fence: &[Held],
    ) {
        if fence.is_empty() {
            return;
        }
        let partitions = self.shared.config.partitions;
        for (profile_id, work) in profiles {
            if partial.contains(&profile_id) {
                continue;
            }
            let partition = partition_of(&profile_id, partitions);
            if let Some(held) = fence.iter().find(|h| h.partition == partition) {
                self.cache.put(profile_id, held.epoch, work.settled());
            }
        }
    }

    /// The profiles of the items `which` that pass their gate: from memory when this owner
    /// holds them at the same epoch, the others in one store read. A profile not in memory
    /// whose items are all timers is read partially (traits, audiences and the timers'
    /// instances, by id: firing a timer reads the instance, not the whole profile); the ids of
    /// those come back too, so they are never kept as the profile's state.
    async fn load_profiles(
        &mut self,
        slots: &[Slot],
        which: &[usize],
        gates: &[Gate],
        snapshot: &Snapshot,
        fence: &[Held],
    ) -> Result<(HashMap<String, ProfileWork>, HashSet<String>), StoreError> {
        let mut wanted: Vec<(&str, u32)> = which
            .iter()
            .zip(gates)
            .filter(|(i, gate)| {
                **gate == Gate::Pass && !matches!(slots[**i].item, Item::Relay { .. })
            })
            .map(|(&i, _)| (slots[i].profile_id.as_str(), slots[i].partition))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        // A profile told to merge is read from the store, with the merges waiting for it.
        let merging: HashSet<&str> = which
            .iter()
            .filter(|&&i| matches!(slots[i].item, Item::Merge { .. }))
            .map(|&i| slots[i].profile_id.as_str())
            .collect();
        let mut profiles = HashMap::with_capacity(wanted.len());
        let mut missing = Vec::new();
        for (profile_id, partition) in wanted {
            if merging.contains(profile_id) {
                self.cache.forget(profile_id);
            }
            let cached = fence
                .iter()
                .find(|h| h.partition == partition)
                .and_then(|held| self.cache.take(profile_id, held.epoch));
            match cached {
                Some(work) => {
                    profiles.insert(profile_id.to_owned(), work.reopened(&snapshot.audiences));
                }
                None => missing.push(profile_id.to_owned()),
            }
        }
        if missing.is_empty() {
            return Ok((profiles, HashSet::new()));
        }
        // Per missing profile: the instances of its timers, or `None` once it has any other item.
        let mut timers_of: HashMap<&str, Option<Vec<String>>> = missing
            .iter()
            .map(|p| (p.as_str(), Some(Vec::new())))
            .collect();
        for (&i, gate) in which.iter().zip(gates) {
            if *gate != Gate::Pass {
                continue;
            }
            if let Some(entry) = timers_of.get_mut(slots[i].profile_id.as_str()) {
                match (&slots[i].item, entry.as_mut()) {
                    (Item::Timer(timer), Some(ids)) => ids.push(timer.instance_id.clone()),
                    _ => *entry = None,
                }
            }
        }
        let mut instance_ids = Vec::new();
        let mut partial = HashSet::new();
        for (profile_id, ids) in timers_of {
            if let Some(ids) = ids {
                instance_ids.extend(ids);
                partial.insert(profile_id.to_owned());
            }
        }
        let (timer_only, whole): (Vec<String>, Vec<String>) =
            missing.into_iter().partition(|p| partial.contains(p));
        let read = self
            .read_profiles(whole, timer_only, &instance_ids, &mut partial)
            .await?;
        profiles.extend(read);
        Ok((profiles, partial))
    }

    /// Reads the profiles `whole` whole, and `timer_only` partially (their traits, audiences and
    /// the instances `instance_ids`), from the store; a partial one with merges waiting is read
    /// whole after all (and taken out of `partial`).
    async fn read_profiles(
        &self,
        whole: Vec<String>,
        timer_only: Vec<String>,
        instance_ids: &[String],
        partial: &mut HashSet<String>,
    ) -> Result<HashMap<String, ProfileWork>, StoreError> {
        let batches = self.shared.store.batches();
        let mut profiles = HashMap::with_capacity(whole.len() + timer_only.len());
        let mut loaded = batches.load_profiles(&whole).await?;
        if !timer_only.is_empty() {
            let part = batches
                .load_timer_profiles(&timer_only, instance_ids)
                .await?;
            // A profile with merges waiting is read whole: the merge needs all of it.
            let redo: Vec<String> = part
                .iter()
                .filter(|(_, state)| !state.pending_merges.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            loaded.extend(part);
            if !redo.is_empty() {
                loaded.extend(batches.load_profiles(&redo).await?);
                for id in &redo {
                    partial.remove(id);
                }
            }
        }
        let merged = self.pending_merges(&loaded).await?;
        for profile_id in whole.into_iter().chain(timer_only) {
            let state = loaded.remove(&profile_id).unwrap_or_default();
            let mut work = ProfileWork::from_state(&profile_id, &state);
            work.pending = state
                .pending_merges
                .iter()
                .filter_map(|from| merged.get(from).map(|s| (from.clone(), s.clone())))
                .collect();
            profiles.insert(profile_id, work);
        }
        Ok(profiles)
    }

    /// The states of the linked profiles waiting to be merged into the `loaded` ones (read
    /// whole).
    async fn pending_merges(
        &self,
        loaded: &HashMap<String, journeys_store::ProfileState>,
    ) -> Result<HashMap<String, journeys_store::ProfileState>, StoreError> {
        let froms: Vec<String> = loaded
            .values()
            .filter(|state| state.linked_to.is_none())
            .flat_map(|state| state.pending_merges.iter().cloned())
            .collect();
        if froms.is_empty() {
            return Ok(HashMap::new());
        }
        self.shared.store.batches().load_profiles(&froms).await
    }

    /// Dedupes the events among `which` against the batch and the recent `messageId`s, and
    /// applies the per-profile rate limit (decided once per item). An owner's first attempt
    /// checks only the ids it remembers: an id taken in the store fails the commit on its
    /// unique key, and the retry (`retry`) reads the store.
    async fn gates(
        &mut self,
        slots: &mut [Slot],
        which: &[usize],
        now: DateTime<Utc>,
        retry: bool,
    ) -> Result<Vec<Gate>, StoreError> {
        let config = &self.shared.config;
        let message_ids: Vec<String> = which
            .iter()
            .filter_map(|&i| match &slots[i].item {
                Item::Event(event) => Some(event.dedupe_key().into_owned()),
                _ => None,
            })
            .collect();
        let window = TimeDelta::from_std(config.dedupe_window).unwrap_or(TimeDelta::MAX);
        let since = now
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut seen: HashSet<String> = message_ids
            .iter()
            .filter(|id| self.recent.seen_since(id, since))
            .cloned()
            .collect();
        if !message_ids.is_empty() && (retry || !self.recent.enabled()) {
            let runtime = self.shared.store.batches();
            seen.extend(runtime.seen_message_ids(&message_ids, since).await?);
        }
        let instant = Instant::now();
        let mut in_batch: HashSet<String> = HashSet::new();
        let mut gates = Vec::with_capacity(which.len());
        for &i in which {
            let slot = &mut slots[i];
            let gate = match &slot.item {
                Item::Event(event) => {
                    let id = event.dedupe_key();
                    if seen.contains(id.as_ref()) || in_batch.contains(id.as_ref()) {
                        Gate::Answer(Outcome::Ack(AckStatus::Duplicate))
                    } else if *slot
                        .allowed
                        .get_or_insert_with(|| self.limiter.allow(&slot.profile_id, instant))
                    {
                        in_batch.insert(id.into_owned());
                        Gate::Pass
                    } else {
                        Gate::Answer(Outcome::rejected(
                            crate::ack::RATE_LIMITED,
                            &format!(
                                "more than {} events per second for this profile",
                                config.max_events_per_profile_per_sec
                            ),
                        ))
                    }
                }
                Item::Timer(_)
                | Item::Terminate { .. }
                | Item::Delete { .. }
                | Item::Link(_)
                | Item::Relay { .. }
                | Item::Merge { .. } => Gate::Pass,
            };
            gates.push(gate);
        }
        Ok(gates)
    }

    /// Answers the items `which` with a failure for `err`.
    fn fail(&self, slots: &mut [Slot], which: &[usize], err: &StoreError) {
        let (code, message) = match err {
            StoreError::Unavailable(_) => {
                (crate::ack::UNAVAILABLE, "the store is unavailable; retry")
            }
            StoreError::Fenced(_) => (
                crate::ack::UNAVAILABLE,
                "the profile's partition is not held by this node; retry",
            ),
            StoreError::Conflict(_) => (
                crate::ack::UNAVAILABLE,
                "the change kept conflicting with concurrent writers; retry",
            ),
            _ => (crate::ack::INTERNAL, "the change could not be stored"),
        };
        tracing::warn!(error = %err, items = which.len(), code, "batch failed");
        let mut delta = StatsDelta::default();
        let elsewhere = matches!(err, StoreError::Fenced(_));
        for &i in which {
            let slot = &mut slots[i];
            if slot.item.is_event() {
                delta.reject(code);
            }
            slot.outcome = Some(match slot.item {
                Item::Timer(_) if elsewhere => Outcome::Timer(TimerStatus::Elsewhere),
                _ => Outcome::failed(&slot.item, code, message),
            });
        }
        self.shared.counters.apply(&delta);
    }
}

/// Evaluates the batch. On a retry (`check_existing`), an entry whose instance already exists
/// (its event resent after the dedupe window) must be skipped, or the batch would conflict
/// forever: the store is asked which of the new instances exist, and the batch re-evaluated
/// knowing them.
async fn plan(
    shared: &Shared,
    ctx: &PlanContext<'_>,
    profiles: &HashMap<String, ProfileWork>,
    items: &[(&str, &Item, &Gate, Option<&str>)],
    check_existing: bool,
) -> Result<Plan, StoreError> {
    let plan = evaluate(ctx, profiles, items).map_err(|e| internal(&e))?;
    if !check_existing || plan.new_instance_ids.is_empty() {
        return Ok(plan);
    }
    let found = shared
        .store
        .batches()
        .instances_by_ids(&plan.new_instance_ids)
        .await?;
    if found.is_empty() {
        return Ok(plan);
    }
    let existing: HashSet<String> = found.into_iter().map(|i| i.id).collect();
    let ctx = PlanContext {
        existing: &existing,
        ..*ctx
    };
    evaluate(&ctx, profiles, items).map_err(|e| internal(&e))
}

/// Commits the plan (if it changes anything), adds its counters and wakes the dispatcher when
/// it queued sends.
async fn commit(
    shared: &Shared,
    plan: &Plan,
    fence: &[Held],
    seqs: &[(u32, i64)],
) -> Result<(), StoreError> {
    #[cfg(test)]
    {
        let hook = shared
            .before_commit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(hook) = hook {
            hook(shared.store.clone()).await;
        }
    }
    if !plan.changes.is_empty() || !seqs.is_empty() {
        let committing = Instant::now();
        let batches = shared.store.batches();
        let committed = if shared.logged {
            batches.commit_logged(&plan.changes, fence, seqs).await
        } else {
            batches.commit_fenced(&plan.changes, fence).await
        };
        metrics::metrics()
            .engine_commit_duration
            .observe(committing.elapsed());
        committed?;
        shared.counters.commit();
    }
    shared.counters.apply(&plan.delta);
    if !plan.changes.outbox_new.is_empty()
        && let Some(wake) = &shared.on_commit
    {
        wake();
    }
    Ok(())
}

/// On the NATS log, publishes what the batch hands on to other profiles into their partitions,
/// before the batch commits (see [`crate::log::handed`]).
async fn hand_over_through_log(
    shared: &Shared,
    slots: &[Slot],
    which: &[usize],
    plan: &Plan,
) -> Result<(), StoreError> {
    let Some(log) = &shared.log else {
        return Ok(());
    };
    let hand_overs: Vec<HandOver<'_>> = which
        .iter()
        .zip(&plan.outcomes)
        .filter_map(|(&i, outcome)| match outcome {
            Outcome::Forward { to, merge } => Some(HandOver {
                partition: slots[i].partition,
                seq: slots[i].seq.unwrap_or_default(),
                item: &slots[i].item,
                from: &slots[i].profile_id,
                to,
                merge: *merge,
            }),
            _ => None,
        })
        .collect();
    crate::log::handed::publish(log, shared.config.partitions, &hand_overs).await
}

/// The highest log sequence among the items `which`, per partition (items read from the log).
fn log_progress(slots: &[Slot], which: &[usize]) -> Vec<(u32, i64)> {
    let mut seqs: Vec<(u32, i64)> = Vec::new();
    for &i in which {
        let Some(seq) = slots[i].seq.and_then(|s| i64::try_from(s).ok()) else {
            continue;
        };
        let partition = slots[i].partition;
        match seqs.iter_mut().find(|(p, _)| *p == partition) {
            Some((_, top)) => *top = (*top).max(seq),
            None => seqs.push((partition, seq)),
        }
    }
    seqs
}

/// The `engine.evaluate` span of an item whose call was traced with `parent`, and the context
/// its sends carry: the span's own, or `parent` itself when the span is not recorded (its level
/// filtered out), so the delivery still joins the caller's trace.
fn item_span(item: &Item, parent: &str) -> (Option<tracing::Span>, Option<String>) {
    let span = match item {
        Item::Event(event) => tracing::info_span!(
            parent: None,
            "engine.evaluate",
            item = "event",
            message_id = %event.message_id,
            event = %event.event,
        ),
        Item::Timer(timer) => tracing::info_span!(
            parent: None,
            "engine.evaluate",
            item = "timer",
            timer_id = %timer.id,
            instance_id = %timer.instance_id,
        ),
        Item::Terminate { instance_id, .. } => tracing::info_span!(
            parent: None,
            "engine.evaluate",
            item = "terminate",
            instance_id = %instance_id,
        ),
        Item::Delete { suppress } => tracing::info_span!(
            parent: None,
            "engine.evaluate",
            item = "delete_profile",
            suppress,
        ),
        Item::Link(event) | Item::Relay { event, .. } => tracing::info_span!(
            parent: None,
            "engine.evaluate",
            item = "link",
            message_id = %event.message_id,
            event = %event.event,
        ),
        Item::Merge { from } => {
            tracing::info_span!(parent: None, "engine.evaluate", item = "merge", from = %from)
        }
    };
    trace_context::set_parent_traceparent(&span, parent);
    let own = trace_context::span_traceparent(&span).unwrap_or_else(|| parent.to_owned());
    (Some(span), Some(own))
}

fn internal(err: &serde_json::Error) -> StoreError {
    StoreError::Internal(format!("instance does not serialize: {err}"))
}

/// Sends each job its outcomes (dropping the job releases its watermark hold). Items that
/// belong to another profile (a linked id's) are handed on to that profile's lane, in order, and
/// their job is answered once those answered too.
fn reply(shared: &Shared, jobs: Vec<Job>, slots: Vec<Slot>) {
    let mut answers: Vec<Vec<(usize, Outcome)>> = jobs.iter().map(|_| Vec::new()).collect();
    let mut handed: Vec<Vec<Routed>> = jobs.iter().map(|_| Vec::new()).collect();
    let mut traces: Vec<Option<String>> = jobs.iter().map(|_| None).collect();
    for slot in slots {
        let (Some(outcome), Some(list)) = (slot.outcome, answers.get_mut(slot.job)) else {
            continue;
        };
        let Outcome::Forward { to, merge } = outcome else {
            list.push((slot.position, outcome));
            continue;
        };
        shared.links.linking();
        if shared.log.is_some() {
            // Published into `to`'s partition before the commit: applied there, in its order.
            list.push((slot.position, Outcome::Merged));
            continue;
        }
        if slot.hops >= MAX_HOPS {
            tracing::error!(profile_id = %slot.profile_id, to = %to, "item handed on too often: the ids are linked in a loop");
            let failed = Outcome::failed(
                &slot.item,
                crate::ack::INTERNAL,
                "the ids are linked in a loop",
            );
            list.push((slot.position, failed));
            continue;
        }
        let partition = partition_of(&to, shared.config.partitions);
        let on = &mut handed[slot.job];
        if merge {
            on.push(Routed {
                position: usize::MAX,
                profile_id: to.clone(),
                partition,
                item: Item::Merge {
                    from: slot.profile_id.clone(),
                },
                seq: None,
                hops: slot.hops + 1,
            });
        }
        on.push(Routed {
            position: slot.position,
            item: slot.item.handed_on(&to),
            profile_id: to,
            partition,
            seq: None,
            hops: slot.hops + 1,
        });
        if traces[slot.job].is_none() {
            traces[slot.job] = slot.traceparent;
        }
    }
    let jobs = jobs.into_iter().zip(answers).zip(handed).zip(traces);
    for (((job, mut list), items), trace) in jobs {
        if items.is_empty() {
            // The caller may have gone away; its items are committed regardless.
            let _ = job.reply.send(list);
            continue;
        }
        let receivers = hand_on(shared, items, trace.as_deref());
        tokio::spawn(async move {
            for rx in receivers {
                if let Ok(more) = rx.await {
                    list.extend(more.into_iter().filter(|(p, _)| *p != usize::MAX));
                }
            }
            let _ = job.reply.send(list);
        });
    }
}

/// Sends `items` to their profiles' lanes (one job per lane, in order); a lane that is gone
/// leaves its items unanswered.
fn hand_on(
    shared: &Shared,
    items: Vec<Routed>,
    trace: Option<&str>,
) -> Vec<tokio::sync::oneshot::Receiver<Vec<(usize, Outcome)>>> {
    let Some(lanes) = shared.lanes.get() else {
        return Vec::new();
    };
    let mut parts: Vec<Vec<Routed>> = lanes.iter().map(|_| Vec::new()).collect();
    for item in items {
        let lane = lane_of_partition(item.partition, parts.len());
        parts[lane].push(item);
    }
    let mut receivers = Vec::new();
    for (lane, items) in parts.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            items,
            reply,
            trace: trace.map(str::to_owned),
            in_flight: None,
            epoch: None,
        };
        if let Some(sender) = lanes[lane].upgrade()
            && sender.send(LaneMessage::Work(job)).is_ok()
        {
            receivers.push(rx);
        }
    }
    receivers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_stable_and_spread() {
        assert_eq!(lane_of("user-1", 64, 4), lane_of("user-1", 64, 4));
        let mut used = [false; 4];
        for i in 0..64 {
            used[lane_of(&format!("user-{i}"), 64, 4)] = true;
        }
        assert!(used.iter().all(|u| *u));
        assert_eq!(lane_of("anything", 64, 1), 0);
        assert_eq!(lane_of("anything", 64, 0), 0);
        // A lane holds whole partitions.
        for i in 0..64 {
            let id = format!("user-{i}");
            assert_eq!(lane_of(&id, 64, 4), (partition_of(&id, 64) % 4) as usize);
        }
    }
}
