//! [`TimerLoop`]: claims timers shortly before they are due and fires each at its due time.
//!
//! Two tasks share the work:
//!
//! - the **claimer** leases timers due within the horizon (`claim_due`: earliest first, `FOR
//!   UPDATE SKIP LOCKED` on MySQL/MariaDB so replicas never claim the same row at once) and hands
//!   them over. A full batch is followed at once by another, so a backlog of overdue timers (the
//!   scheduler was down) is pulled in as fast as it is fired, bounded by `max_held`;
//! - the **firer** keeps them ordered by due time ([`crate::queue`]), sleeps until the next one
//!   is due (or new claims arrive), and hands everything due at that moment to
//!   [`Engine::apply_timers`] in batches, several calls in flight. Hold-until timeouts also wait
//!   for the watermark (see [`crate::watermark`]).
//!
//! **Exactly once across replicas**: the engine commits a timer's transition in the same
//! transaction that deletes the timer row, with an optimistic version check on the instance.
//! If a claim lapses while its holder is still busy (a long watermark wait, a slow store) and
//! another replica fires the same timer too, one commit wins and the other finds the timer gone
//! or stale and discards it. A crashed replica's claims lapse after the lease and are claimed
//! again. At shutdown the timers still held are released at once.
//!
//! Each engine call runs in a `scheduler.fire` span, which the engine continues into the
//! timers' evaluation and the sends they queue (see [`Engine::apply_timers`]). Fired timers and
//! their lateness also go to [`journeys_runtime::metrics`].

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_engine::{Engine, EngineError, TimerOutcome, TimerStatus};
use journeys_runtime::metrics;
use journeys_store::{Store, TimerRecord};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::config::SchedulerConfig;
use crate::lateness::LatenessHistogram;
use crate::queue::TimerQueue;
use crate::watermark::WatermarkSource;

/// Longest sleep of the firer with nothing to do; it wakes earlier for claims and due times.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// First wait after a failed store or engine call; doubles per consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Ids per `release` statement at shutdown.
const RELEASE_CHUNK: usize = 1000;

/// What the loop has done since it started.
#[derive(Debug, Clone, Default)]
pub struct TimerLoopStats {
    /// Timers taken off the queue by the engine: [`Self::applied`] + [`Self::discarded`].
    pub fired_total: u64,
    /// Timers that advanced their instance.
    pub applied: u64,
    /// Timers the engine deleted without effect (instance finished, or waiting on another
    /// timer, e.g. a hold already resolved by an event).
    pub discarded: u64,
    /// Firings that failed and were tried again (store unavailable, repeated conflicts).
    pub retried: u64,
    /// Timers claimed from the store (a timer whose claim lapsed and was claimed again counts
    /// twice).
    pub claimed: u64,
    /// Claimed timers in memory or being fired right now.
    pub held: u64,
    /// Fired at − due at, of every fired timer (waiting for the watermark included).
    pub lateness: LatenessHistogram,
    /// How long each [`Engine::apply_timers`] call took (evaluation and commit), to tell the
    /// engine's share of the lateness from the queue's.
    pub apply_time: LatenessHistogram,
}

impl TimerLoopStats {
    /// Median lateness.
    #[must_use]
    pub fn lateness_p50(&self) -> Duration {
        self.lateness.quantile(0.50)
    }

    /// 99th-percentile lateness.
    #[must_use]
    pub fn lateness_p99(&self) -> Duration {
        self.lateness.quantile(0.99)
    }
}

/// Counters shared by the loop's tasks.
#[derive(Debug, Default)]
struct Counters {
    applied: AtomicU64,
    discarded: AtomicU64,
    retried: AtomicU64,
    claimed: AtomicU64,
    /// Timers claimed and not yet fired or released: bounds claiming.
    held: AtomicUsize,
    lateness: Mutex<LatenessHistogram>,
    apply_time: Mutex<LatenessHistogram>,
}

/// Everything the tasks share.
struct Shared {
    store: Store,
    engine: Engine,
    watermark: Arc<dyn WatermarkSource>,
    config: SchedulerConfig,
    counters: Counters,
    /// Signalled when fired timers free room under `max_held`.
    room: Notify,
    /// Consecutive failed engine calls, for the retry backoff.
    fire_failures: AtomicU32,
}

/// What reaches the firer.
enum Message {
    /// Freshly claimed timers.
    Claimed(Vec<TimerRecord>),
    /// Timers whose firing is over (applied or discarded by the engine).
    Finished(Vec<String>),
    /// Timers whose firing failed; fire again now (the backoff already passed).
    Retry(Vec<TimerRecord>),
}

/// The claim-and-fire loop; see the module docs. Stops on [`TimerLoop::shutdown`].
pub struct TimerLoop {
    shared: Arc<Shared>,
    stop_claims: watch::Sender<bool>,
    stop_firing: watch::Sender<bool>,
    claimer: JoinHandle<()>,
    firer: JoinHandle<()>,
}

