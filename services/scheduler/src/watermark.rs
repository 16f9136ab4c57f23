//! Where the scheduler reads the fairness watermark from: the receive time of the oldest event
//! that the data plane has received but not yet committed (or now, when it is idle).
//!
//! A hold-until timeout with deadline `D` fires only once the watermark has passed `D`, so an
//! event received before the deadline always gets to take its branch, also when evaluation lags
//! behind (SPEC §7). Delay timers ignore the watermark.
//!
//! **In one process** (`journeys dev`, tests) the data plane and the scheduler share an
//! [`Engine`], and [`Engine::watermark`] is exact.
//!
//! **Across processes** ([`StoreWatermark`], used by the stand-alone `journeys-scheduler`)
//! every stand-alone data-plane replica writes a heartbeat row to the store every 50 ms: its
//! replica id, its engine's watermark and the heartbeat time. A background task here reads the
//! lowest watermark of the live rows every [`WATERMARK_REFRESH`], and the source returns the
//! minimum of that and its own engine's watermark.
//!
//! The heartbeat is a **lease**: a replica whose last heartbeat is older than
//! [`WATERMARK_LEASE`] (2 s) no longer counts, so a killed or partitioned data plane holds
//! timeouts back for at most the lease, not forever; an event it had received but not
//! committed is lost with it anyway (never acknowledged). A replica that shuts down gracefully
//! removes its row after draining. With no live replica the source falls back to its own
//! engine's watermark (now when idle): timeouts fire on their deadline. Until the first read of
//! the store succeeds, the source holds every timeout back rather than guess.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_engine::Engine;
use journeys_store::{Store, StoreError};
use tokio::task::JoinHandle;

/// How long a data-plane heartbeat counts: a replica that stopped beating longer ago than this
/// no longer holds hold-until timeouts back.
pub const WATERMARK_LEASE: Duration = Duration::from_secs(2);

/// How often [`StoreWatermark`] reads the lowest live watermark from the store.
pub const WATERMARK_REFRESH: Duration = Duration::from_millis(25);

/// A source of the fairness watermark. Must be cheap: it is read on every pass of the firing
/// loop and, while a due hold timeout waits, every few milliseconds.
pub trait WatermarkSource: Send + Sync + 'static {
    /// Every event received before this instant has been committed (or rejected).
    fn watermark(&self) -> DateTime<Utc>;
}

/// The engine's own in-process watermark, for a scheduler that fires through the same engine
/// that takes the events: a timer waits only until every event received before its deadline
/// is queued in its lane ([`Engine::placed_watermark`]), not until it committed, because the
/// lane applies its queue in order.
impl WatermarkSource for Engine {
    fn watermark(&self) -> DateTime<Utc> {
        Engine::placed_watermark(self)
    }
}

impl<W: WatermarkSource + ?Sized> WatermarkSource for Arc<W> {
    fn watermark(&self) -> DateTime<Utc> {
        (**self).watermark()
    }
}

/// No data plane to wait for: the watermark is always now, so hold timeouts fire on their
/// deadline like delays.
#[derive(Debug, Clone, Copy, Default)]
pub struct WallClock;

impl WatermarkSource for WallClock {
    fn watermark(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A watermark computed by a closure (tests, or a source built elsewhere).
#[derive(Clone)]
pub struct FnWatermark<F>(pub F);

impl<F> WatermarkSource for FnWatermark<F>
where
    F: Fn() -> DateTime<Utc> + Send + Sync + 'static,
{
    fn watermark(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl<F> std::fmt::Debug for FnWatermark<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnWatermark")
    }
}

/// What the store said at the last successful read.
#[derive(Debug, Clone, Copy)]
enum Low {
    /// Not read yet: hold every timeout back.
    Unknown,
    /// No live data-plane replica.
    NoReplica,
    /// The lowest watermark among live replicas.
    At(DateTime<Utc>),
}

/// The cross-process watermark: the lowest watermark of the live data-plane heartbeats in the
/// store (refreshed in the background), combined with the scheduler's own engine. See the
/// module documentation for the lease.
#[derive(Clone)]
pub struct StoreWatermark {
    engine: Engine,
    low: Arc<Mutex<Low>>,
}

impl std::fmt::Debug for StoreWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWatermark")
            .field("low", &self.low())
            .finish_non_exhaustive()
    }
}

impl StoreWatermark {
    /// Reads the store once, then keeps refreshing every [`WATERMARK_REFRESH`] with the
    /// [`WATERMARK_LEASE`] until `stop` completes.
    pub async fn start(
        store: Store,
        engine: Engine,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        Self::start_with(store, engine, WATERMARK_LEASE, WATERMARK_REFRESH, stop).await
    }

    /// [`StoreWatermark::start`] with an explicit lease and refresh period.
    pub async fn start_with(
        store: Store,
        engine: Engine,
        lease: Duration,
        refresh: Duration,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let source = Self {
            engine,
            low: Arc::new(Mutex::new(Low::Unknown)),
        };
        let mut failing = false;
        if let Err(error) = source.refresh(&store, lease).await {
            failing = true;
            tracing::warn!(%error, "could not read data-plane watermarks; holding timeouts back");
        }
        let task = {
            let source = source.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(refresh);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker.tick().await;
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        () = &mut stop => break,
                        _ = ticker.tick() => {}
                    }
                    // Logged once per outage, not on every refresh.
                    match source.refresh(&store, lease).await {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!("reading data-plane watermarks again");
                        }
                        Err(error) if !failing => {
                            failing = true;
                            tracing::warn!(%error, "could not read data-plane watermarks; keeping the last value");
                        }
                        Ok(()) | Err(_) => {}
                    }
                }
            })
        };
        (source, task)
    }

    /// One read of the store; on failure the last value stays.
    async fn refresh(&self, store: &Store, lease: Duration) -> Result<(), StoreError> {
        let low = store.watermarks().low(Utc::now(), lease).await?;
        *self
            .low
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            low.map_or(Low::NoReplica, Low::At);
        Ok(())
    }

    /// The lowest live data-plane watermark as last read (`None`: no live replica, or not
    /// read yet).
    #[must_use]
    pub fn low(&self) -> Option<DateTime<Utc>> {
        match *self
            .low
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Low::At(at) => Some(at),
            Low::Unknown | Low::NoReplica => None,
        }
    }
}

impl WatermarkSource for StoreWatermark {
    fn watermark(&self) -> DateTime<Utc> {
        let own = self.engine.watermark();
        match *self
            .low
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            Low::Unknown => DateTime::<Utc>::MIN_UTC,
            Low::NoReplica => own,
            Low::At(low) => low.min(own),
        }
    }
}
