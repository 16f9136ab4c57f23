//! The claimer: leases timers due within the horizon, as many as this scheduler can fire well
//! within a lease ([`FiringRate`]), and hands them to the firer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::{Message, Shared, after, backoff, fired_total};
use crate::config::SchedulerConfig;

/// Claims due timers until stopped; see the module docs.
pub(super) async fn claim_loop(
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
        // An owner claims only the timers of the partitions it holds.
        let partitions = shared.engine.held_partition_ids();
        match shared
            .store
            .timers()
            .claim_due_in(until, limit, lease_until, partitions.as_deref())
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

/// How fast this scheduler fires, to claim no more than it can fire well within a lease:
/// holding more would let claims lapse under a backlog, and another replica (or this one's
/// next claim round) would fire them a second time, only for the engine to discard one.
#[derive(Debug)]
pub(super) struct FiringRate {
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
