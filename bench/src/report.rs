//! Turning a [`Summary`] into the printed report, and the per-second progress lines.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::WorkloadKind;
use crate::record::{Recorder, Summary};

/// What the run was, for the report header.
pub struct RunInfo {
    pub workload: WorkloadKind,
    /// Session workloads: the hold and the purchases' delay, for the header.
    pub sessions: Option<(Duration, Duration)>,
    pub target: String,
    pub transport: &'static str,
    pub events: u64,
    pub profiles: u64,
    pub batch: u64,
    pub concurrency: String,
    pub rate: Option<f64>,
}

/// The `p`-th quantile (0..=1) of sorted `values`, nearest rank.
pub fn quantile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "an index into a list far shorter than 2^52"
    )]
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// `count` events over `nanos`, per second.
#[allow(
    clippy::cast_precision_loss,
    reason = "rates need no integer precision"
)]
fn per_sec(count: u64, nanos: u64) -> f64 {
    if nanos == 0 {
        return 0.0;
    }
    count as f64 * 1e9 / nanos as f64
}

/// The rate over the middle 80 % of sorted completion times: leaves out the ramp-up and the
/// tail, which is what a sustained rate means.
fn steady_rate(times: &[u64]) -> Option<f64> {
    if times.len() < 10 {
        return None;
    }
    let low = quantile(times, 0.1)?;
    let high = quantile(times, 0.9)?;
    let count = (times.len() * 8 / 10) as u64;
    Some(per_sec(count, high.saturating_sub(low)))
}

#[allow(clippy::cast_precision_loss, reason = "milliseconds for display")]
fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

pub fn latency_line(sorted: &[u64]) -> String {
    let q = |p| quantile(sorted, p).map_or_else(|| "-".to_owned(), |v| format!("{:.1}", ms(v)));
    format!(
        "p50 {} / p95 {} / p99 {} / max {} ms",
        q(0.5),
        q(0.95),
        q(0.99),
        q(1.0)
    )
}

/// The first line of a report: what ran, where, how.
pub fn header(info: &RunInfo) -> String {
    let rate = info
        .rate
        .map_or_else(|| "max".to_owned(), |r| format!("{r:.0}/s"));
    let workload = match info.workload {
        WorkloadKind::Forwarding => String::new(),
        other => format!(" workload {},", other.name()),
    };
    let (events, sessions) = match info.sessions {
        Some((hold, after)) => (
            "checkouts",
            format!(
                ", hold {} s, purchases {} ms after their checkout",
                hold.as_secs(),
                after.as_millis()
            ),
        ),
        None => ("events", String::new()),
    };
    format!(
        "journeys-load: {} over {},{workload} {} {events}, {} profiles, batch {}, {}, rate {}{sessions}\n",
        info.target, info.transport, info.events, info.profiles, info.batch, info.concurrency, rate
    )
}

/// The acknowledged line; returns acknowledged events/s.
pub fn acknowledged(out: &mut String, s: &Summary) -> f64 {
    let first = s.first_send.unwrap_or(0);
    let ack_span = s.last_ack.map_or(0, |t| t.saturating_sub(first));
    let acked_per_sec = per_sec(s.accepted, ack_span);
    let _ = writeln!(
        out,
        "  acknowledged   {:>9} accepted in {:.2} s = {:.0} events/s (steady {})",
        s.accepted,
        ms(ack_span) / 1e3,
        acked_per_sec,
        steady_rate(&s.ack_times).map_or_else(|| "-".to_owned(), |r| format!("{r:.0}/s"))
    );
    acked_per_sec
}

/// The duplicates line.
pub fn duplicates(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "  duplicates     {} (same Idempotency-Key {}, another key {})",
        s.repeats_same_key + s.repeats_other_key,
        s.repeats_same_key,
        s.repeats_other_key
    );
}

/// The refusals line.
pub fn refusals(out: &mut String, s: &Summary) {
    let rejected: u64 = s.rejected.values().sum();
    let refusals = if s.rejected.is_empty() {
        "none".to_owned()
    } else {
        s.rejected
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "  refused        {rejected} ({refusals}; webhooks of refused events {}); resent {}; \
         DUPLICATE acks {}; unknown webhooks {}",
        s.delivered_refused, s.resent, s.duplicate_acks, s.unknown
    );
}

/// The human-readable report of a forwarding workload plus one `RESULT key=value ...` line
/// for scripts.
pub fn render(info: &RunInfo, s: &Summary) -> String {
    let mut out = header(info);
    let acked_per_sec = acknowledged(&mut out, s);
    let first = s.first_send.unwrap_or(0);
    let delivery_span = s.last_arrival.map_or(0, |t| t.saturating_sub(first));
    let delivered_per_sec = per_sec(s.delivered, delivery_span);
    let _ = writeln!(
        out,
        "  delivered      {:>9} webhooks in {:.2} s = {:.0} webhooks/s (steady {})",
        s.delivered,
        ms(delivery_span) / 1e3,
        delivered_per_sec,
        steady_rate(&s.arrival_times).map_or_else(|| "-".to_owned(), |r| format!("{r:.0}/s"))
    );
    let _ = writeln!(out, "  send -> ack    {}", latency_line(&s.ack_latency));
    let _ = writeln!(out, "  event -> hook  {}", latency_line(&s.latency));
    if info.workload != WorkloadKind::Forwarding {
        let _ = writeln!(
            out,
            "  UNEXPECTED     {} (webhooks of events the entry filter should have kept out)",
            s.unexpected
        );
    }
    duplicates(&mut out, s);
    let _ = writeln!(out, "  missing        {}", s.missing);
    refusals(&mut out, s);
    result_line(&mut out, info, s, acked_per_sec, delivered_per_sec);
    out
}