impl std::fmt::Debug for TimerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerLoop")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl TimerLoop {
    /// Starts claiming from `store` and firing through `engine`. Must be called inside a Tokio
    /// runtime.
    pub fn start(
        store: Store,
        engine: Engine,
        watermark: Arc<dyn WatermarkSource>,
        config: SchedulerConfig,
    ) -> Self {
        let config = config.normalized();
        tracing::info!(
            horizon = ?config.horizon,
            lease = ?config.lease,
            claim_batch = config.claim_batch,
            fire_batch = config.fire_batch,
            "timer loop starting"
        );
        let shared = Arc::new(Shared {
            store,
            engine,
            watermark,
            config,
            counters: Counters::default(),
            room: Notify::new(),
            fire_failures: AtomicU32::new(0),
        });
        let (stop_claims, claims_stopped) = watch::channel(false);
        let (stop_firing, firing_stopped) = watch::channel(false);
        let (sender, receiver) = mpsc::unbounded_channel();
        let claimer = tokio::spawn(claim_loop(
            Arc::clone(&shared),
            sender.clone(),
            claims_stopped,
        ));
        let firer = tokio::spawn(fire_loop(
            Arc::clone(&shared),
            sender,
            receiver,
            firing_stopped,
        ));
        Self {
            shared,
            stop_claims,
            stop_firing,
            claimer,
            firer,
        }
    }

    /// A snapshot of the counters and the lateness histogram.
    #[must_use]
    pub fn stats(&self) -> TimerLoopStats {
        stats_of(&self.shared.counters)
    }

    /// A handle that reads the same counters, for the gRPC service.
    pub(crate) fn stats_handle(&self) -> StatsHandle {
        StatsHandle(Arc::clone(&self.shared))
    }

    /// Stops claiming, waits for the engine calls in flight, and releases the claims of the
    /// timers not fired, so another replica can take them at once.
    pub async fn shutdown(self) {
        self.stop_claims.send_replace(true);
        if let Err(error) = self.claimer.await {
            tracing::error!(%error, "timer claimer ended abnormally");
        }
        self.stop_firing.send_replace(true);
        if let Err(error) = self.firer.await {
            tracing::error!(%error, "timer firer ended abnormally");
        }
        tracing::info!("timer loop stopped");
    }
}

/// Reads the loop's counters without owning the loop.
#[derive(Clone)]
pub(crate) struct StatsHandle(Arc<Shared>);

impl StatsHandle {
    pub(crate) fn stats(&self) -> TimerLoopStats {
        stats_of(&self.0.counters)
    }
}

fn stats_of(counters: &Counters) -> TimerLoopStats {
    let applied = counters.applied.load(Ordering::Relaxed);
    let discarded = counters.discarded.load(Ordering::Relaxed);
    TimerLoopStats {
        fired_total: applied + discarded,
        applied,
        discarded,
        retried: counters.retried.load(Ordering::Relaxed),
        claimed: counters.claimed.load(Ordering::Relaxed),
        held: counters.held.load(Ordering::Relaxed) as u64,
        lateness: counters
            .lateness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
        apply_time: counters
            .apply_time
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    }
}

