//! [`Recorder`]: what happened to each event, by sequence number, written lock-free by the
//! transports (send, acknowledgement) and the webhook sink (arrival).
//!
//! Times are nanoseconds since the recorder's origin plus one, so that zero means "not yet".

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const UNSET: u64 = 0;

/// Per-event status.
const PENDING: u8 = 0;
const ACCEPTED: u8 = 1;
const REJECTED: u8 = 2;

/// What the data plane answered for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// Its `messageId` was seen before (a resend of an event that was accepted).
    Duplicate,
    Rejected {
        code: String,
    },
}

/// What the caller should do with an event after [`Recorder::answer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Final: nothing more to do.
    Done,
    /// Refused for now: send it again; `attempt` resends so far (including this one).
    Retry { attempt: u8 },
}

/// Refusal codes that mean "come back later" rather than "this event is wrong".
pub const RETRYABLE_CODES: &[&str] = &["rate_limited", "overloaded", "unavailable"];

/// Where one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not sent, or sent and not finally answered.
    Pending,
    /// Accepted (or acknowledged as a duplicate of an accepted send) at this stamp.
    Accepted { at: u64 },
    /// Refused for good.
    Rejected,
}

/// Whether an accepted event should cause a webhook at the sink.
type Expect = Box<dyn Fn(u64) -> bool + Send + Sync>;

/// Everything measured during one run.
pub struct Recorder {
    origin: Instant,
    max_retries: u8,
    expect: Expect,
    /// Accepted events that should cause a webhook.
    expected: AtomicU64,
    sent: Vec<AtomicU64>,
    acked: Vec<AtomicU64>,
    arrived: Vec<AtomicU64>,
    /// FNV-1a of the first arrival's `Idempotency-Key`, to tell a repeat of one send from a
    /// second send for the same event.
    key: Vec<AtomicU64>,
    status: Vec<AtomicU8>,
    attempts: Vec<AtomicU8>,
    /// Events handed to a transport whose answer is not final yet.
    outstanding: AtomicU64,
    accepted: AtomicU64,
    duplicate_acks: AtomicU64,
    resent: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    delivered: AtomicU64,
    repeats_same_key: AtomicU64,
    repeats_other_key: AtomicU64,
    /// Sink requests that named no event of this run.
    unknown: AtomicU64,
    last_ack: AtomicU64,
    last_arrival: AtomicU64,
    /// Subtracted from an arrival's latency for [`Recorder::take_recent`]: a session
    /// workload's hold, so that a nudge's figure is its lateness after its checkout's send.
    latency_offset: u64,
    /// Latencies of the first arrivals since the last [`Recorder::take_recent`], nanoseconds.
    recent: Mutex<Vec<u64>>,
}

impl Recorder {
    pub fn new(events: u64, max_retries: u8) -> Recorder {
        let n = usize::try_from(events).unwrap_or(usize::MAX);
        let zeros = || (0..n).map(|_| AtomicU64::new(UNSET)).collect::<Vec<_>>();
        Recorder {
            origin: Instant::now(),
            max_retries,
            expect: Box::new(|_| true),
            expected: AtomicU64::new(0),
            sent: zeros(),
            acked: zeros(),
            arrived: zeros(),
            key: zeros(),
            status: (0..n).map(|_| AtomicU8::new(PENDING)).collect(),
            attempts: (0..n).map(|_| AtomicU8::new(0)).collect(),
            outstanding: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            duplicate_acks: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
            delivered: AtomicU64::new(0),
            repeats_same_key: AtomicU64::new(0),
            repeats_other_key: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            last_ack: AtomicU64::new(UNSET),
            last_arrival: AtomicU64::new(UNSET),
            latency_offset: 0,
            recent: Mutex::new(Vec::new()),
        }
    }

