//! Command-line options of `journeys-load`.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// How events reach the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// One bidirectional `IngestService.Ingest` stream, several batch requests awaiting acks.
    Grpc,
    /// Segment-compatible `POST /v1/batch` over several keep-alive connections.
    Http,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// What a run sends and which journey it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadKind {
    /// Every `load_event` enters a forwarding journey and causes one webhook.
    Forwarding,
    /// `form_submitted` events of which every other one (`matches: true`) passes the entry
    /// filter of a journey that sends a 4-field mapping.
    ForwardingHalf,
    /// `checkout_started` sessions held until their `purchase_completed` (half of them buy,
    /// `--purchase-after-ms` later) or `--hold-secs`, when a nudge webhook goes out.
    Abandonment,
    /// The abandonment journey under one burst: every checkout in one batch, the purchases in
    /// one batch after `--purchase-after-ms`.
    Burst,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Forwarding => "forwarding",
            WorkloadKind::ForwardingHalf => "forwarding-half",
            WorkloadKind::Abandonment => "abandonment",
            WorkloadKind::Burst => "burst",
        }
    }

    /// Whether the run is made of checkout sessions (abandonment journey).
    pub fn sessions(self) -> bool {
        matches!(self, WorkloadKind::Abandonment | WorkloadKind::Burst)
    }
}

/// Streams events into a Journeys stack through a journey and measures what arrives at its own
/// webhook sink.
#[derive(Debug, Parser)]
#[command(name = "journeys-load", version, about)]
pub struct Args {
    /// Start in this process, on 127.0.0.1:0, the node `journeys serve` runs (every role) over
    /// a fresh database (`--database-url`) instead of targeting a running one.
    #[arg(long, requires = "database_url", conflicts_with_all = ["grpc_addr", "http_addr"])]
    pub embedded: bool,

    /// With `--embedded`: `sqlite://` (a fresh file in the temp directory), `sqlite://PATH` (a
    /// file that must not exist yet) or `mysql://user[:password]@host:port` (a database named
    /// `journeys_bench_<random>` is created on that server and dropped afterwards).
    #[arg(long)]
    pub database_url: Option<String>,

    /// gRPC address of a running stack (control plane and ingestion on one port, as in
    /// `journeys dev` and `journeys serve`).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP address of a running stack's Segment-compatible API (`--transport http`).
    #[arg(long, default_value = "127.0.0.1:8088")]
    pub http_addr: SocketAddr,

    /// Admin token of a running stack's control plane (`authorization: Bearer`), if it has one.
    #[arg(long, env = "JOURNEYS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    #[arg(long, value_enum, default_value_t = Transport::Grpc)]
    pub transport: Transport,

    /// What to send and which journey to measure.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Forwarding)]
    pub workload: WorkloadKind,

    /// Events to send (abandonment, burst: checkouts, to which the purchases are added).
    /// Default: forwarding 100,000; forwarding-half 20,000; abandonment 10,000; burst 300.
    #[arg(long)]
    pub events: Option<u64>,

    /// Events per request (gRPC batch message or HTTP `/v1/batch` body); at most 2,500, and an
    /// HTTP body must stay under 500 KB (about 2,000 of these events). Default: forwarding
    /// 500, forwarding-half and abandonment 100; burst sends every checkout in one request.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=2500))]
    pub batch: Option<u64>,

    /// gRPC: requests sent on the stream and not yet acknowledged, at most. Default:
    /// forwarding 16, the other workloads 64.
    #[arg(long)]
    pub in_flight: Option<usize>,

    /// HTTP: concurrent connections, each with one request outstanding. Default: forwarding
    /// 8, the other workloads 64.
    #[arg(long)]
    pub connections: Option<usize>,

    /// Distinct userIds the events are spread over (round robin). The data plane limits each
    /// profile to 25 events/s and 25 active instances by default, so keep `rate / profiles`
    /// well below that. Default: forwarding 10,000; forwarding-half 2,000; abandonment 1,000;
    /// burst 37.
    #[arg(long)]
    pub profiles: Option<u64>,

    /// Target rate in events/s (abandonment: checkouts/s; purchases come on top); unset sends
    /// as fast as acknowledgements allow. At a target rate, an event's send time is when it
    /// was due, so a generator falling behind shows up in the latency instead of hiding it.
    #[arg(long)]
    pub rate: Option<f64>,

    /// Abandonment, burst: how long the journey holds a checkout for its purchase before it
    /// sends the nudge (at least 1 s; the embedded node allows short durations). Default:
    /// abandonment 5, burst 3.
    #[arg(long)]
    pub hold_secs: Option<u64>,

