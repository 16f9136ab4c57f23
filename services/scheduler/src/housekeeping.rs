//! Housekeeping: the periodic jobs that keep the store bounded, run by tokio-cron-scheduler.
//!
//! - **purge dedupe keys** older than the dedupe window (they can no longer match);
//! - **purge finished instances** (with their timelines) once the retention (90 days by
//!   default) has passed since they ended;
//! - **purge delivered sends** from the outbox after the same retention (dead letters stay
//!   until replayed; statistics are counters and keep their figures);
//! - **expire instances** past their maximum lifetime (365 days; the store stamps
//!   `expires_at` when an instance is created): each is ended through the engine, so the exit
//!   is one committed transition with its timeline row and its timer removed, like any other;
//! - **fold counter shards** of hours before the last into one row per counter and hour (the
//!   lanes write separate shards so they do not queue on each other's rows; see
//!   `journeys_store::COUNTER_SHARDS`): the statistics then read one row per key and hour.
//!
//! On each tick the jobs run one after another, never side by side: each purge deletes in
//! small chunks with a rest after each ([`HousekeepingConfig::purge`]), so a minute's worth of
//! finished rows goes without holding up the event path's commits (three purges at once, or
//! large chunks back to back, made them wait for a second or more).
//!
//! Claims need no job of their own: a timer or outbox row whose lease ran out is claimable
//! again by the next claim round. Every job is idempotent, so several scheduler replicas may
//! run them on the same schedule; within one process a run that is still going when the next
//! tick comes skips that tick.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::machine::ExitReason;
use journeys_engine::{Engine, TerminateOutcome};
use journeys_store::{Store, StoreError};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::HousekeepingConfig;

/// Rounds of the expiry job per run at most, so a run always ends (the next tick goes on).
const MAX_EXPIRY_ROUNDS: usize = 1000;

/// What one run of every job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HousekeepingReport {
    /// Dedupe keys deleted.
    pub dedupe_keys_purged: u64,
    /// Finished instances deleted with their timelines.
    pub instances_purged: u64,
    /// Delivered sends deleted from the outbox.
    pub sends_purged: u64,
    /// Active instances ended for being past their maximum lifetime.
    pub instances_expired: u64,
    /// Counter shard rows folded into shard 0.
    pub counter_rows_folded: u64,
}

/// The housekeeping jobs, callable directly (tests, an operator's one-off run) or on a cron
/// schedule through [`CronJobs`].
#[derive(Clone)]
pub struct Housekeeping {
    store: Store,
    engine: Engine,
    config: HousekeepingConfig,
}

