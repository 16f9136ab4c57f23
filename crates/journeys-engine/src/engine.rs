//! [`Engine`]: the public handle of the evaluator runtime. It starts the lanes and the
//! journey-cache poller, splits each call by lane, and puts the answers back in input order.
//!
//! Work is handed to the lanes synchronously when `submit` is called (before its future is
//! first polled), so the order of `submit` calls is the order in which a profile's events are
//! applied, whatever order the returned futures are awaited in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use journeys_core::machine::ExitReason;
use journeys_core::model::Event;
use journeys_core::partition::partition_of;
use journeys_log::PartitionLog;
use journeys_store::{InstanceState, Store, TimerRecord};
use journeys_telemetry::trace_context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::ack::{Ack, EventSink};
use crate::cache::JourneyCache;
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::job::{
    Item, Job, LaneMessage, Outcome, Routed, TerminateOutcome, TimerOutcome, TimerStatus,
    acks_in_order,
};
use crate::lane::{Lane, OnCommit, Shared, lane_of, lane_of_partition};
use crate::log::Pump;
use crate::ownership::Ownership;
use crate::stats::{EngineStats, StatsDelta};
use crate::watermark::Watermark;

/// Active instances terminated per round when a journey is archived in exit mode.
const TERMINATE_PAGE: u32 = 500;

