//! The process's metrics: counters and latency histograms that the engine, the delivery
//! dispatcher, the scheduler and the data plane record into, read two ways:
//!
//! - [`render_prometheus`]: the Prometheus text format (0.0.4), served as `GET /metrics` on the
//!   data plane's HTTP port (and `journeys dev`'s);
//! - OTLP, through the meter provider `journeys_runtime::telemetry::init` installs when an endpoint is
//!   set: counters as observable counters read at each export, histograms recorded into OTel
//!   histograms as well.
//!
//! One registry per process ([`metrics`]), whatever number of engines or dispatchers it runs.
//! Recording is a relaxed atomic add (counters, histogram buckets) or a short mutex hold
//! (labelled counters, called once per batch); nothing allocates after a label set was first
//! seen.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `journeys_events_total` | counter | `outcome` (`accepted`, `duplicate`, `rejected`), `code` (rejected only) |
//! | `journeys_entries_total` | counter | |
//! | `journeys_entries_skipped_total` | counter | `reason` |
//! | `journeys_hold_matches_total` | counter | |
//! | `journeys_exits_total` | counter | |
//! | `journeys_sends_queued_total` | counter | |
//! | `journeys_timers_fired_total` | counter | `outcome` (`applied`, `discarded`) |
//! | `journeys_timer_lateness_seconds` | histogram | |
//! | `journeys_deliveries_total` | counter | `outcome` (`sent`, `retry`, `dead`) |
//! | `journeys_delivery_duration_seconds` | histogram | |
//! | `journeys_engine_batch_duration_seconds` | histogram | |
//! | `journeys_engine_commit_duration_seconds` | histogram | |
//! | `journeys_engine_conflicts_total` | counter | |
//! | `journeys_engine_fenced_commits_total` | counter | |
//! | `journeys_engine_lease_lapses_total` | counter | |
//! | `journeys_catalog_names_refused_total` | counter | |
//! | `journeys_identity_links_total` | counter | `outcome` (`linked`, `merged`, `refused`) |
//! | `journeys_function_invocations_total` | counter | `destination`, `outcome` (`ok` or the error's name: `RetryError`, `ValidationError`, `TimeoutError`, `CpuLimitError`…) |
//! | `journeys_function_duration_seconds` | histogram | `destination` |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

/// `Content-Type` of [`render_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds (seconds) of every latency histogram: 1 ms to 1 min.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// An unlabelled monotonic counter.
#[derive(Debug)]
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Counter {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        if n > 0 {
            self.value.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The total so far.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A counter per label set. The label names are fixed; a series may leave trailing labels
/// out (an empty value omits the label), e.g. `code` on accepted events.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Label values → total, in first-recorded order. Few entries (bounded label values).
    series: Mutex<Vec<(Vec<String>, u64)>>,
}

impl CounterVec {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> CounterVec {
        CounterVec {
            name,
            help,
            labels,
            series: Mutex::new(Vec::new()),
        }
    }

    /// Adds `n` to the series with `values` (one per label name, in order; missing trailing
    /// values are empty).
    pub fn add(&self, values: &[&str], n: u64) {
        if n == 0 {
            return;
        }
        let wanted = self.padded(values);
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let found = series
            .iter_mut()
            .find(|(have, _)| have.iter().map(String::as_str).eq(wanted.iter().copied()));
        match found {
            Some((_, total)) => *total += n,
            None => series.push((wanted.iter().map(|v| (*v).to_owned()).collect(), n)),
        }
    }

    /// The total of the series with exactly `values` (zero when never recorded).
    #[must_use]
    pub fn get(&self, values: &[&str]) -> u64 {
        let wanted = self.padded(values);
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(have, _)| have.iter().map(String::as_str).eq(wanted.iter().copied()))
            .map_or(0, |(_, total)| *total)
    }

    /// Every series: its label values and total.
    #[must_use]
    pub fn series(&self) -> Vec<(Vec<String>, u64)> {
        self.snapshot()
    }

    fn padded<'a>(&self, values: &[&'a str]) -> Vec<&'a str> {
        (0..self.labels.len())
            .map(|i| values.get(i).copied().unwrap_or(""))
            .collect()
    }

    fn snapshot(&self) -> Vec<(Vec<String>, u64)> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn attributes(&self, values: &[String]) -> Vec<KeyValue> {
        self.labels
            .iter()
            .zip(values)
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| KeyValue::new(*k, v.clone()))
            .collect()
    }
}

/// A histogram of durations with fixed buckets ([`LATENCY_BOUNDS`]).
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    /// One per bound, plus `+Inf`; not cumulative.
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// The OTel instrument to record into as well, while exporting over OTLP.
    otel: RwLock<Option<opentelemetry::metrics::Histogram<f64>>>,
}