impl std::fmt::Debug for Housekeeping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Housekeeping")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Housekeeping {
    /// Jobs over `store`, ending expired instances through `engine`.
    #[must_use]
    pub fn new(store: Store, engine: Engine, config: HousekeepingConfig) -> Self {
        Self {
            store,
            engine,
            config,
        }
    }

    /// Deletes dedupe keys seen before `now` − dedupe window; returns how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_dedupe(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let before = before(now, self.config.dedupe_window);
        self.store
            .batches()
            .purge_dedupe(before, self.config.purge)
            .await
    }

    /// Deletes instances that ended before `now` − retention, with their timelines; returns
    /// how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_finished_instances(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let ended_before = before(now, self.config.instance_retention);
        self.store
            .batches()
            .purge_finished_instances(ended_before, self.config.purge)
            .await
    }

    /// Deletes delivered sends due before `now` − retention (the instance retention); returns
    /// how many. Dead letters stay until replayed; statistics are counters and do not change.
    ///
    /// # Errors
    /// Store errors.
    pub async fn purge_sent(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let due_before = before(now, self.config.instance_retention);
        self.store
            .outbox()
            .purge_sent(due_before, self.config.purge)
            .await
    }

    /// Folds the counter shards of hours before the one before `now`'s; returns how many shard
    /// rows. The last hour stays sharded: batches planned just before the hour turned may still
    /// add to it.
    ///
    /// # Errors
    /// Store errors.
    pub async fn fold_counter_shards(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.store
            .batches()
            .fold_counter_shards(now - TimeDelta::hours(1), self.config.purge)
            .await
    }

    /// Ends every active instance whose maximum lifetime has passed at `now`; returns how many
    /// were ended (instances that finished meanwhile are skipped).
    ///
    /// # Errors
    /// Store errors, and an engine that cannot take work; instances ended before the error
    /// stay ended.
    pub async fn expire_instances(&self, now: DateTime<Utc>) -> Result<u64, ExpireError> {
        let mut expired = 0;
        for _ in 0..MAX_EXPIRY_ROUNDS {
            let batch = self
                .store
                .batches()
                .expired_active_instances(now, self.config.batch)
                .await?;
            let full = batch.len() >= self.config.batch as usize;
            // The engine batches concurrent exits per lane, so end a round's instances together.
            let mut exits = JoinSet::new();
            for instance in batch {
                let engine = self.engine.clone();
                exits.spawn(async move {
                    engine
                        .terminate_instance(&instance.id, ExitReason::LifetimeReached)
                        .await
                });
            }
            let mut progressed = false;
            let mut failure = None;
            while let Some(joined) = exits.join_next().await {
                match joined {
                    Ok(Ok(TerminateOutcome::Exited)) => {
                        expired += 1;
                        progressed = true;
                    }
                    Ok(Ok(TerminateOutcome::NotActive | TerminateOutcome::NotFound)) => {
                        progressed = true;
                    }
                    Ok(Err(error)) => failure = Some(error.to_string()),
                    Err(error) => failure = Some(error.to_string()),
                }
            }
            if let Some(error) = failure {
                return Err(ExpireError::Engine(error));
            }
            // A round that changed nothing would find the same instances again.
            if !full || !progressed {
                break;
            }
        }
        Ok(expired)
    }

    /// Runs every job once, logging each; a failing job does not stop the others.
    pub async fn run_all(&self, now: DateTime<Utc>) -> HousekeepingReport {
        HousekeepingReport {
            dedupe_keys_purged: self.logged_purge_dedupe(now).await,
            instances_purged: self.logged_purge_finished(now).await,
            sends_purged: self.logged_purge_sent(now).await,
            instances_expired: self.logged_expire(now).await,
            counter_rows_folded: self.logged_fold(now).await,
        }
    }

    async fn logged_fold(&self, now: DateTime<Utc>) -> u64 {
        let started = std::time::Instant::now();
        match self.fold_counter_shards(now).await {
            Ok(folded) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(
                    job = "fold_counter_shards",
                    folded,
                    elapsed_ms,
                    "housekeeping: folded past hours' counter shards"
                );
                folded
            }
            Err(error) => {
                tracing::warn!(job = "fold_counter_shards", %error, "housekeeping job failed");
                0
            }
        }
    }

    async fn logged_purge_dedupe(&self, now: DateTime<Utc>) -> u64 {
        let started = std::time::Instant::now();
        match self.purge_dedupe(now).await {
            Ok(purged) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(job = "purge_dedupe", purged, elapsed_ms, window = ?self.config.dedupe_window, "housekeeping: purged expired dedupe keys");
                purged
            }
            Err(error) => {
                tracing::warn!(job = "purge_dedupe", %error, "housekeeping job failed");
                0
            }
        }
    }

    async fn logged_purge_finished(&self, now: DateTime<Utc>) -> u64 {
        let started = std::time::Instant::now();
        match self.purge_finished_instances(now).await {
            Ok(purged) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(job = "purge_finished_instances", purged, elapsed_ms, retention = ?self.config.instance_retention, "housekeeping: purged finished instances past retention");
                purged
            }
            Err(error) => {
                tracing::warn!(job = "purge_finished_instances", %error, "housekeeping job failed");
                0
            }
        }
    }

    async fn logged_purge_sent(&self, now: DateTime<Utc>) -> u64 {
        let started = std::time::Instant::now();
        match self.purge_sent(now).await {
            Ok(purged) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(job = "purge_sent", purged, elapsed_ms, retention = ?self.config.instance_retention, "housekeeping: purged delivered sends past retention");
                purged
            }
            Err(error) => {
                tracing::warn!(job = "purge_sent", %error, "housekeeping job failed");
                0
            }
        }
    }

    async fn logged_expire(&self, now: DateTime<Utc>) -> u64 {
        let started = std::time::Instant::now();
        match self.expire_instances(now).await {
            Ok(expired) => {
                let elapsed_ms = started.elapsed().as_millis();
                tracing::info!(
                    job = "expire_instances",
                    expired,
                    elapsed_ms,
                    "housekeeping: ended instances past their maximum lifetime"
                );
                expired
            }
            Err(error) => {
                tracing::warn!(job = "expire_instances", %error, "housekeeping job failed");
                0
            }
        }
    }
}

/// Why the expiry job stopped early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExpireError {
    /// Reading expired instances failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The engine refused the exit (it is shutting down or the store failed under it).
    #[error("engine: {0}")]
    Engine(String),
}

/// The housekeeping jobs on a cron schedule.
pub(crate) struct CronJobs {
    scheduler: JobScheduler,
}

impl CronJobs {
    /// Runs every job, one after another, on `schedule` and starts ticking.
    pub(crate) async fn start(
        housekeeping: Housekeeping,
        schedule: &str,
    ) -> Result<Self, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        scheduler
            .add(job(schedule, Arc::new(housekeeping))?)
            .await?;
        scheduler.start().await?;
        tracing::info!(schedule, "housekeeping jobs scheduled");
        Ok(Self { scheduler })
    }

    /// Stops ticking; a job running right now finishes in the background.
    pub(crate) async fn shutdown(mut self) {
        if let Err(error) = self.scheduler.shutdown().await {
            tracing::warn!(%error, "stopping the housekeeping jobs failed");
        }
    }
}

/// A cron job running every housekeeping job in turn, skipping a tick while the previous run
/// is still going.
fn job(schedule: &str, housekeeping: Arc<Housekeeping>) -> Result<Job, JobSchedulerError> {
    let running = Arc::new(Mutex::new(()));
    Job::new_async(schedule, move |_id, _scheduler| {
        let housekeeping = Arc::clone(&housekeeping);
        let running = Arc::clone(&running);
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::debug!("housekeeping still running; skipping this tick");
                return;
            };
            housekeeping.run_all(Utc::now()).await;
        })
    })
}

/// `now` − `age`, saturating at the beginning of time.
fn before(now: DateTime<Utc>, age: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(age)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
