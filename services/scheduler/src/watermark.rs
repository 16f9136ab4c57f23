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
//! **Across processes** the path is a heartbeat row per data-plane replica in the store (its
//! watermark refreshed every few tens of milliseconds, a stale replica dropping out after a
//! lease) and a source here that takes the minimum over live rows. That is not built yet: a
//! standalone `journeys-scheduler` reads its own engine's watermark, which is "now" since no
//! events flow through it, so across processes hold timeouts fire on their deadline and an
//! event still queued in a lagging data plane can lose to the timeout (the race itself stays
//! safe: exactly one branch is taken).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use journeys_engine::Engine;

/// A source of the fairness watermark. Must be cheap: it is read on every pass of the firing
/// loop and, while a due hold timeout waits, every few milliseconds.
pub trait WatermarkSource: Send + Sync + 'static {
    /// Every event received before this instant has been committed (or rejected).
    fn watermark(&self) -> DateTime<Utc>;
}

/// The engine's own in-process watermark.
impl WatermarkSource for Engine {
    fn watermark(&self) -> DateTime<Utc> {
        Engine::watermark(self)
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