impl Histogram {
    const fn new(name: &'static str, help: &'static str) -> Histogram {
        Histogram {
            name,
            help,
            buckets: [const { AtomicU64::new(0) }; LATENCY_BOUNDS.len() + 1],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            otel: RwLock::new(None),
        }
    }

    /// Records one duration.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if let Some(otel) = self
            .otel
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            otel.record(seconds, &[]);
        }
    }

    /// How many durations were recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn export_to(&self, meter: &Meter) {
        let instrument = meter
            .f64_histogram(otel_name(self.name))
            .with_description(self.help)
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .build();
        *self.otel.write().unwrap_or_else(PoisonError::into_inner) = Some(instrument);
    }
}

/// Bucket bounds (seconds) of [`Metrics::function_duration`]: 100 µs to 1 min (a warm
/// function that fetches nothing takes well under a millisecond).
pub const FUNCTION_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// One series of a [`HistogramVec`].
#[derive(Debug, Clone)]
struct HistogramSeries {
    values: Vec<String>,
    /// One per bound, plus `+Inf`; not cumulative.
    buckets: Vec<u64>,
    sum_nanos: u64,
}

/// A histogram of durations per label set, with fixed buckets. Recording takes a short mutex
/// hold (once per function invocation).
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    series: Mutex<Vec<HistogramSeries>>,
    otel: RwLock<Option<opentelemetry::metrics::Histogram<f64>>>,
}

impl HistogramVec {
    const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> HistogramVec {
        HistogramVec {
            name,
            help,
            labels,
            bounds,
            series: Mutex::new(Vec::new()),
            otel: RwLock::new(None),
        }
    }

    /// Records one duration in the series with `values` (one per label name, in order).
    pub fn observe(&self, values: &[&str], value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        {
            let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
            let index = match series.iter().position(|s| {
                s.values
                    .iter()
                    .map(String::as_str)
                    .eq(values.iter().copied())
            }) {
                Some(index) => index,
                None => {
                    series.push(HistogramSeries {
                        values: values.iter().map(|v| (*v).to_owned()).collect(),
                        buckets: vec![0; self.bounds.len() + 1],
                        sum_nanos: 0,
                    });
                    series.len() - 1
                }
            };
            let entry = &mut series[index];
            entry.buckets[bucket] += 1;
            entry.sum_nanos = entry.sum_nanos.saturating_add(nanos);
        }
        if let Some(otel) = self
            .otel
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let attributes: Vec<KeyValue> = self
                .labels
                .iter()
                .zip(values)
                .map(|(k, v)| KeyValue::new(*k, (*v).to_owned()))
                .collect();
            otel.record(seconds, &attributes);
        }
    }

    /// How many durations the series with `values` holds.
    #[must_use]
    pub fn count(&self, values: &[&str]) -> u64 {
        self.find(values)
            .map_or(0, |s| s.buckets.iter().sum::<u64>())
    }

    /// The `q` quantile (0 < q ≤ 1) of the series with `values`, as the upper bound of the
    /// bucket it falls in (`None` without observations; the largest bound when it falls past
    /// it). Bucket precision, as Prometheus' `histogram_quantile` would give.
    #[must_use]
    pub fn quantile(&self, values: &[&str], q: f64) -> Option<Duration> {
        let series = self.find(values)?;
        let total: u64 = series.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0);
        let mut seen = 0u64;
        for (i, n) in series.buckets.iter().enumerate() {
            seen += n;
            #[allow(clippy::cast_precision_loss)]
            if seen as f64 >= rank {
                let bound = self.bounds.get(i).or(self.bounds.last()).copied()?;
                return Some(Duration::from_secs_f64(bound));
            }
        }
        self.bounds.last().map(|b| Duration::from_secs_f64(*b))
    }

    fn find(&self, values: &[&str]) -> Option<HistogramSeries> {
        self.series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|s| {
                s.values
                    .iter()
                    .map(String::as_str)
                    .eq(values.iter().copied())
            })
            .cloned()
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let series = self
            .series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for s in series {
            let labels: Vec<(&str, &str)> = self
                .labels
                .iter()
                .copied()
                .zip(s.values.iter().map(String::as_str))
                .collect();
            let mut cumulative = 0;
            for (i, n) in s.buckets.iter().enumerate() {
                cumulative += n;
                let le = self
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
                let text = label_text(labels.iter().copied().chain([("le", le.as_str())]));
                let _ = writeln!(out, "{}_bucket{text} {cumulative}", self.name);
            }
            let text = label_text(labels.iter().copied());
            #[allow(clippy::cast_precision_loss)] // seconds as a float is what the format wants
            let sum = s.sum_nanos as f64 / 1e9;
            let _ = writeln!(out, "{}_sum{text} {sum}", self.name);
            let _ = writeln!(out, "{}_count{text} {cumulative}", self.name);
        }
    }

    fn export_to(&self, meter: &Meter) {
        let instrument = meter
            .f64_histogram(otel_name(self.name))
            .with_description(self.help)
            .with_unit("s")
            .with_boundaries(self.bounds.to_vec())
            .build();
        *self.otel.write().unwrap_or_else(PoisonError::into_inner) = Some(instrument);
    }
}

