//! What the session workloads (abandonment, burst) measure at the sink: which sessions got a
//! nudge, how late each nudge arrived, and whether any went to a buyer.
//!
//! A nudge's lateness is its arrival at the sink minus (its checkout's acknowledgement + the
//! hold). The checkout is committed, and its hold started, before the acknowledgement, so a
//! nudge can arrive "early" by up to the acknowledgement's delay: lateness may be negative.
//! When acknowledgements lag, that figure flatters; the lateness from the checkout's send (or
//! due time, at a target rate) + the hold is reported too: what the customer sees.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;

use crate::record::{Recorder, Status, Summary};
use crate::report::{self, RunInfo, quantile};
use crate::setup::TimerStats;
use crate::workload::Workload;

/// How long after the last checkout's deadline the run keeps listening for nudges that should
/// not come (to buyers), once every expected nudge arrived.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// The outcome of the sessions of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Nudges {
    pub checkouts: u64,
    pub purchases: u64,
    /// Sessions whose checkout was accepted and whose purchase was not sent or not accepted.
    pub expected: u64,
    /// Expected nudges that arrived.
    pub received: u64,
    /// Sessions whose purchase was accepted and which got a nudge all the same.
    pub wrongly_nudged: u64,
    /// Lateness of each received expected nudge after its checkout's acknowledgement + the
    /// hold, nanoseconds, sorted.
    pub lateness: Vec<i64>,
    /// The same after its checkout's send (or due time) + the hold.
    pub lateness_from_send: Vec<i64>,
    /// The node's own figures for its timers (due → firing committed), when it serves a
    /// scheduler: what of a nudge's lateness is before the webhook's outbox row exists.
    pub timers: Option<TimerStats>,
}

impl Nudges {
    /// Reads the sessions' outcome from the recorder.
    pub fn collect(workload: &Workload, recorder: &Recorder, hold: Duration) -> Nudges {
        let hold = i64::try_from(hold.as_nanos()).unwrap_or(i64::MAX);
        let mut nudges = Nudges::default();
        for session in 0..workload.events {
            let Status::Accepted { at: accepted } = recorder.status(session) else {
                continue;
            };
            nudges.checkouts += 1;
            let bought = matches!(
                recorder.status(workload.purchase_of(session)),
                Status::Accepted { .. }
            );
            let arrival = recorder.arrival(session);
            if bought {
                nudges.purchases += 1;
                if arrival.is_some() {
                    nudges.wrongly_nudged += 1;
                }
                continue;
            }
            nudges.expected += 1;
            if let Some(arrival) = arrival {
                nudges.received += 1;
                let late = |from: u64| {
                    let late = i128::from(arrival) - i128::from(from) - i128::from(hold);
                    i64::try_from(late).unwrap_or(i64::MAX)
                };
                nudges.lateness.push(late(accepted));
                let sent = recorder.sent_at(session).unwrap_or(accepted);
                nudges.lateness_from_send.push(late(sent));
            }
        }
        nudges.lateness.sort_unstable();
        nudges.lateness_from_send.sort_unstable();
        nudges
    }