    /// The latencies [`Recorder::take_recent`] returns are counted from send + `offset` (a
    /// session workload's hold) instead of from the send.
    #[must_use]
    pub fn latency_offset(mut self, offset: Duration) -> Recorder {
        self.latency_offset = u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// The latencies (arrival − send − offset, nanoseconds) of the events whose first webhook
    /// arrived since the previous call, in arrival order.
    pub fn take_recent(&self) -> Vec<u64> {
        std::mem::take(
            &mut *self
                .recent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Only events for which `expect` holds should cause a webhook once accepted (by default
    /// every event): the others count neither as missing nor in [`Recorder::expected`].
    #[must_use]
    pub fn expecting(mut self, expect: impl Fn(u64) -> bool + Send + Sync + 'static) -> Recorder {
        self.expect = Box::new(expect);
        self
    }

    /// Events in the run.
    pub fn len(&self) -> u64 {
        self.sent.len() as u64
    }

    /// The current time as a stamp.
    pub fn now(&self) -> u64 {
        self.stamp(Instant::now())
    }

    /// `at` as a stamp (never [`UNSET`]).
    pub fn stamp(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1
    }

    fn slot(list: &[AtomicU64], seq: u64) -> Option<&AtomicU64> {
        list.get(usize::try_from(seq).ok()?)
    }

    /// `count` fresh events were handed to a transport.
    pub fn handed_out(&self, count: u64) {
        self.outstanding.fetch_add(count, Ordering::AcqRel);
    }

    /// Events handed out whose answer is not final yet.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Records `at` as the send time of `seqs`; a resend keeps the first send time, so a
    /// retried event's latency includes its retries.
    pub fn sent(&self, seqs: &[u64], at: u64) {
        for &seq in seqs {
            if let Some(slot) = Self::slot(&self.sent, seq) {
                let _ = slot.compare_exchange(UNSET, at, Ordering::AcqRel, Ordering::Acquire);
            }
        }
    }

    /// Records the answer for `seq` received at `at` and says whether to resend it.
    pub fn answer(&self, seq: u64, answer: &Answer, at: u64) -> Next {
        let Ok(index) = usize::try_from(seq) else {
            return Next::Done;
        };
        let (Some(status), Some(acked)) = (self.status.get(index), self.acked.get(index)) else {
            return Next::Done;
        };
        if status.load(Ordering::Acquire) != PENDING {
            // Answered already (an HTTP retry of a batch resends its accepted events too).
            return Next::Done;
        }
        match answer {
            Answer::Accepted | Answer::Duplicate => {
                if *answer == Answer::Duplicate {
                    self.duplicate_acks.fetch_add(1, Ordering::Relaxed);
                }
                acked.store(at, Ordering::Release);
                status.store(ACCEPTED, Ordering::Release);
                self.accepted.fetch_add(1, Ordering::Relaxed);
                if (self.expect)(seq) {
                    self.expected.fetch_add(1, Ordering::AcqRel);
                }
            }
            Answer::Rejected { code } => {
                let retryable = RETRYABLE_CODES.contains(&code.as_str());
                let attempts = self
                    .attempts
                    .get(index)
                    .map_or(u8::MAX, |a| a.fetch_add(1, Ordering::AcqRel));
                if retryable && attempts < self.max_retries {
                    self.resent.fetch_add(1, Ordering::Relaxed);
                    return Next::Retry {
                        attempt: attempts.saturating_add(1),
                    };
                }
                status.store(REJECTED, Ordering::Release);
                *self
                    .rejected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(code.clone())
                    .or_default() += 1;
            }
        }
        self.last_ack.fetch_max(at, Ordering::AcqRel);
        let _ = self
            .outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        Next::Done
    }

    /// A webhook for `seq` arrived at the sink with this `Idempotency-Key` hash.
    pub fn arrived(&self, seq: Option<u64>, key_hash: u64) {
        let at = self.now();
        let Some(index) = seq.and_then(|s| usize::try_from(s).ok()) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let (Some(arrived), Some(key)) = (self.arrived.get(index), self.key.get(index)) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if arrived
            .compare_exchange(UNSET, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            key.store(key_hash, Ordering::Release);
            self.delivered.fetch_add(1, Ordering::AcqRel);
            self.last_arrival.fetch_max(at, Ordering::AcqRel);
            let sent = self.sent[index].load(Ordering::Acquire);
            if sent != UNSET {
                let latency = at.saturating_sub(sent).saturating_sub(self.latency_offset);
                self.recent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(latency);
            }
        } else if key.load(Ordering::Acquire) == key_hash {
            self.repeats_same_key.fetch_add(1, Ordering::Relaxed);
        } else {
            self.repeats_other_key.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events acknowledged as accepted (or as duplicates of an accepted send).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Acquire)
    }

    /// Accepted events that should cause a webhook.
    pub fn expected(&self) -> u64 {
        self.expected.load(Ordering::Acquire)
    }

    /// Distinct events whose webhook arrived.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Acquire)
    }

    /// Where event `seq` stands.
    pub fn status(&self, seq: u64) -> Status {
        let Ok(index) = usize::try_from(seq) else {
            return Status::Pending;
        };
        match self.status.get(index).map(|s| s.load(Ordering::Acquire)) {
            Some(ACCEPTED) => Status::Accepted {
                at: self.acked[index].load(Ordering::Acquire),
            },
            Some(REJECTED) => Status::Rejected,
            _ => Status::Pending,
        }
    }

    /// When event `seq` was first sent (or due, at a target rate).
    pub fn sent_at(&self, seq: u64) -> Option<u64> {
        Self::slot(&self.sent, seq)
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&at| at != UNSET)
    }

    /// When the first webhook naming event `seq` arrived.
    pub fn arrival(&self, seq: u64) -> Option<u64> {
        Self::slot(&self.arrived, seq)
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&at| at != UNSET)
    }

    /// Everything needed for the report, read once the run is over.
    pub fn summary(&self) -> Summary {
        let mut first_send = u64::MAX;
        let mut ack_latency = Vec::new();
        let mut latency = Vec::new();
        let mut ack_times = Vec::new();
        let mut arrival_times = Vec::new();
        let mut missing = 0;
        let mut unexpected = 0;
        let mut delivered_refused = 0;
        for i in 0..self.sent.len() {
            let sent = self.sent[i].load(Ordering::Acquire);
            if sent != UNSET {
                first_send = first_send.min(sent);
            }
            let acked = self.acked[i].load(Ordering::Acquire);
            let arrived = self.arrived[i].load(Ordering::Acquire);
            let expected = (self.expect)(i as u64);
            if arrived != UNSET && !expected {
                unexpected += 1;
            }
            match self.status[i].load(Ordering::Acquire) {
                ACCEPTED => {
                    ack_latency.push(acked.saturating_sub(sent));
                    ack_times.push(acked);
                    if arrived == UNSET && expected {
                        missing += 1;
                    }
                }
                REJECTED if arrived != UNSET => delivered_refused += 1,
                _ => {}
            }
            if arrived != UNSET && sent != UNSET {
                latency.push(arrived.saturating_sub(sent));
                arrival_times.push(arrived);
            }
        }
        ack_latency.sort_unstable();
        latency.sort_unstable();
        ack_times.sort_unstable();
        arrival_times.sort_unstable();
        Summary {
            events: self.len(),
            accepted: self.accepted(),
            duplicate_acks: self.duplicate_acks.load(Ordering::Acquire),
            resent: self.resent.load(Ordering::Acquire),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            delivered: self.delivered(),
            repeats_same_key: self.repeats_same_key.load(Ordering::Acquire),
            repeats_other_key: self.repeats_other_key.load(Ordering::Acquire),
            unknown: self.unknown.load(Ordering::Acquire),
            missing,
            unexpected,
            delivered_refused,
            first_send: (first_send != u64::MAX).then_some(first_send),
            last_ack: nonzero(self.last_ack.load(Ordering::Acquire)),
            last_arrival: nonzero(self.last_arrival.load(Ordering::Acquire)),
            ack_latency,
            latency,
            ack_times,
            arrival_times,
        }
    }
}

fn nonzero(stamp: u64) -> Option<u64> {
    (stamp != UNSET).then_some(stamp)
}

/// The measurements of one run; latency and time lists are sorted, in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub events: u64,
    pub accepted: u64,
    pub duplicate_acks: u64,
    pub resent: u64,
    pub rejected: BTreeMap<String, u64>,
    pub delivered: u64,
    pub repeats_same_key: u64,
    pub repeats_other_key: u64,
    pub unknown: u64,
    pub missing: u64,
    /// Webhooks of events that should cause none (forwarding-half: filtered out).
    pub unexpected: u64,
    /// Webhooks of events whose final answer was a refusal: an HTTP batch refused with 429
    /// may have had some of its events stored before the refusal.
    pub delivered_refused: u64,
    pub first_send: Option<u64>,
    pub last_ack: Option<u64>,
    pub last_arrival: Option<u64>,
    pub ack_latency: Vec<u64>,
    pub latency: Vec<u64>,
    pub ack_times: Vec<u64>,
    pub arrival_times: Vec<u64>,
}