/// Every series of the process; see the module docs for names and labels.
#[derive(Debug)]
pub struct Metrics {
    /// Labels `outcome`, `code`: events by outcome (`accepted`, `duplicate`, `rejected`) and,
    /// when rejected, by code. A request refused as a whole at the edge (unreadable body, bad
    /// write key) counts once.
    pub events: CounterVec,
    /// Journey instances started.
    pub entries: Counter,
    /// Label `reason`: entries not made.
    pub entries_skipped: CounterVec,
    /// Hold-until branches taken by an event.
    pub hold_matches: Counter,
    /// Instances ended by an exit rule.
    pub exits: Counter,
    /// Outbox rows written.
    pub sends_queued: Counter,
    /// Label `outcome` (`applied`, `discarded`): timers fired by the scheduler.
    pub timers_fired: CounterVec,
    /// Fired at − due at, of every fired timer.
    pub timer_lateness: Histogram,
    /// Label `outcome` (`sent`, `retry`, `dead`): webhook delivery attempts by outcome.
    pub deliveries: CounterVec,
    /// From sending a webhook request to the end of its response (or the failure).
    pub delivery_duration: Histogram,
    /// One engine lane batch: dedupe, evaluation, commit and answers.
    pub engine_batch_duration: Histogram,
    /// One engine commit transaction.
    pub engine_commit_duration: Histogram,
    /// Engine commits that lost an optimistic-concurrency check and were redone.
    pub engine_conflicts: Counter,
    /// Batches refused by the epoch fence: the node had lost a partition (its lease ran out
    /// while it was paused or cut off, and another node took it), refused by the store's fence
    /// or, for log entries, by the node's own lease clock first.
    pub engine_fenced_commits: Counter,
    /// Partitions whose lease ran out before this node renewed it (the node was paused or cut
    /// off from the store): it stopped applying them, and takes them back at a new epoch if
    /// they are still its own.
    pub engine_lease_lapses: Counter,
    /// New event names not recorded in the event catalog: it held `max_catalog_events` names.
    pub catalog_names_refused: Counter,
    /// Label `outcome` (`linked`, `merged`, `refused`): identity resolution. `linked`: an id
    /// linked to a user's profile; `merged`: a linked profile's state moved into it;
    /// `refused`: a link not made because the id already belongs to another profile.
    pub identity_links: CounterVec,
    /// Labels `destination`, `outcome`: destination function invocations, by the error's name
    /// when they failed (`ok` otherwise).
    pub function_invocations: CounterVec,
    /// Label `destination`: how long function invocations took, fetches included.
    pub function_duration: HistogramVec,
}