    pub fn missing(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

/// After the last answer: waits until every expected nudge arrived and the last deadline is
/// `DEADLINE_GRACE` behind (so a nudge to a buyer would have been seen), or until
/// `hold + timeout` has passed.
pub async fn wait(workload: &Workload, recorder: &Recorder, hold: Duration, timeout: Duration) {
    let started = Instant::now();
    let until = started + hold + timeout;
    let quiet_after = started + hold + DEADLINE_GRACE;
    while Instant::now() < until {
        if Instant::now() >= quiet_after {
            let nudges = Nudges::collect(workload, recorder, hold);
            if nudges.received >= nudges.expected {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::cast_precision_loss, reason = "milliseconds for display")]
fn ms(nanos: i64) -> f64 {
    nanos as f64 / 1e6
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The lateness quantiles as text, in milliseconds.
fn lateness_line(sorted: &[i64]) -> String {
    let q = |p| quantile(sorted, p).map_or_else(|| "-".to_owned(), |v| format!("{:.1}", ms(v)));
    format!(
        "min {} / p50 {} / p99 {} / max {} ms",
        q(0.0),
        q(0.5),
        q(0.99),
        q(1.0)
    )
}

/// The node's timer figures: the lateness up to the firing's commit, split into the wait before
/// the engine call and the call.
fn timers_line(out: &mut String, t: &TimerStats) {
    let _ = writeln!(
        out,
        "  timers (node)  {} fired, due -> committed p50 {:.1} / p99 {:.1} ms; of which due -> \
         handed to the engine p99 {:.1} ms, one engine call p99 {:.1} ms (the rest of a \
         nudge's lateness is outbox -> webhook)",
        t.fired,
        duration_ms(t.p50),
        duration_ms(t.p99),
        duration_ms(t.wait_p99),
        duration_ms(t.apply_p99)
    );
}

/// The report of a session workload plus its `RESULT key=value ...` line.
pub fn render(info: &RunInfo, s: &Summary, n: &Nudges) -> String {
    let mut out = report::header(info);
    let acked = report::acknowledged(&mut out, s);
    let _ = writeln!(
        out,
        "  sessions       {} checkouts accepted, {} bought (purchase accepted)",
        n.checkouts, n.purchases
    );
    let _ = writeln!(
        out,
        "  nudges         {} expected, {} received, {} missing",
        n.expected,
        n.received,
        n.missing()
    );
    let _ = writeln!(out, "  WRONGLY NUDGED {} buyers", n.wrongly_nudged);
    let _ = writeln!(
        out,
        "  nudge late     {} (arrival - (checkout acked + hold))",
        lateness_line(&n.lateness)
    );
    let _ = writeln!(
        out,
        "                 {} (arrival - (checkout sent + hold))",
        lateness_line(&n.lateness_from_send)
    );
    if let Some(t) = &n.timers {
        timers_line(&mut out, t);
    }
    let _ = writeln!(
        out,
        "  send -> ack    {}",
        report::latency_line(&s.ack_latency)
    );
    report::duplicates(&mut out, s);
    report::refusals(&mut out, s);
    let q = |p| quantile(&n.lateness, p).map_or(f64::NAN, ms);
    let sent = |p| quantile(&n.lateness_from_send, p).map_or(f64::NAN, ms);
    let _ = writeln!(
        out,
        "RESULT workload={} target={} transport={} events={} accepted={} acked_per_s={:.0} \
         checkouts={} purchases={} nudges_expected={} nudges_received={} wrongly_nudged={} \
         missing={} late_p50_ms={:.1} late_p99_ms={:.1} late_max_ms={:.1} \
         late_from_send_p50_ms={:.1} late_from_send_p99_ms={:.1} late_from_send_max_ms={:.1} \
         duplicates={} refused={}{}",
        info.workload.name(),
        info.target.replace(' ', "_"),
        info.transport,
        s.accepted + s.rejected.values().sum::<u64>(),
        s.accepted,
        acked,
        n.checkouts,
        n.purchases,
        n.expected,
        n.received,
        n.wrongly_nudged,
        n.missing(),
        q(0.5),
        q(0.99),
        q(1.0),
        sent(0.5),
        sent(0.99),
        sent(1.0),
        s.repeats_same_key + s.repeats_other_key,
        s.rejected.values().sum::<u64>(),
        n.timers.map_or_else(String::new, |t| format!(
            " timer_p50_ms={:.1} timer_p99_ms={:.1} timer_wait_p99_ms={:.1}",
            duration_ms(t.p50),
            duration_ms(t.p99),
            duration_ms(t.wait_p99)
        )),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::WorkloadKind;
    use crate::record::Answer;

    #[test]
    fn buyers_with_a_nudge_are_counted_apart_from_the_expected_nudges() {
        let w = Workload::new(WorkloadKind::Abandonment, 4, 4);
        let r = Recorder::new(w.slots(), 0);
        // Sessions 0 and 2 buy (`Workload::buys`); 1 and 3 do not.
        assert!(w.buys(0) && !w.buys(1) && w.buys(2) && !w.buys(3));
        r.handed_out(6);
        r.sent(&[0, 1, 2, 3], 500);
        for seq in 0..4 {
            r.answer(seq, &Answer::Accepted, 1_000);
        }
        r.answer(w.purchase_of(0), &Answer::Accepted, 2_000);
        let refused = Answer::Rejected {
            code: "invalid".into(),
        };
        // Session 2's purchase is refused: it is owed a nudge after all.
        r.answer(w.purchase_of(2), &refused, 2_000);
        r.arrived(Some(0), 7);
        r.arrived(Some(1), 7);
        let n = Nudges::collect(&w, &r, Duration::ZERO);
        assert_eq!(n.checkouts, 4);
        assert_eq!(n.purchases, 1);
        assert_eq!(n.expected, 3);
        assert_eq!(n.received, 1);
        assert_eq!(n.missing(), 2);
        assert_eq!(n.wrongly_nudged, 1);
        assert_eq!(n.lateness.len(), 1);
        assert_eq!(
            n.lateness_from_send[0] - n.lateness[0],
            500,
            "sent 500 ns before the acknowledgement"
        );
    }
}
