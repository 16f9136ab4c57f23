//! The data plane's fairness-watermark heartbeat: the receive time of this process's oldest
//! event not yet committed (or now when idle), written to the store every
//! [`WATERMARK_HEARTBEAT`] under a replica id drawn at start. Schedulers in other processes take
//! the lowest live watermark before firing a hold-until timeout (SPEC §7).
//!
//! The row is a lease: removed on graceful shutdown, and ignored by the schedulers once it stops
//! being refreshed (killed process). A process that runs the scheduler beside the data plane
//! needs no heartbeat: its scheduler reads the engine directly. `journeys::node` decides which.

use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_runtime::shutdown::Shutdown;
use journeys_store::Store;
use tokio::task::JoinHandle;

/// How often a data plane without a scheduler beside it writes its fairness watermark.
pub const WATERMARK_HEARTBEAT: Duration = Duration::from_millis(50);

/// A running heartbeat. Stop it with [`Heartbeat::stop`] after the engine has drained, so that
/// events still being committed keep holding hold-until timeouts back.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Shutdown,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Writes the `watermark` (the engine's, or the log front's) under a fresh replica id now (before any server takes
    /// events) and then every [`WATERMARK_HEARTBEAT`]. A failed write is logged and retried on
    /// the next beat; a replica that cannot beat for the schedulers' lease drops out of their
    /// minimum.
    pub async fn start(
        store: Store,
        watermark: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> Heartbeat {
        let stop = Shutdown::new();
        let replica_id = uuid::Uuid::new_v4().to_string();
        let mut failing = false;
        if let Err(error) = store
            .watermarks()
            .beat(&replica_id, watermark(), chrono::Utc::now())
            .await
        {
            failing = true;
            tracing::warn!(%error, "could not publish the fairness watermark");
        }
        let stopped = stop.wait();
        let task = tokio::spawn(async move {
            tracing::debug!(%replica_id, "publishing the fairness watermark");
            let mut ticker = tokio::time::interval(WATERMARK_HEARTBEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; the first beat was written above.
            ticker.tick().await;
            tokio::pin!(stopped);
            loop {
                tokio::select! {
                    () = &mut stopped => break,
                    _ = ticker.tick() => {}
                }
                match store
                    .watermarks()
                    .beat(&replica_id, watermark(), chrono::Utc::now())
                    .await
                {
                    Ok(()) => failing = false,
                    // Logged once per outage, not on every beat.
                    Err(error) if !failing => {
                        failing = true;
                        tracing::warn!(%error, "could not publish the fairness watermark");
                    }
                    Err(_) => {}
                }
            }
            if let Err(error) = store.watermarks().remove(&replica_id).await {
                tracing::warn!(%error, "could not remove the fairness-watermark heartbeat");
            }
        });
        Heartbeat { stop, task }
    }

    /// Stops beating and removes the row.
    pub async fn stop(self) {
        self.stop.trigger();
        if let Err(error) = self.task.await {
            tracing::error!(%error, "watermark heartbeat ended abnormally");
        }
    }
}
