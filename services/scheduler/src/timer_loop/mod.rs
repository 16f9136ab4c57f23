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
//!
//! Files: this one holds the handle, the shared state and the statistics; `claim` the claimer
//! and its claim cap (`FiringRate`); `fire` the firer, one engine call and the release
//! of unfired claims at shutdown.

mod claim;
mod fire;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_engine::Engine;
use journeys_store::{Store, TimerRecord};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::SchedulerConfig;
use crate::lateness::LatenessHistogram;
use crate::watermark::WatermarkSource;

/// First wait after a failed store or engine call; doubles per consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
    /// Fired at − due at, of every fired timer (waiting for the watermark included). Fired at
    /// is when the engine answered for the timer, just after its lane's commit.
    pub lateness: LatenessHistogram,
    /// How long each [`Engine::apply_timers`] call took (evaluation and commit), to tell the
    /// engine's share of the lateness from the queue's.
    pub apply_time: LatenessHistogram,
    /// Handed to the engine at − due at, of every timer handed over (retries count again): the
    /// part of the lateness spent before the engine call, waiting for the watermark or a free
    /// call slot.
    pub wait: LatenessHistogram,
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
    wait: Mutex<LatenessHistogram>,
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
        let claimer = tokio::spawn(claim::claim_loop(
            Arc::clone(&shared),
            sender.clone(),
            claims_stopped,
        ));
        let firer = tokio::spawn(fire::fire_loop(
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
        let stats = stats_of(&self.shared.counters);
        tracing::info!(
            fired = stats.fired_total,
            lateness_p50 = ?stats.lateness_p50(),
            lateness_p99 = ?stats.lateness_p99(),
            wait_p99 = ?stats.wait.quantile(0.99),
            apply_p99 = ?stats.apply_time.quantile(0.99),
            "timer loop stopped"
        );
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
        wait: counters
            .wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    }
}

fn fired_total(counters: &Counters) -> u64 {
    counters.applied.load(Ordering::Relaxed) + counters.discarded.load(Ordering::Relaxed)
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
