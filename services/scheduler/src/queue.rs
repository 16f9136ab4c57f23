//! The in-memory queue of claimed timers, ordered by due time, and the one rule that decides
//! when a timer may fire: a delay fires when it is due; a hold-until timeout fires when it is due
//! **and** the watermark has passed its due time (SPEC §7, "hold-until is fair under load").
//!
//! Pure: `now` and the watermark are arguments, so the rule is tested without clocks.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use journeys_core::machine::TimerKind;
use journeys_store::TimerRecord;

type Key = (DateTime<Utc>, String);

/// Claimed timers not fired yet, in two due-ordered lanes so that hold timeouts held back by
/// the watermark never delay the delays behind them.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    delays: BTreeMap<Key, TimerRecord>,
    holds: BTreeMap<Key, TimerRecord>,
    /// Ids queued or being fired (taken and not yet [`TimerQueue::finish`]ed), so that
    /// re-claiming a timer whose lease ran out meanwhile does not fire it a second time.
    known: HashSet<String>,
}

/// When the firing loop should look at the queue again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NextWake {
    /// The earliest due time of a timer not due yet.
    pub at: Option<DateTime<Utc>>,
    /// A hold timeout is due but the watermark has not passed it: re-read the watermark soon.
    pub waiting_for_watermark: bool,
}

impl TimerQueue {
    /// Queues `timer` unless a timer with its id is queued or being fired; returns whether it
    /// was new.
    pub(crate) fn insert(&mut self, timer: TimerRecord) -> bool {
        if !self.known.insert(timer.id.clone()) {
            return false;
        }
        self.put(timer);
        true
    }

    /// Queues again a timer taken by [`TimerQueue::take_ready`] whose firing failed.
    pub(crate) fn requeue(&mut self, timer: TimerRecord) {
        self.known.insert(timer.id.clone());
        self.put(timer);
    }

    /// Forgets timers taken by [`TimerQueue::take_ready`] once their firing is over.
    pub(crate) fn finish<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>) {
        for id in ids {
            self.known.remove(id);
        }
    }

    fn put(&mut self, timer: TimerRecord) {
        let key = (timer.due_at, timer.id.clone());
        if is_hold_timeout(&timer) {
            self.holds.insert(key, timer);
        } else {
            self.delays.insert(key, timer);
        }
    }

    /// Timers queued or being fired.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.known.len()
    }

    /// Removes and returns every timer that may fire now, earliest due first: delays due at or
    /// before `now`, hold timeouts due at or before both `now` and `watermark`. They stay
    /// known until [`TimerQueue::finish`] or [`TimerQueue::requeue`].
    pub(crate) fn take_ready(
        &mut self,
        now: DateTime<Utc>,
        watermark: DateTime<Utc>,
    ) -> Vec<TimerRecord> {
        let mut ready = take_due(&mut self.delays, now);
        let holds = take_due(&mut self.holds, now.min(watermark));
        if !holds.is_empty() {
            ready.extend(holds);
            ready.sort_by(|a, b| (a.due_at, &a.id).cmp(&(b.due_at, &b.id)));
        }
        ready
    }

    /// What to wait for after [`TimerQueue::take_ready`] at the same `now`.
    pub(crate) fn next_wake(&self, now: DateTime<Utc>) -> NextWake {
        let first_delay = self.delays.keys().next().map(|(due, _)| *due);
        let first_hold = self.holds.keys().next().map(|(due, _)| *due);
        let waiting_for_watermark = first_hold.is_some_and(|due| due <= now);
        let hold_at = first_hold.filter(|due| *due > now);
        let at = match (first_delay, hold_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        NextWake {
            at,
            waiting_for_watermark,
        }
    }

    /// Empties the queue (at shutdown, to release the claims), forgetting every id.
    pub(crate) fn drain(&mut self) -> Vec<TimerRecord> {
        self.known.clear();
        let delays = std::mem::take(&mut self.delays);
        let holds = std::mem::take(&mut self.holds);
        delays.into_values().chain(holds.into_values()).collect()
    }
}

/// Whether the watermark gates this timer.
pub(crate) fn is_hold_timeout(timer: &TimerRecord) -> bool {
    timer.kind == TimerKind::HoldTimeout.as_str()
}