    /// Abandonment, burst: how long after its checkout was sent a buying session sends its
    /// `purchase_completed`. Default: abandonment 1,000, burst 500.
    #[arg(long)]
    pub purchase_after_ms: Option<u64>,

    /// Seconds to wait after the last acknowledgement for the webhooks still due; what has not
    /// arrived by then is reported missing.
    #[arg(long, default_value_t = 60)]
    pub delivery_timeout: u64,

    /// Resends of an event refused with a retryable code (`rate_limited`, `overloaded`,
    /// `unavailable`; HTTP 429 / 503) before it counts as refused. Resends back off
    /// exponentially from 50 ms, or wait for the server's `Retry-After` (at most 1 s).
    #[arg(long, default_value_t = 5)]
    pub max_retries: u8,

    /// With `--embedded`: worker threads of the stack's own tokio runtime (the generator and
    /// the sink run on another runtime, as a separate process would).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,

    /// With `--embedded`: keep the database afterwards (to inspect it).
    #[arg(long)]
    pub keep_database: bool,

    /// No per-second progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Instead of a load run: fill the abandonment journey (an hour's hold) with `--events`
    /// checkouts over `--profiles` users (default: two per user), every other one bought, then
    /// request each web console page this many times and print how fast it answered.
    #[arg(long, conflicts_with_all = ["workload", "transport", "rate"])]
    pub console_pages: Option<usize>,
}

/// The options of a run with the workload's defaults filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workload: WorkloadKind,
    pub events: u64,
    pub profiles: u64,
    pub batch: u64,
    pub in_flight: usize,
    pub connections: usize,
    pub rate: Option<f64>,
    pub hold_secs: u64,
    pub purchase_after_ms: u64,
}

impl Args {
    /// The options with the workload's defaults, checked ([`Args::validate`] first).
    pub fn settings(&self) -> anyhow::Result<Settings> {
        self.validate()?;
        let kind = self.workload;
        let (events, profiles, batch, concurrency, hold, after) = match kind {
            WorkloadKind::Forwarding => (100_000, 10_000, 500, (16, 8), 5, 1000),
            WorkloadKind::ForwardingHalf => (20_000, 2_000, 100, (64, 64), 5, 1000),
            WorkloadKind::Abandonment => (10_000, 1_000, 100, (64, 64), 5, 1000),
            WorkloadKind::Burst => (300, 37, 300, (64, 64), 3, 500),
        };
        // The console measurement: 20,000 instances, two per user by default.
        let (events, profiles) = match self.console_pages {
            Some(_) => {
                let events = self.events.unwrap_or(20_000);
                (events, (events / 2).max(1))
            }
            None => (self.events.unwrap_or(events), profiles),
        };
        let batch = if kind == WorkloadKind::Burst {
            anyhow::ensure!(
                self.batch.is_none() && self.rate.is_none(),
                "--workload burst sends every checkout in one request: no --batch or --rate"
            );
            anyhow::ensure!(
                events <= 2500,
                "--workload burst sends every checkout in one request: at most 2,500 --events"
            );
            events
        } else {
            self.batch.unwrap_or(batch)
        };
        let settings = Settings {
            workload: kind,
            events,
            profiles: self.profiles.unwrap_or(profiles),
            batch,
            in_flight: self.in_flight.unwrap_or(concurrency.0),
            connections: self.connections.unwrap_or(concurrency.1),
            rate: self.rate,
            hold_secs: self.hold_secs.unwrap_or(hold),
            purchase_after_ms: self.purchase_after_ms.unwrap_or(after),
        };
        anyhow::ensure!(settings.events > 0, "--events must be at least 1");
        anyhow::ensure!(settings.profiles > 0, "--profiles must be at least 1");
        anyhow::ensure!(settings.in_flight > 0, "--in-flight must be at least 1");
        anyhow::ensure!(settings.connections > 0, "--connections must be at least 1");
        anyhow::ensure!(settings.hold_secs > 0, "--hold-secs must be at least 1");
        anyhow::ensure!(
            !kind.sessions() || settings.purchase_after_ms < settings.hold_secs * 1000,
            "--purchase-after-ms must be shorter than the hold, or no purchase is in time"
        );
        Ok(settings)
    }

    /// Checks what clap cannot express.
    fn validate(&self) -> anyhow::Result<()> {
        let session_only = self.hold_secs.is_some() || self.purchase_after_ms.is_some();
        anyhow::ensure!(
            !session_only || self.workload.sessions(),
            "--hold-secs and --purchase-after-ms apply to --workload abandonment and burst only"
        );
        anyhow::ensure!(
            self.server_threads > 0,
            "--server-threads must be at least 1"
        );
        if let Some(rate) = self.rate {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "--rate must be a positive number of events per second"
            );
        }
        Ok(())
    }
}