/// Claims due timers until stopped; see the module docs.
async fn claim_loop(
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let mut failures = 0u32;
    let mut rate = FiringRate::new(fired_total(&shared.counters));
    while !*stop.borrow() {
        let held = shared.counters.held.load(Ordering::Relaxed);
        let limit_held = rate.claim_cap(fired_total(&shared.counters), config);
        if held >= limit_held {
            tokio::select! {
                _ = stop.changed() => {}
                () = shared.room.notified() => {}
                () = tokio::time::sleep(config.claim_interval) => {}
            }
            continue;
        }
        let room = u32::try_from(limit_held - held).unwrap_or(u32::MAX);
        let limit = config.claim_batch.min(room);
        let now = Utc::now();
        let until = after(now, config.horizon);
        let lease_until = after(now, config.lease);
        match shared
            .store
            .timers()
            .claim_due(until, limit, lease_until)
            .await
        {
            Ok(timers) => {
                failures = 0;
                let full = timers.len() >= limit as usize;
                if !timers.is_empty() {
                    tracing::trace!(count = timers.len(), "claimed timers");
                    shared
                        .counters
                        .held
                        .fetch_add(timers.len(), Ordering::Relaxed);
                    shared
                        .counters
                        .claimed
                        .fetch_add(timers.len() as u64, Ordering::Relaxed);
                    if sender.send(Message::Claimed(timers)).is_err() {
                        // The firer is gone; the claims lapse after their lease.
                        break;
                    }
                }
                if full {
                    // More may be due within the horizon: claim again at once.
                    tokio::task::yield_now().await;
                    continue;
                }
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(config.claim_interval) => {}
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures);
                tracing::warn!(%error, retry_in = ?wait, "claiming timers failed");
                tokio::select! {
                    _ = stop.changed() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Fires claimed timers when due until stopped, then releases what it still holds.
async fn fire_loop(
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Message>,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut queue = TimerQueue::default();
    'run: loop {
        while let Ok(message) = receiver.try_recv() {
            enqueue(&shared, &mut queue, message);
        }
        let now = Utc::now();
        let ready = queue.take_ready(now, shared.watermark.watermark());
        if !ready.is_empty() {
            tracing::trace!(count = ready.len(), "firing timers");
        }
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let batch: Vec<TimerRecord> = ready.by_ref().take(config.fire_batch).collect();
            let permit = tokio::select! {
                biased;
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'run,
                },
                _ = stop.changed() => {
                    // Not fired: put back so the shutdown below releases them.
                    for timer in batch.into_iter().chain(ready) {
                        queue.requeue(timer);
                    }
                    break 'run;
                }
            };
            tokio::spawn(fire(
                Arc::clone(&shared),
                batch,
                permit,
                sender.clone(),
                stop.clone(),
            ));
        }

        let now = Utc::now();
        let wake = queue.next_wake(now);
        let mut sleep_for = MAX_IDLE;
        if let Some(at) = wake.at {
            sleep_for = sleep_for.min((at - now).to_std().unwrap_or(Duration::ZERO));
        }
        if wake.waiting_for_watermark {
            sleep_for = sleep_for.min(config.watermark_poll);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break 'run,
            message = receiver.recv() => match message {
                Some(message) => enqueue(&shared, &mut queue, message),
                None => break 'run,
            },
            () = tokio::time::sleep(sleep_for) => {}
        }
    }

    // Let the calls in flight finish (failed ones send their timers back), then release
    // everything not fired.
    let in_flight = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    if let Ok(all) = permits.acquire_many(in_flight).await {
        drop(all);
    }
    while let Ok(message) = receiver.try_recv() {
        enqueue(&shared, &mut queue, message);
    }
    let left = queue.drain();
    shared
        .counters
        .held
        .fetch_sub(left.len(), Ordering::Relaxed);
    release(&shared.store, left).await;
}

/// Applies a message to the queue: claims are queued (dropping timers already queued or being
/// fired, whose lease ran out and which were claimed again), finished firings forgotten,
/// failed ones queued again.
fn enqueue(shared: &Shared, queue: &mut TimerQueue, message: Message) {
    let gone = match message {
        Message::Claimed(timers) => timers
            .into_iter()
            .filter(|timer| !queue.insert(timer.clone()))
            .count(),
        Message::Finished(ids) => {
            queue.finish(ids.iter().map(String::as_str));
            ids.len()
        }
        Message::Retry(timers) => {
            for timer in timers {
                queue.requeue(timer);
            }
            0
        }
    };
    if gone > 0 {
        shared.counters.held.fetch_sub(gone, Ordering::Relaxed);
        shared.room.notify_one();
    }
}

/// Applies one batch through the engine and records the outcome; failed timers go back to the
/// firer after a backoff.
async fn fire(
    shared: Arc<Shared>,
    batch: Vec<TimerRecord>,
    permit: OwnedSemaphorePermit,
    sender: mpsc::UnboundedSender<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let count = batch.len();
    let ids: Vec<String> = batch.iter().map(|t| t.id.clone()).collect();
    let called = std::time::Instant::now();
    let span = tracing::info_span!("scheduler.fire", timers = count);
    let result = shared
        .engine
        .apply_timers(batch.clone())
        .instrument(span)
        .await;
    let fired_at = Utc::now();
    shared
        .counters
        .apply_time
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(called.elapsed());
    let retry = match result {
        Ok(outcomes) => record(&shared, batch, &outcomes, fired_at),
        Err(error) => {
            if matches!(error, EngineError::ShuttingDown) {
                tracing::debug!("engine shutting down; timers go back to the store");
            } else {
                tracing::warn!(%error, count, "firing timers failed");
            }
            batch
        }
    };
    if retry.len() < count {
        let retrying: std::collections::HashSet<&str> =
            retry.iter().map(|t| t.id.as_str()).collect();
        let done = ids
            .into_iter()
            .filter(|id| !retrying.contains(id.as_str()))
            .collect();
        // The firer is gone only at shutdown, after every firing ended.
        let _ = sender.send(Message::Finished(done));
    }
    if retry.is_empty() {
        shared.fire_failures.store(0, Ordering::Relaxed);
    } else {
        shared
            .counters
            .retried
            .fetch_add(retry.len() as u64, Ordering::Relaxed);
        let failures = shared.fire_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !*stop.borrow() {
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(backoff(failures)) => {}
            }
        }
        // Still held: counted in `held` until fired or released.
        if sender.send(Message::Retry(retry)).is_err() {
            tracing::debug!("timer firer gone; failed timers are claimed again after their lease");
        }
    }
    drop(permit);
}

