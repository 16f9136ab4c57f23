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

/// Streams events into a Journeys stack through a forwarding journey and measures what arrives
/// at its own webhook sink.
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

    /// Events to send; each enters the forwarding journey once and causes one webhook.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,

    /// Events per request (gRPC batch message or HTTP `/v1/batch` body); at most 2,500, and an
    /// HTTP body must stay under 500 KB (about 2,000 of these events).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=2500))]
    pub batch: u64,

    /// gRPC: requests sent on the stream and not yet acknowledged, at most.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,

    /// HTTP: concurrent connections, each with one request outstanding.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,

    /// Distinct userIds the events are spread over (round robin). The data plane limits each
    /// profile to 25 events/s by default, so keep `rate / profiles` well below that.
    #[arg(long, default_value_t = 10_000)]
    pub profiles: u64,

    /// Target rate in events/s; unset sends as fast as acknowledgements allow. At a target
    /// rate, an event's send time is when it was due, so a generator falling behind shows up
    /// in the latency instead of hiding it.
    #[arg(long)]
    pub rate: Option<f64>,

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
}

impl Args {
    /// Checks what clap cannot express.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.events > 0, "--events must be at least 1");
        anyhow::ensure!(self.profiles > 0, "--profiles must be at least 1");
        anyhow::ensure!(self.in_flight > 0, "--in-flight must be at least 1");
        anyhow::ensure!(self.connections > 0, "--connections must be at least 1");
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