impl Metrics {
    const fn new() -> Metrics {
        Metrics {
            events: CounterVec::new(
                "journeys_events_total",
                "Events received, by outcome (accepted, duplicate, rejected) and rejection code.",
                &["outcome", "code"],
            ),
            entries: Counter::new("journeys_entries_total", "Journey instances started."),
            entries_skipped: CounterVec::new(
                "journeys_entries_skipped_total",
                "Journey entries not made, by reason.",
                &["reason"],
            ),
            hold_matches: Counter::new(
                "journeys_hold_matches_total",
                "Hold-until branches taken by an event.",
            ),
            exits: Counter::new("journeys_exits_total", "Instances ended by an exit rule."),
            sends_queued: Counter::new(
                "journeys_sends_queued_total",
                "Webhook sends queued in the outbox.",
            ),
            timers_fired: CounterVec::new(
                "journeys_timers_fired_total",
                "Timers fired, by outcome (applied, discarded).",
                &["outcome"],
            ),
            timer_lateness: Histogram::new(
                "journeys_timer_lateness_seconds",
                "How late timers fired (fired at minus due at).",
            ),
            deliveries: CounterVec::new(
                "journeys_deliveries_total",
                "Webhook delivery attempts, by outcome (sent, retry, dead).",
                &["outcome"],
            ),
            delivery_duration: Histogram::new(
                "journeys_delivery_duration_seconds",
                "Webhook request latency, from sending to the end of the response.",
            ),
            engine_batch_duration: Histogram::new(
                "journeys_engine_batch_duration_seconds",
                "Engine lane batches: dedupe, evaluation, commit and acknowledgements.",
            ),
            engine_commit_duration: Histogram::new(
                "journeys_engine_commit_duration_seconds",
                "Engine commit transactions.",
            ),
            engine_conflicts: Counter::new(
                "journeys_engine_conflicts_total",
                "Engine commits that conflicted with a concurrent writer and were redone.",
            ),
            engine_fenced_commits: Counter::new(
                "journeys_engine_fenced_commits_total",
                "Engine batches refused by the epoch fence: the partition had moved to another node.",
            ),
            engine_lease_lapses: Counter::new(
                "journeys_engine_lease_lapses_total",
                "Partitions whose lease ran out before this node renewed it (paused or cut off).",
            ),
            catalog_names_refused: Counter::new(
                "journeys_catalog_names_refused_total",
                "New event names not recorded: the event catalog held max_catalog_events names.",
            ),
            identity_links: CounterVec::new(
                "journeys_identity_links_total",
                "Identity resolution, by outcome: linked, merged, refused (the id belongs to another profile).",
                &["outcome"],
            ),
            function_invocations: CounterVec::new(
                "journeys_function_invocations_total",
                "Destination function invocations, by destination and outcome (ok or the error's name).",
                &["destination", "outcome"],
            ),
            function_duration: HistogramVec::new(
                "journeys_function_duration_seconds",
                "Destination function invocation time, fetches included.",
                &["destination"],
                FUNCTION_BOUNDS,
            ),
        }
    }

    fn counters(&self) -> [&Counter; 8] {
        [
            &self.entries,
            &self.hold_matches,
            &self.exits,
            &self.sends_queued,
            &self.engine_conflicts,
            &self.engine_fenced_commits,
            &self.engine_lease_lapses,
            &self.catalog_names_refused,
        ]
    }

    fn counter_vecs(&self) -> [&CounterVec; 6] {
        [
            &self.events,
            &self.identity_links,
            &self.entries_skipped,
            &self.timers_fired,
            &self.deliveries,
            &self.function_invocations,
        ]
    }

    fn histograms(&self) -> [&Histogram; 4] {
        [
            &self.timer_lateness,
            &self.delivery_duration,
            &self.engine_batch_duration,
            &self.engine_commit_duration,
        ]
    }
}

static METRICS: Metrics = Metrics::new();