/// Splits off and returns the entries due at or before `until`.
fn take_due(lane: &mut BTreeMap<Key, TimerRecord>, until: DateTime<Utc>) -> Vec<TimerRecord> {
    let Some(((first_due, _), _)) = lane.first_key_value() else {
        return Vec::new();
    };
    if *first_due > until {
        return Vec::new();
    }
    // Everything strictly after `until` stays: split at the smallest key with a later time.
    let Some(after) = until.checked_add_signed(chrono::TimeDelta::nanoseconds(1)) else {
        return std::mem::take(lane).into_values().collect();
    };
    let later = lane.split_off(&(after, String::new()));
    std::mem::replace(lane, later).into_values().collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("valid time")
    }

    fn timer(id: &str, due: DateTime<Utc>, kind: TimerKind) -> TimerRecord {
        TimerRecord {
            id: id.to_owned(),
            instance_id: format!("i-{id}"),
            profile_id: "p".to_owned(),
            journey_id: "j".to_owned(),
            due_at: due,
            kind: kind.as_str().to_owned(),
            step_key: "wait".to_owned(),
        }
    }

    fn ids(timers: &[TimerRecord]) -> Vec<&str> {
        timers.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn delays_fire_when_due_in_due_order() {
        let mut q = TimerQueue::default();
        q.insert(timer("c", at(3), TimerKind::Delay));
        q.insert(timer("a", at(1), TimerKind::Delay));
        q.insert(timer("b", at(2), TimerKind::Delay));
        assert!(q.take_ready(at(0), at(0)).is_empty());
        let fired = q.take_ready(at(2), at(0));
        assert_eq!(ids(&fired), ["a", "b"]);
        q.finish(ids(&fired));
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.next_wake(at(2)),
            NextWake {
                at: Some(at(3)),
                waiting_for_watermark: false
            }
        );
    }

    #[test]
    fn a_hold_timeout_waits_for_the_watermark_but_a_delay_does_not() {
        let mut q = TimerQueue::default();
        q.insert(timer("hold", at(1), TimerKind::HoldTimeout));
        q.insert(timer("delay", at(1), TimerKind::Delay));
        // Due, but events received before the deadline may still be in flight.
        let lagging = at(1) - TimeDelta::milliseconds(1);
        assert_eq!(ids(&q.take_ready(at(5), lagging)), ["delay"]);
        assert_eq!(
            q.next_wake(at(5)),
            NextWake {
                at: None,
                waiting_for_watermark: true
            }
        );
        // The watermark reaching the deadline releases it.
        assert_eq!(ids(&q.take_ready(at(5), at(1))), ["hold"]);
        assert!(q.next_wake(at(5)).at.is_none());
    }

    #[test]
    fn a_watermark_ahead_of_now_does_not_fire_early() {
        let mut q = TimerQueue::default();
        q.insert(timer("hold", at(10), TimerKind::HoldTimeout));
        assert!(q.take_ready(at(5), at(20)).is_empty());
        assert_eq!(
            q.next_wake(at(5)),
            NextWake {
                at: Some(at(10)),
                waiting_for_watermark: false
            }
        );
    }

    #[test]
    fn reclaiming_a_queued_or_firing_timer_does_not_fire_it_twice() {
        let mut q = TimerQueue::default();
        assert!(q.insert(timer("a", at(1), TimerKind::Delay)));
        assert!(!q.insert(timer("a", at(1), TimerKind::Delay)));
        assert_eq!(q.len(), 1);
        let firing = q.take_ready(at(1), at(1));
        assert_eq!(ids(&firing), ["a"]);
        // Its lease ran out while the engine applied it, and it was claimed again.
        assert!(!q.insert(timer("a", at(1), TimerKind::Delay)));
        assert!(q.take_ready(at(1), at(1)).is_empty());
        q.finish(["a"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_failed_timer_is_fired_again_after_requeueing() {
        let mut q = TimerQueue::default();
        q.insert(timer("a", at(1), TimerKind::HoldTimeout));
        let firing = q.take_ready(at(1), at(1));
        for timer in firing {
            q.requeue(timer);
        }
        assert_eq!(q.len(), 1);
        assert_eq!(ids(&q.take_ready(at(1), at(1))), ["a"]);
    }

    #[test]
    fn ready_timers_of_both_lanes_come_out_in_due_order() {
        let mut q = TimerQueue::default();
        q.insert(timer("d2", at(2), TimerKind::Delay));
        q.insert(timer("h1", at(1), TimerKind::HoldTimeout));
        q.insert(timer("h3", at(3), TimerKind::HoldTimeout));
        q.insert(timer("d4", at(4), TimerKind::Delay));
        assert_eq!(ids(&q.take_ready(at(3), at(3))), ["h1", "d2", "h3"]);
        assert_eq!(ids(&q.drain()), ["d4"]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn timers_due_at_the_same_instant_all_fire() {
        let mut q = TimerQueue::default();
        let due = at(1) + TimeDelta::microseconds(250);
        for id in ["x", "y", "z"] {
            q.insert(timer(id, due, TimerKind::Delay));
        }
        q.insert(timer(
            "later",
            due + TimeDelta::microseconds(1),
            TimerKind::Delay,
        ));
        assert_eq!(ids(&q.take_ready(due, due)), ["x", "y", "z"]);
        assert_eq!(q.next_wake(due).at, Some(due + TimeDelta::microseconds(1)));
    }
}