/// The evaluator runtime. Cheap to clone; clones share the lanes.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    lanes: Vec<mpsc::UnboundedSender<LaneMessage>>,
    watermark: Arc<Watermark>,
    stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Dropping or firing it stops the cache poller.
    stop_poller: Mutex<Option<oneshot::Sender<()>>>,
    /// The ownership task (owners only) and its stop signal; stopped after the lanes drained,
    /// so it releases the partitions last.
    ownership_task: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
    /// The partition readers of an owner reading the NATS log (`start_logged`); stopped first,
    /// so the lanes drain what they handed over.
    pump: Mutex<Option<Pump>>,
    /// Where operator exits go when the nodes share a NATS log: through the instances'
    /// partitions, to their owners (`route_through_log`).
    front: std::sync::OnceLock<crate::LogFront>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the lanes and the journey-cache poller on the current tokio runtime. The cache
    /// is loaded by the first batch (or poll), whichever comes first.
    ///
    /// `on_commit` is called after each commit that queued sends: the delivery dispatcher's
    /// wake-up (`None` when no dispatcher runs beside this engine; the outbox rows then wait
    /// for one). It is fixed here, before any lane runs, so no commit can miss it. It runs on a
    /// lane task: keep it short and non-blocking.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn start(store: Store, config: EngineConfig, on_commit: Option<OnCommit>) -> Self {
        Self::launch(store, config, on_commit, None)
    }

    /// Starts an owner that applies the partitions it holds from the NATS partition log
    /// (SCALE-OUT.md §3): one reader per held partition, from the `log_seq` committed before,
    /// each commit recording the log sequences it applied. Events reach it through the log
    /// (a [`crate::LogFront`] on any node), not through [`Engine::submit`]. An engine without
    /// [`EngineConfig::owner`] becomes an owner with the default [`crate::OwnerConfig`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn start_logged(
        store: Store,
        mut config: EngineConfig,
        on_commit: Option<OnCommit>,
        log: PartitionLog,
    ) -> Self {
        config.owner.get_or_insert_with(crate::OwnerConfig::default);
        Self::launch(store, config, on_commit, Some(log))
    }

    fn launch(
        store: Store,
        config: EngineConfig,
        on_commit: Option<OnCommit>,
        log: Option<PartitionLog>,
    ) -> Self {
        let config = config.normalized();
        let ownership = config
            .owner
            .clone()
            .map(|owner| Arc::new(Ownership::new(owner, config.partitions)));
        let shared = Arc::new(Shared {
            cache: JourneyCache::new(store.clone()),
            store,
            counters: crate::stats::Counters::default(),
            on_commit,
            ownership,
            logged: log.is_some(),
            log: log.clone(),
            catalog: crate::catalog::CatalogNames::new(config.max_catalog_events),
            lanes: std::sync::OnceLock::new(),
            links: crate::links::LinkCache::default(),
            config,
            #[cfg(test)]
            before_commit: Mutex::new(None),
        });
        let mut lanes = Vec::with_capacity(shared.config.lanes);
        let mut tasks = Vec::with_capacity(shared.config.lanes + 1);
        for _ in 0..shared.config.lanes {
            let (tx, rx) = mpsc::unbounded_channel();
            lanes.push(tx);
            tasks.push(tokio::spawn(Lane::new(Arc::clone(&shared), rx).run()));
        }
        let _ = shared
            .lanes
            .set(lanes.iter().map(mpsc::UnboundedSender::downgrade).collect());
        let (stop_tx, stop_rx) = oneshot::channel();
        tasks.push(tokio::spawn(poll_journeys(Arc::clone(&shared), stop_rx)));
        let mut ownership_task = None;
        if let Some(ownership) = &shared.ownership {
            let (stop, stopped) = oneshot::channel();
            let task = tokio::spawn(Arc::clone(ownership).run(shared.store.clone(), stopped));
            ownership_task = Some((stop, task));
        }
        let pump = log.map(|log| Pump::start(Arc::clone(&shared), lanes.clone(), log));
        Self {
            inner: Arc::new(Inner {
                pump: Mutex::new(pump),
                front: std::sync::OnceLock::new(),
                shared,
                lanes,
                watermark: Arc::new(Watermark::default()),
                stopping: AtomicBool::new(false),
                tasks: Mutex::new(tasks),
                stop_poller: Mutex::new(Some(stop_tx)),
                ownership_task: Mutex::new(ownership_task),
            }),
        }
    }

    /// Applies `events` and returns one [`Ack`] per event, in input order, each after the
    /// event's effects committed. The events are queued before this returns.
    ///
    /// When the calling span is traced (OpenTelemetry export on), each event is evaluated in an
    /// `engine.evaluate` span, child of the caller's, and the sends it queues carry that span's
    /// context to the delivery.
    pub fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send + 'static {
        let message_ids: Vec<String> = events.iter().map(|e| e.message_id.clone()).collect();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; events.len()];
        let mut delta = StatsDelta::default();
        let refusal = if self.inner.stopping.load(Ordering::Acquire) {
            Some((crate::ack::UNAVAILABLE, "the engine is shutting down"))
        } else if self.inner.watermark.in_flight_events() + events.len()
            > self.inner.shared.config.max_in_flight_events
        {
            Some((
                crate::ack::OVERLOADED,
                "too many events in flight; retry later",
            ))
        } else {
            None
        };
        let mut receivers = Vec::new();
        if let Some((code, message)) = refusal {
            for outcome in &mut outcomes {
                delta.reject(code);
                *outcome = Some(Outcome::rejected(code, message));
            }
        } else {
            let in_flight = Arc::new(self.inner.watermark.enter(events.len()));
            let mut parts = self.parts();
            let mut relays = HashMap::new();
            for (position, event) in events.into_iter().enumerate() {
                let profile_id = event.profile_id().map(str::to_owned);
                match profile_id {
                    Some(profile_id) if !event.message_id.is_empty() => {
                        let (lane_profile, item) = self.placement(&mut relays, profile_id, event);
                        self.route(&mut parts, position, lane_profile, item);
                    }
                    _ => {
                        delta.reject("invalid");
                        outcomes[position] = Some(Outcome::rejected(
                            "invalid",
                            "an event needs a messageId and a userId or anonymousId",
                        ));
                    }
                }
            }
            // Placed once queued when no event of this call can be handed on to another lane.
            let final_lanes = self.inner.shared.links.unlinked()
                && parts
                    .iter()
                    .flatten()
                    .all(|routed| matches!(routed.item, Item::Event(_)));
            receivers = self.dispatch(
                parts,
                Some(&in_flight),
                trace_context::current_traceparent().as_deref(),
            );
            if final_lanes {
                in_flight.place();
            }
        }
        self.inner.shared.counters.apply(&delta);
        async move {
            for rx in receivers {
                if let Ok(answers) = rx.await {
                    for (position, outcome) in answers {
                        if let Some(slot) = outcomes.get_mut(position) {
                            *slot = Some(outcome);
                        }
                    }
                }
            }
            acks_in_order(message_ids, outcomes)
        }
    }

    /// Fires due timers (for the scheduler): each is applied to its instance through the
    /// lane of its profile, together with deleting the timer row. Outcomes in input order.
    /// Traced like [`Engine::submit`]: the caller's span (the firing) parents the timers' sends.
    ///
    /// # Errors
    /// [`EngineError::ShuttingDown`].
    pub async fn apply_timers(
        &self,
        timers: Vec<TimerRecord>,
    ) -> Result<Vec<TimerOutcome>, EngineError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        if let Some(front) = self.inner.front.get() {
            return Ok(front.fire_timers(timers).await);
        }
        let ids: Vec<String> = timers.iter().map(|t| t.id.clone()).collect();
        let mut parts = self.parts();
        for (position, timer) in timers.into_iter().enumerate() {
            let profile_id = timer.profile_id.clone();
            self.route(&mut parts, position, profile_id, Item::Timer(timer));
        }
        let trace = trace_context::current_traceparent();
        let answers =
            collect_stamped(self.dispatch(parts, None, trace.as_deref()), ids.len()).await;
        Ok(ids
            .into_iter()
            .zip(answers)
            .map(|(timer_id, answer)| match answer {
                Some((Outcome::Timer(status), answered_at)) => TimerOutcome {
                    timer_id,
                    status,
                    answered_at,
                },
                _ => TimerOutcome {
                    timer_id,
                    status: TimerStatus::Retry {
                        code: crate::ack::UNAVAILABLE.into(),
                        message: "the engine is shutting down".into(),
                    },
                    answered_at: Utc::now(),
                },
            })
            .collect())
    }

    /// Ends one instance at once (`ExitInstance`), through its profile's lane.
    ///
    /// # Errors
    /// [`EngineError::ShuttingDown`]; store errors; [`EngineError::Failed`] when the exit could
    /// not be committed.
    pub async fn terminate_instance(
        &self,
        instance_id: &str,
        reason: ExitReason,
    ) -> Result<TerminateOutcome, EngineError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        let found = self
            .inner
            .shared
            .store
            .batches()
            .instances_by_ids(&[instance_id.to_owned()])
            .await?;
        let Some(record) = found.into_iter().next() else {
            return Ok(TerminateOutcome::NotFound);
        };
        if record.state != InstanceState::Active {
            return Ok(TerminateOutcome::NotActive);
        }
        let outcomes = self
            .terminate(vec![(record.id, record.profile_id)], &reason)
            .await?;
        Ok(outcomes
            .into_iter()
            .next()
            .unwrap_or(TerminateOutcome::NotActive))
    }

    /// Ends every active instance of a journey (archive in exit mode) and returns how many
    /// were ended. Refreshes the journey cache first, so that once the journey is archived in
    /// the store no new instance starts here while the old ones are ended.
    ///
    /// # Errors
    /// [`EngineError::ShuttingDown`]; store errors; [`EngineError::Failed`] when an exit could
    /// not be committed.
    pub async fn terminate_journey_instances(&self, journey_id: &str) -> Result<u64, EngineError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        self.refresh_now().await?;
        let mut total = 0;
        loop {
            let page = self
                .inner
                .shared
                .store
                .batches()
                .active_instances_of_journey(journey_id, TERMINATE_PAGE)
                .await?;
            if page.is_empty() {
                return Ok(total);
            }
            let targets = page.into_iter().map(|i| (i.id, i.profile_id)).collect();
            let outcomes = self
                .terminate(targets, &ExitReason::JourneyArchived)
                .await?;
            let ended = outcomes
                .iter()
                .filter(|o| **o == TerminateOutcome::Exited)
                .count();
            if ended == 0 {
                // Nothing moved (the rows were ended concurrently): do not spin.
                return Ok(total);
            }
            total += u64::try_from(ended).unwrap_or(u64::MAX);
        }
    }

    /// Deletes profile `profile_id` (`DeleteProfile`) through the owner of its partition,
    /// after every event it received before: its traits, memberships, enter-once records,
    /// instances with their timelines and timers, and its sends (delivered or not) are
    /// removed; its row stays as a tombstone. Events sent before the deletion and still in
    /// flight are dropped, as is every later event of the id with `suppress`.
    ///
    /// # Errors
    /// [`EngineError::ShuttingDown`]; [`EngineError::Failed`] when the deletion could not be
    /// committed.
    pub async fn delete_profile(
        &self,
        profile_id: &str,
        suppress: bool,
    ) -> Result<(), EngineError> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(EngineError::ShuttingDown);
        }
        if let Some(front) = self.inner.front.get() {
            return front
                .delete_profile(profile_id, suppress)
                .await
                .map_err(EngineError::Failed);
        }
        let mut parts = self.parts();
        self.route(
            &mut parts,
            0,
            profile_id.to_owned(),
            Item::Delete { suppress },
        );
        match collect(self.dispatch(parts, None, None), 1)
            .await
            .into_iter()
            .next()
            .flatten()
        {
            Some(Outcome::Delete(Ok(()))) => Ok(()),
            Some(Outcome::Delete(Err(message))) => Err(EngineError::Failed(message)),
            _ => Err(EngineError::ShuttingDown),
        }
    }

    /// Sends due timers ([`Engine::apply_timers`]) and operator exits (`ExitInstance`,
    /// archiving in exit mode) through `front`: each to the owner of its profile's partition,
    /// applied in that partition's log order (after every event published into it before),
    /// wherever the call was made. Set once, by a node sharing a NATS log; without it, they go
    /// to this engine's own lanes.
    pub fn route_through_log(&self, front: crate::LogFront) {
        if self.inner.front.set(front).is_err() {
            tracing::warn!("timers and exits already go through a log front");
        }
    }

    async fn terminate(
        &self,
        targets: Vec<(String, String)>,
        reason: &ExitReason,
    ) -> Result<Vec<TerminateOutcome>, EngineError> {
        if let Some(front) = self.inner.front.get() {
            return front
                .terminate(targets, reason)
                .await
                .into_iter()
                .map(|outcome| outcome.map_err(EngineError::Failed))
                .collect();
        }
        let count = targets.len();
        let mut parts = self.parts();
        for (position, (instance_id, profile_id)) in targets.into_iter().enumerate() {
            let item = Item::Terminate {
                instance_id,
                reason: reason.clone(),
            };
            self.route(&mut parts, position, profile_id, item);
        }
        collect(self.dispatch(parts, None, None), count)
            .await
            .into_iter()
            .map(|outcome| match outcome {
                Some(Outcome::Terminate(Ok(done))) => Ok(done),
                Some(Outcome::Terminate(Err(message))) => Err(EngineError::Failed(message)),
                _ => Err(EngineError::ShuttingDown),
            })
            .collect()
    }

    /// Hands each non-empty part to its lane; a lane that is gone leaves its items unanswered.
    /// `trace` is the caller's trace context, continued by the lanes (see `crate::lane`).
    fn dispatch(
        &self,
        parts: Vec<Vec<Routed>>,
        in_flight: Option<&Arc<crate::watermark::InFlight>>,
        trace: Option<&str>,
    ) -> Vec<oneshot::Receiver<Vec<(usize, Outcome)>>> {
        let mut receivers = Vec::new();
        for (lane, items) in parts.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            let (reply, rx) = oneshot::channel();
            let job = Job {
                items,
                reply,
                trace: trace.map(str::to_owned),
                in_flight: in_flight.map(Arc::clone),
                epoch: None,
            };
            if let Some(sender) = self.inner.lanes.get(lane)
                && sender.send(LaneMessage::Work(job)).is_ok()
            {
                receivers.push(rx);
            }
        }
        receivers
    }

    /// Reloads the published-journey cache now (tests, and operator actions that must see
    /// the newest state at once).
    ///
    /// # Errors
    /// Store errors.
    pub async fn refresh_now(&self) -> Result<(), EngineError> {
        self.inner.shared.cache.reload().await?;
        Ok(())
    }

    /// The receive time of the oldest event submitted but not yet committed, or now when
    /// idle. The scheduler takes a hold timeout with deadline `D` only once this passed `D`.
    #[must_use]
    pub fn watermark(&self) -> DateTime<Utc> {
        self.inner.watermark.current()
    }

    /// The receive time of the oldest event submitted but not yet queued in the lane that
    /// applies it, or now. A timer handed to the engine once this passed its due time is
    /// applied after every event of its profile received before then: the scheduler of the
    /// same process waits for this rather than for [`Engine::watermark`].
    #[must_use]
    pub fn placed_watermark(&self) -> DateTime<Utc> {
        self.inner.watermark.placed()
    }

    /// The counters since start.
    #[must_use]
    pub fn stats(&self) -> EngineStats {
        self.inner.shared.counters.snapshot()
    }

    /// Stops taking work, lets every lane finish (and commit) what was queued, and stops the
    /// cache poller. Calls made meanwhile are refused (`unavailable` acknowledgements,
    /// [`EngineError::ShuttingDown`]). Idempotent.
    pub async fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        let pump = self
            .inner
            .pump
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(pump) = pump {
            pump.stop().await;
        }
        for lane in &self.inner.lanes {
            // A lane that already stopped has nothing left to drain.
            let _ = lane.send(LaneMessage::Stop);
        }
        if let Some(stop) = self
            .inner
            .stop_poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = stop.send(());
        }
        let tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "engine task ended abnormally");
            }
        }
        let ownership = self
            .inner
            .ownership_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, task)) = ownership {
            let _ = stop.send(());
            if let Err(err) = task.await {
                tracing::error!(error = %err, "ownership task ended abnormally");
            }
        }
    }

    /// Makes owner lanes read these profiles from the store again (after a change made
    /// outside the engine, such as audience members set by an operator). Returns once the
    /// lanes were told; a batch that starts afterwards reads the new state. With a NATS log
    /// (`route_through_log`), every node's owners are told through the profiles' partitions,
    /// and this returns once they applied it. A no-op for an engine that is no owner and has
    /// no log.
    pub async fn forget_profiles(&self, profile_ids: &[String]) {
        if let Some(front) = self.inner.front.get()
            && let Err(err) = front.forget(profile_ids).await
        {
            tracing::warn!(error = %err, profiles = profile_ids.len(), "owners not told to forget changed profiles");
        }
        if self.inner.shared.ownership.is_none() {
            return;
        }
        let mut parts: Vec<Vec<String>> = self.inner.lanes.iter().map(|_| Vec::new()).collect();
        for profile_id in profile_ids {
            let lane = lane_of(profile_id, self.partitions(), parts.len());
            parts[lane].push(profile_id.clone());
        }
        for (lane, ids) in self.inner.lanes.iter().zip(parts) {
            if !ids.is_empty() {
                // A lane that stopped keeps nothing in memory.
                let _ = lane.send(LaneMessage::Forget(ids));
            }
        }
    }

    /// Where an event of `profile_id` is applied first, as what (identity resolution): an event
    /// linking an id to its user goes to the id's lane ([`Item::Link`]), unless the link is
    /// known already; an event carrying only a linked id goes to its profile when the link is
    /// known (else the id's lane hands it on); a later event of a user whose link this call
    /// started goes the same way as the link ([`Item::Relay`]), so the user's events stay in
    /// order. `relays` holds, per user, the id its link went through.
    fn placement(
        &self,
        relays: &mut HashMap<String, String>,
        mut profile_id: String,
        event: Event,
    ) -> (String, Item) {
        let links = &self.inner.shared.links;
        let mut event = event;
        if let Some(identity) = event.linked_identity() {
            if links.get(identity).as_deref() != Some(profile_id.as_str()) {
                links.linking();
                let identity = identity.to_owned();
                relays.entry(profile_id).or_insert_with(|| identity.clone());
                return (identity, Item::Link(event));
            }
        } else if event.user_id.as_deref().is_none_or(str::is_empty)
            && let Some(owner) = links.get(&profile_id)
        {
            event = crate::job::addressed_to(event, &owner);
            profile_id = owner;
        }
        match relays.get(&profile_id) {
            Some(via) => (
                via.clone(),
                Item::Relay {
                    to: profile_id,
                    event,
                },
            ),
            None => (profile_id, Item::Event(event)),
        }
    }

    /// One empty part per lane.
    fn parts(&self) -> Vec<Vec<Routed>> {
        self.inner.lanes.iter().map(|_| Vec::new()).collect()
    }

    /// Adds `item` of `profile_id` to its lane's part, with the profile's partition.
    fn route(&self, parts: &mut [Vec<Routed>], position: usize, profile_id: String, item: Item) {
        let partition = partition_of(&profile_id, self.partitions());
        let lane = lane_of_partition(partition, parts.len());
        parts[lane].push(Routed {
            position,
            profile_id,
            partition,
            item,
            seq: None,
            hops: 0,
        });
    }

    fn partitions(&self) -> u32 {
        self.inner.shared.config.partitions
    }

    /// How many profile partitions this engine holds now: all of them (by definition) when it
    /// is no owner.
    #[must_use]
    pub fn held_partitions(&self) -> usize {
        match &self.inner.shared.ownership {
            Some(ownership) => ownership.held_count(),
            None => usize::try_from(self.partitions()).unwrap_or(usize::MAX),
        }
    }

    /// The partitions an owner engine holds now, when that is not all of them (`None` for an
    /// engine that is no owner, or one holding every partition: it applies them all). The
    /// scheduler claims only these partitions' timers; with `None` it claims in due order
    /// straight from the due-time index, with no partition filter to sort through.
    #[must_use]
    pub fn held_partition_ids(&self) -> Option<Vec<u32>> {
        let shared = &self.inner.shared;
        let ownership = shared.ownership.as_ref()?;
        let mut held = ownership.held_ids();
        if let Some(pump) = &*self
            .inner
            .pump
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            // A partition still catching up on its log fires no timers: a timer must not
            // overtake the events published before it was due.
            let now = std::time::Instant::now();
            held.retain(|p| {
                ownership
                    .held(*p, now)
                    .is_some_and(|h| pump.caught_up().is(h))
            });
        }
        let all = usize::try_from(shared.config.partitions).unwrap_or(usize::MAX);
        (held.len() < all).then_some(held)
    }

    /// Waits until an owner engine finished its first ownership round (at once otherwise).
    pub async fn ownership_ready(&self) {
        if let Some(ownership) = &self.inner.shared.ownership {
            ownership.wait_ready().await;
        }
    }
}