/// Counts the outcomes of one engine call and returns the timers to try again.
fn record(
    shared: &Shared,
    batch: Vec<TimerRecord>,
    outcomes: &[TimerOutcome],
    fired_at: DateTime<Utc>,
) -> Vec<TimerRecord> {
    let mut applied = 0u64;
    let mut discarded = 0u64;
    let mut retry = Vec::new();
    let mut lateness = LatenessHistogram::new();
    let mut by_id: std::collections::HashMap<&str, &TimerStatus> = outcomes
        .iter()
        .map(|o| (o.timer_id.as_str(), &o.status))
        .collect();
    let mut unanswered = Vec::new();
    let exported = metrics::metrics();
    let mut late = |timer: &TimerRecord| {
        let value = (fired_at - timer.due_at).to_std().unwrap_or_default();
        lateness.record(value);
        exported.timer_lateness.observe(value);
    };
    for timer in batch {
        match by_id.remove(timer.id.as_str()) {
            Some(TimerStatus::Fired) => {
                applied += 1;
                late(&timer);
            }
            Some(TimerStatus::Discarded) => {
                discarded += 1;
                late(&timer);
            }
            Some(TimerStatus::Retry { code, message }) => {
                tracing::debug!(timer = %timer.id, %code, %message, "timer not applied; retrying");
                retry.push(timer);
            }
            None => unanswered.push(timer),
        }
    }
    if !unanswered.is_empty() {
        tracing::warn!(
            count = unanswered.len(),
            "the engine did not answer for some timers; retrying them"
        );
        retry.extend(unanswered);
    }
    exported.timers_fired.add(&["applied"], applied);
    exported.timers_fired.add(&["discarded"], discarded);
    let counters = &shared.counters;
    counters.applied.fetch_add(applied, Ordering::Relaxed);
    counters.discarded.fetch_add(discarded, Ordering::Relaxed);
    counters
        .lateness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .merge(&lateness);
    retry
}

/// Releases the claims of `timers`, in chunks; failures only delay them until the lease ends.
async fn release(store: &Store, timers: Vec<TimerRecord>) {
    if timers.is_empty() {
        return;
    }
    let ids: Vec<String> = timers.into_iter().map(|t| t.id).collect();
    let mut released = 0;
    for chunk in ids.chunks(RELEASE_CHUNK) {
        match store.timers().release(chunk).await {
            Ok(()) => released += chunk.len(),
            Err(error) => {
                tracing::warn!(%error, count = chunk.len(), "releasing timer claims failed; they are claimable again after their lease");
            }
        }
    }
    tracing::info!(released, "released unfired timer claims");
}

fn fired_total(counters: &Counters) -> u64 {
    counters.applied.load(Ordering::Relaxed) + counters.discarded.load(Ordering::Relaxed)
}

/// How fast this scheduler fires, to claim no more than it can fire well within a lease:
/// holding more would let claims lapse under a backlog, and another replica (or this one's
/// next claim round) would fire them a second time, only for the engine to discard one.
#[derive(Debug)]
struct FiringRate {
    since: std::time::Instant,
    fired_then: u64,
    /// Timers per second, smoothed.
    per_second: f64,
}

impl FiringRate {
    /// Shortest window a rate is measured over.
    const WINDOW: Duration = Duration::from_millis(250);

    fn new(fired: u64) -> Self {
        Self {
            since: std::time::Instant::now(),
            fired_then: fired,
            per_second: 0.0,
        }
    }

    /// How many timers may be held now: what this scheduler fires in half a lease, at least
    /// enough to keep every engine call busy twice over, at most `max_held`.
    fn claim_cap(&mut self, fired: u64, config: &SchedulerConfig) -> usize {
        let elapsed = self.since.elapsed();
        if elapsed >= Self::WINDOW {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let sample = (fired - self.fired_then) as f64 / elapsed.as_secs_f64();
            self.per_second = 0.5 * self.per_second + 0.5 * sample;
            self.since = std::time::Instant::now();
            self.fired_then = fired;
        }
        let floor = 2 * (config.claim_batch as usize).max(config.fire_batch * config.max_in_flight);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // positive, capped
        let cap = (self.per_second * config.lease.as_secs_f64() / 2.0).min(1e12) as usize;
        cap.max(floor).min(config.max_held)
    }
}

/// Exponential backoff for the `failures`-th consecutive failure.
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF)
}

/// `duration` after `at`, saturating at the end of time.
fn after(at: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
