//! The fairness watermark: the receive time of the oldest event submitted but not yet
//! committed (or now, when idle).
//!
//! The scheduler takes a hold-until timeout with deadline `D` only once the watermark has
//! passed `D`, so an event received before the deadline always gets to take its branch. The
//! receive time is read under the same lock that [`Watermark::current`] takes, so a reader can
//! never observe "idle, now ≥ D" while an event stamped before `D` is about to be registered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};

/// Submissions in flight, by receive time.
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    pending: Mutex<Pending>,
    /// Events covered by live guards (for the overload limit).
    events: AtomicUsize,
}

/// Receive time → number of live [`InFlight`] guards stamped with it: all of them, and those
/// not yet placed ([`InFlight::place`]).
#[derive(Debug, Default)]
struct Pending {
    received: BTreeMap<DateTime<Utc>, usize>,
    unplaced: BTreeMap<DateTime<Utc>, usize>,
}

/// The earliest receive time in `map`, or now when it is empty. Read under the lock `enter`
/// stamps under, so "empty, now" never passes a submission about to be registered.
fn oldest(map: &BTreeMap<DateTime<Utc>, usize>) -> DateTime<Utc> {
    map.keys().next().copied().unwrap_or_else(Utc::now)
}

fn release(map: &mut BTreeMap<DateTime<Utc>, usize>, at: DateTime<Utc>) {
    if let Some(n) = map.get_mut(&at) {
        *n -= 1;
        if *n == 0 {
            map.remove(&at);
        }
    }
}

impl Watermark {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `events` events received now; they count until the guard is dropped, and as
    /// unplaced until [`InFlight::place`] (or the drop).
    pub fn enter(self: &Arc<Self>, events: usize) -> InFlight {
        let mut pending = self.lock();
        let received_at = Utc::now();
        *pending.received.entry(received_at).or_default() += 1;
        *pending.unplaced.entry(received_at).or_default() += 1;
        self.events.fetch_add(events, Ordering::Relaxed);
        InFlight {
            watermark: Arc::clone(self),
            received_at,
            events,
            placed: AtomicBool::new(false),
        }
    }

    /// The receive time of the oldest event in flight, or now.
    pub fn current(&self) -> DateTime<Utc> {
        oldest(&self.lock().received)
    }

    /// The receive time of the oldest event not yet placed in the lane that applies it, or
    /// now: a timer handed to its lane after this passed its due time is applied after every
    /// event of its profile received before then (a lane applies its queue in order).
    pub fn placed(&self) -> DateTime<Utc> {
        oldest(&self.lock().unplaced)
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
    placed: AtomicBool,
}

impl InFlight {
    /// Marks the submission's events as queued in the lanes that apply them: from now on only
    /// [`Watermark::current`] waits for them. Idempotent.
    pub fn place(&self) {
        if !self.placed.swap(true, Ordering::AcqRel) {
            release(&mut self.watermark.lock().unplaced, self.received_at);
        }
    }

    #[cfg(test)]
    pub fn received_at(&self) -> DateTime<Utc> {
        self.received_at
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut pending = self.watermark.lock();
        release(&mut pending.received, self.received_at);
        if !*self.placed.get_mut() {
            release(&mut pending.unplaced, self.received_at);
        }
        drop(pending);
        self.watermark
            .events
            .fetch_sub(self.events, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placed_guard_holds_only_the_commit_watermark_back() {
        let wm = Arc::new(Watermark::default());
        let first = wm.enter(1);
        let second = wm.enter(1);
        assert_eq!(wm.placed(), first.received_at());
        first.place();
        first.place();
        assert_eq!(wm.placed(), second.received_at());
        assert_eq!(wm.current(), first.received_at());
        drop(second);
        let before = Utc::now();
        assert!(wm.placed() >= before, "nothing unplaced: now");
        assert_eq!(wm.current(), first.received_at());
        drop(first);
        assert!(wm.current() >= before);
        assert_eq!(wm.in_flight_events(), 0);
    }

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