/// FNV-1a, 64 bits: a cheap fingerprint of an `Idempotency-Key`.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_wins_and_retryable_refusals_are_resent_up_to_the_budget() {
        let r = Recorder::new(3, 1);
        r.handed_out(3);
        r.sent(&[0, 1, 2], 10);
        assert_eq!(r.answer(0, &Answer::Accepted, 20), Next::Done);
        assert_eq!(r.answer(0, &Answer::Accepted, 30), Next::Done);
        let limited = Answer::Rejected {
            code: "rate_limited".into(),
        };
        assert_eq!(r.answer(1, &limited, 20), Next::Retry { attempt: 1 });
        assert_eq!(r.answer(1, &limited, 25), Next::Done);
        let invalid = Answer::Rejected {
            code: "invalid".into(),
        };
        assert_eq!(r.answer(2, &invalid, 20), Next::Done);
        assert_eq!(r.outstanding(), 0);
        let s = r.summary();
        assert_eq!(s.accepted, 1);
        assert_eq!(s.resent, 1);
        assert_eq!(s.rejected.get("rate_limited"), Some(&1));
        assert_eq!(s.rejected.get("invalid"), Some(&1));
        assert_eq!(s.ack_latency, vec![10]);
        assert_eq!(s.missing, 1);
    }

    #[test]
    fn repeats_are_told_apart_by_idempotency_key() {
        let r = Recorder::new(2, 0);
        r.handed_out(1);
        r.sent(&[0], 1);
        r.answer(0, &Answer::Accepted, 2);
        r.arrived(Some(0), fingerprint(b"jm_a"));
        r.arrived(Some(0), fingerprint(b"jm_a"));
        r.arrived(Some(0), fingerprint(b"jm_b"));
        r.arrived(Some(7), 0);
        r.arrived(None, 0);
        let s = r.summary();
        assert_eq!(s.delivered, 1);
        assert_eq!(s.repeats_same_key, 1);
        assert_eq!(s.repeats_other_key, 1);
        assert_eq!(s.unknown, 2);
        assert_eq!(s.missing, 0);
        assert_eq!(s.latency.len(), 1);
    }

    #[test]
    fn recent_latencies_are_taken_once_and_count_from_send_plus_the_offset() {
        let r = Recorder::new(3, 0).latency_offset(Duration::from_nanos(5));
        r.handed_out(3);
        r.sent(&[0, 1], 1);
        r.arrived(Some(0), 1);
        r.arrived(Some(0), 1);
        r.arrived(Some(2), 1);
        let recent = r.take_recent();
        assert_eq!(recent.len(), 1, "a repeat and an unsent event add nothing");
        assert!(r.take_recent().is_empty());
        r.arrived(Some(1), 1);
        assert_eq!(r.take_recent().len(), 1);
    }

    #[test]
    fn only_expected_events_count_as_missing() {
        let r = Recorder::new(4, 0).expecting(|seq| seq % 2 == 0);
        r.handed_out(4);
        r.sent(&[0, 1, 2, 3], 1);
        for seq in 0..4 {
            r.answer(seq, &Answer::Accepted, 2);
        }
        assert_eq!(r.expected(), 2);
        r.arrived(Some(0), 1);
        r.arrived(Some(3), 1);
        assert_eq!(r.status(0), Status::Accepted { at: 2 });
        assert!(r.arrival(3).is_some());
        assert_eq!(r.arrival(1), None);
        let s = r.summary();
        assert_eq!(
            s.missing, 1,
            "event 2 is expected and missing; 1 is not expected"
        );
        assert_eq!(s.unexpected, 1, "event 3 should not have caused a webhook");
    }

    #[test]
    fn a_resend_keeps_the_first_send_time() {
        let r = Recorder::new(1, 3);
        r.handed_out(1);
        r.sent(&[0], 5);
        r.sent(&[0], 9);
        r.answer(0, &Answer::Duplicate, 12);
        let s = r.summary();
        assert_eq!(s.ack_latency, vec![7]);
        assert_eq!(s.duplicate_acks, 1);
    }
}