#[cfg(test)]
impl Engine {
    /// Installs a one-shot hook run right before the next commit of any lane.
    pub(crate) fn before_next_commit(&self, hook: crate::lane::BeforeCommit) {
        *self
            .inner
            .shared
            .before_commit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(hook);
    }
}

impl EventSink for Engine {
    fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send {
        Engine::submit(self, events)
    }
}

/// Waits for every lane's answers and places them by position.
async fn collect(
    receivers: Vec<oneshot::Receiver<Vec<(usize, Outcome)>>>,
    count: usize,
) -> Vec<Option<Outcome>> {
    collect_stamped(receivers, count)
        .await
        .into_iter()
        .map(|answer| answer.map(|(outcome, _)| outcome))
        .collect()
}

/// [`collect`], with the time each lane answered: the lanes of one call commit at different
/// times, and a caller measuring when its items took effect needs each one's.
async fn collect_stamped(
    receivers: Vec<oneshot::Receiver<Vec<(usize, Outcome)>>>,
    count: usize,
) -> Vec<Option<(Outcome, DateTime<Utc>)>> {
    let mut outcomes: Vec<Option<(Outcome, DateTime<Utc>)>> = vec![None; count];
    let mut answers: futures::stream::FuturesUnordered<_> = receivers.into_iter().collect();
    while let Some(answer) = futures::StreamExt::next(&mut answers).await {
        let Ok(answer) = answer else { continue };
        let at = Utc::now();
        for (position, outcome) in answer {
            if let Some(slot) = outcomes.get_mut(position) {
                *slot = Some((outcome, at));
            }
        }
    }
    outcomes
}

/// Polls the store's journey stamp every refresh interval until stopped.
async fn poll_journeys(shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(shared.config.refresh_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Until the store says whether any id is linked, every event counts as unplaced until it
    // committed (see `LinkCache::unlinked`).
    let mut links_read = false;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = ticks.tick() => {
                if let Err(err) = shared.cache.poll().await {
                    tracing::warn!(error = %err, "journey cache refresh failed");
                }
                if !links_read {
                    match shared.store.identities().any().await {
                        Ok(any) => {
                            links_read = true;
                            if any {
                                shared.links.linking();
                            } else {
                                shared.links.none_stored();
                            }
                        }
                        Err(err) => tracing::debug!(error = %err, "reading whether ids are linked failed"),
                    }
                }
            }
        }
    }
}