/// The one-line `RESULT key=value ...` summary that scripts read.
fn result_line(
    out: &mut String,
    info: &RunInfo,
    s: &Summary,
    acked_per_sec: f64,
    delivered_per_sec: f64,
) {
    let rejected: u64 = s.rejected.values().sum();
    let q = |v: &[u64], p| quantile(v, p).map_or(f64::NAN, ms);
    let _ = writeln!(
        *out,
        "RESULT target={} transport={} events={} accepted={} acked_per_s={:.0} \
         delivered_per_s={:.0} steady_acked_per_s={:.0} steady_delivered_per_s={:.0} \
         ack_p50_ms={:.1} ack_p99_ms={:.1} p50_ms={:.1} p95_ms={:.1} p99_ms={:.1} max_ms={:.1} \
         duplicates={} missing={} refused={} workload={} unexpected={}",
        info.target.replace(' ', "_"),
        info.transport,
        s.events,
        s.accepted,
        acked_per_sec,
        delivered_per_sec,
        steady_rate(&s.ack_times).unwrap_or(f64::NAN),
        steady_rate(&s.arrival_times).unwrap_or(f64::NAN),
        q(&s.ack_latency, 0.5),
        q(&s.ack_latency, 0.99),
        q(&s.latency, 0.5),
        q(&s.latency, 0.95),
        q(&s.latency, 0.99),
        q(&s.latency, 1.0),
        s.repeats_same_key + s.repeats_other_key,
        s.missing,
        rejected,
        info.workload.name(),
        s.unexpected
    );
}

/// Seconds of arrivals the progress line's p99 covers.
const PROGRESS_WINDOW: usize = 10;

/// Prints acknowledged and delivered counts and rates to stderr once a second until aborted,
/// with the p99 latency of the webhooks that arrived in the last ten seconds (session
/// workloads: the nudges' lateness after their checkout's send + the hold).
pub async fn progress(recorder: Arc<Recorder>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    let (mut acked, mut delivered, mut second) = (0, 0, 0);
    let mut window: VecDeque<Vec<u64>> = VecDeque::with_capacity(PROGRESS_WINDOW + 1);
    loop {
        ticks.tick().await;
        second += 1;
        let (a, d) = (recorder.accepted(), recorder.delivered());
        window.push_back(recorder.take_recent());
        if window.len() > PROGRESS_WINDOW {
            window.pop_front();
        }
        let mut recent: Vec<u64> = window.iter().flatten().copied().collect();
        recent.sort_unstable();
        let p99 =
            quantile(&recent, 0.99).map_or_else(|| "-".to_owned(), |v| format!("{:.1}", ms(v)));
        eprintln!(
            "{second:>4}s  acked {a:>9} (+{:>6}/s)  delivered {d:>9} (+{:>6}/s)  backlog {:>7}  \
             p99(10s) {p99} ms",
            a - acked,
            d.saturating_sub(delivered),
            a.saturating_sub(d)
        );
        (acked, delivered) = (a, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<u64>(&[], 0.5), None);
        assert_eq!(quantile(&[7], 0.99), Some(7));
    }

    #[test]
    fn steady_rate_ignores_ramp_up_and_tail() {
        // 100 completions one millisecond apart, after a slow first one.
        let mut times: Vec<u64> = (0..100).map(|i| 1_000_000_000 + i * 1_000_000).collect();
        times[0] = 0;
        let rate = steady_rate(&times).unwrap();
        assert!((rate - 1000.0).abs() < 20.0, "{rate}");
        assert_eq!(steady_rate(&times[..5]), None);
    }

    #[test]
    fn the_report_names_every_figure() {
        let s = Summary {
            events: 2,
            accepted: 2,
            delivered: 2,
            first_send: Some(1),
            last_ack: Some(1_000_001),
            last_arrival: Some(2_000_001),
            latency: vec![1_000_000, 2_000_000],
            ack_latency: vec![500_000, 1_000_000],
            ..Summary::default()
        };
        let info = RunInfo {
            workload: WorkloadKind::Forwarding,
            sessions: None,
            target: "embedded sqlite".into(),
            transport: "grpc",
            events: 2,
            profiles: 1,
            batch: 2,
            concurrency: "16 in flight".into(),
            rate: None,
        };
        let text = render(&info, &s);
        assert!(text.contains("2000 events/s"), "{text}");
        assert!(text.contains("1000 webhooks/s"), "{text}");
        assert!(text.contains("p99 2.0"), "{text}");
        assert!(text.contains("missing        0"), "{text}");
        assert!(
            text.contains("RESULT target=embedded_sqlite transport=grpc"),
            "{text}"
        );
    }
}