/// The process's metrics.
#[must_use]
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Every series in the Prometheus text exposition format (version 0.0.4). Counters and
/// histograms with no observation yet are listed at zero, so dashboards find every name.
#[must_use]
pub fn render_prometheus() -> String {
    let m = metrics();
    let mut out = String::with_capacity(4096);
    for counter in m.counters() {
        header(&mut out, counter.name, counter.help, "counter");
        let _ = writeln!(out, "{} {}", counter.name, counter.get());
    }
    for family in m.counter_vecs() {
        header(&mut out, family.name, family.help, "counter");
        for (values, total) in family.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {total}",
                family.name,
                label_text(
                    family
                        .labels
                        .iter()
                        .copied()
                        .zip(values.iter().map(String::as_str))
                )
            );
        }
    }
    for histogram in m.histograms() {
        header(&mut out, histogram.name, histogram.help, "histogram");
        let mut cumulative = 0;
        for (i, bucket) in histogram.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
            let _ = writeln!(out, "{}_bucket{{le=\"{le}\"}} {cumulative}", histogram.name);
        }
        #[allow(clippy::cast_precision_loss)] // seconds as a float is what the format wants
        let sum = histogram.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{}_sum {sum}", histogram.name);
        // The buckets were read one by one: report their total so count == +Inf bucket.
        let _ = writeln!(out, "{}_count {cumulative}", histogram.name);
    }
    m.function_duration.render(&mut out);
    out
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` for the non-empty values, or nothing.
fn label_text<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::new();
    for (name, value) in pairs.filter(|(_, v)| !v.is_empty()) {
        text.push(if text.is_empty() { '{' } else { ',' });
        let _ = write!(text, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    if !text.is_empty() {
        text.push('}');
    }
    text
}

/// The OTLP name of a series: its Prometheus name without the `_total` suffix (a Prometheus
/// exporter adds it back to monotonic sums).
fn otel_name(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

/// Registers every series with `provider`, so that its exporter sends them over OTLP. Called
/// by `journeys_runtime::telemetry::init`; a later call moves the histograms to the newer provider.
pub fn export_to(provider: &SdkMeterProvider) {
    let meter = provider.meter("journeys");
    let m = metrics();
    for counter in m.counters() {
        meter
            .u64_observable_counter(otel_name(counter.name))
            .with_description(counter.help)
            .with_callback(move |observer| observer.observe(counter.get(), &[]))
            .build();
    }
    for family in m.counter_vecs() {
        meter
            .u64_observable_counter(otel_name(family.name))
            .with_description(family.help)
            .with_callback(move |observer| {
                for (values, total) in family.snapshot() {
                    observer.observe(total, &family.attributes(&values));
                }
            })
            .build();
    }
    for histogram in m.histograms() {
        histogram.export_to(&meter);
    }
    m.function_duration.export_to(&meter);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_keep_one_series_per_label_set() {
        let family = CounterVec::new("t_total", "test", &["outcome", "code"]);
        family.add(&["accepted"], 2);
        family.add(&["rejected", "rate_limited"], 1);
        family.add(&["accepted", ""], 3);
        family.add(&["rejected", "rate_limited"], 0);
        assert_eq!(family.get(&["accepted"]), 5);
        assert_eq!(family.get(&["rejected", "rate_limited"]), 1);
        assert_eq!(family.get(&["rejected", "invalid"]), 0);
        assert_eq!(family.snapshot().len(), 2);
    }

    #[test]
    fn labelled_histograms_give_bucket_quantiles_per_series() {
        let family = HistogramVec::new("t_seconds", "test", &["destination"], FUNCTION_BOUNDS);
        for _ in 0..98 {
            family.observe(&["a"], Duration::from_micros(400));
        }
        family.observe(&["a"], Duration::from_millis(40));
        family.observe(&["a"], Duration::from_millis(40));
        family.observe(&["b"], Duration::from_secs(2));
        assert_eq!(family.count(&["a"]), 100);
        assert_eq!(
            family.quantile(&["a"], 0.5),
            Some(Duration::from_secs_f64(0.0005))
        );
        assert_eq!(
            family.quantile(&["a"], 0.99),
            Some(Duration::from_secs_f64(0.05))
        );
        assert_eq!(
            family.quantile(&["b"], 0.5),
            Some(Duration::from_secs_f64(2.5))
        );
        assert_eq!(family.quantile(&["c"], 0.5), None);
        let mut text = String::new();
        family.render(&mut text);
        assert!(
            text.contains(r#"t_seconds_bucket{destination="a",le="0.0005"} 98"#),
            "{text}"
        );
        assert!(
            text.contains(r#"t_seconds_count{destination="a"} 100"#),
            "{text}"
        );
    }

    #[test]
    fn labels_are_escaped_and_empty_ones_left_out() {
        let text = label_text([("outcome", "rejected"), ("code", "a\"b\\c")].into_iter());
        assert_eq!(text, r#"{outcome="rejected",code="a\"b\\c"}"#);
        assert_eq!(label_text([("code", "")].into_iter()), "");
    }

    #[test]
    fn the_text_format_lists_every_series_with_cumulative_buckets() {
        let m = metrics();
        m.entries.add(2);
        m.events.add(&["rejected", "invalid"], 1);
        m.engine_commit_duration.observe(Duration::from_millis(3));
        m.engine_commit_duration.observe(Duration::from_secs(120));
        let text = render_prometheus();
        for name in [
            "journeys_events_total",
            "journeys_entries_total",
            "journeys_entries_skipped_total",
            "journeys_hold_matches_total",
            "journeys_exits_total",
            "journeys_timers_fired_total",
            "journeys_timer_lateness_seconds",
            "journeys_deliveries_total",
            "journeys_delivery_duration_seconds",
            "journeys_engine_batch_duration_seconds",
            "journeys_engine_commit_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in\n{text}"
            );
        }
        assert!(
            text.contains(r#"journeys_events_total{outcome="rejected",code="invalid"} "#),
            "{text}"
        );
        // Other tests of this binary may record too: check shape, not exact totals.
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        };
        let le5ms = line("journeys_engine_commit_duration_seconds_bucket{le=\"0.005\"}");
        let inf = line("journeys_engine_commit_duration_seconds_bucket{le=\"+Inf\"}");
        let count = line("journeys_engine_commit_duration_seconds_count");
        assert!(le5ms >= 1.0 && inf >= le5ms + 1.0 && (count - inf).abs() < f64::EPSILON);
        assert!(line("journeys_engine_commit_duration_seconds_sum") >= 120.0);
    }
}
