//! The fairness watermark: the receive time of the oldest event submitted but not yet
//! committed (or now, when idle).
//!
//! The scheduler takes a hold-until timeout with deadline `D` only once the watermark has
//! passed `D`, so an event received before the deadline always gets to take its branch. The
//! receive time is read under the same lock that [`Watermark::current`] takes, so a reader can
//! never observe "idle, now ≥ D" while an event stamped before `D` is about to be registered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

/// Submissions in flight, by receive time.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    /// Receive time → number of live [`InFlight`] guards stamped with it.
    pending: Mutex<BTreeMap<DateTime<Utc>, usize>>,
    /// Events covered by live guards (for the overload limit).
    events: AtomicUsize,
}

impl Watermark {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<DateTime<Utc>, usize>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `events` events received now; they count until the guard is dropped.
    pub fn enter(self: &Arc<Self>, events: usize) -> InFlight {
        let mut pending = self.lock();
        let received_at = Utc::now();
        *pending.entry(received_at).or_default() += 1;
        self.events.fetch_add(events, Ordering::Relaxed);
        InFlight {
            watermark: Arc::clone(self),
            received_at,
            events,
        }
    }

    /// The receive time of the oldest event in flight, or now.
    pub fn current(&self) -> DateTime<Utc> {
        let pending = self.lock();
        pending.keys().next().copied().unwrap_or_else(Utc::now)
    }

    /// Events submitted and not yet answered.
    pub fn in_flight_events(&self) -> usize {
        self.events.load(Ordering::Relaxed)
    }
}

/// Keeps a submission's receive time in the watermark until every lane holding a part of it
/// is done (shared by those lanes through an `Arc`).
#[derive(Debug)]
pub(crate) struct InFlight {
    watermark: Arc<Watermark>,
    received_at: DateTime<Utc>,
    events: usize,
}

impl InFlight {
    #[cfg(test)]
    pub fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut pending = self.watermark.lock();
        if let Some(n) = pending.get_mut(&self.received_at) {
            *n -= 1;
            if *n == 0 {
                pending.remove(&self.received_at);
            }
        }
        self.watermark
            .events
            .fetch_sub(self.events, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_guard_holds_the_watermark_back() {
        let wm = Arc::new(Watermark::default());
        let first = wm.enter(2);
        let second = wm.enter(1);
        assert_eq!(wm.current(), first.received_at());
        assert_eq!(wm.in_flight_events(), 3);
        drop(first);
        assert_eq!(wm.current(), second.received_at());
        drop(second);
        assert_eq!(wm.in_flight_events(), 0);
        let before = Utc::now();
        assert!(wm.current() >= before);
    }
}
