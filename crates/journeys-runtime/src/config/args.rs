//! Command-line flags for the configuration, flattened into each binary's clap parser.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::LogFormat;

/// Configuration flags shared by every Journeys binary (`#[command(flatten)]`).
///
/// Every field is optional: a flag given on the command line wins over the environment, the
/// config file and the defaults; an absent flag leaves the lower layers alone. The environment is
/// read by [`super::load`], not by clap, so that its errors name the variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file, applied over the defaults and under the environment [env: JOURNEYS_CONFIG]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (secrets masked) as TOML and exit
    #[arg(long)]
    pub print_config: bool,

    /// Database URL, `mysql://…` or `sqlite://…` [env: JOURNEYS_DATABASE_URL]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,

    /// gRPC listen address [env: JOURNEYS_GRPC_ADDR]
    #[arg(long, value_name = "IP:PORT")]
    pub grpc_addr: Option<SocketAddr>,

    /// HTTP listen address of the Segment-compatible API [env: JOURNEYS_HTTP_ADDR]
    #[arg(long, value_name = "IP:PORT")]
    pub http_addr: Option<SocketAddr>,

    /// Bearer token for the control plane and scheduler; prefer the environment, flags are
    /// visible to other local users [env: JOURNEYS_ADMIN_TOKEN]
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,

    /// Allow second-scale delays and holds (tests, demos) [env: JOURNEYS_ALLOW_SHORT_DURATIONS]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub allow_short_durations: Option<bool>,

    /// Log format [env: JOURNEYS_LOG_FORMAT]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// OTLP/gRPC endpoint for traces and metrics [env: OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// How long event messageIds are remembered for de-duplication, in seconds
    /// [env: JOURNEYS_DEDUPE_WINDOW_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub dedupe_window_secs: Option<u64>,

    /// This node's id among the nodes sharing a store (default: the host name)
    /// [env: JOURNEYS_NODE_ID]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,

    /// Profile partitions of the deployment, 1-4096; the same on every node
    /// [env: JOURNEYS_PARTITIONS]
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,

    /// NATS server whose JetStream carries events between the replicas (unset: one node
    /// applies everything in process) [env: JOURNEYS_NATS_URL]
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,

    /// JetStream stream of the partition log; the same on every node [env: JOURNEYS_NATS_STREAM]
    #[arg(long, value_name = "NAME")]
    pub nats_stream: Option<String>,

    /// Networks (CIDRs, IPs) and host names webhooks may reach besides global addresses,
    /// comma-separated, e.g. 10.0.0.0/8,hooks.internal [env: JOURNEYS_DESTINATION_ALLOW]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub destination_allow: Option<Vec<String>>,

    /// Most traits of one profile; an identify adding traits past it is rejected
    /// [env: JOURNEYS_MAX_PROFILE_TRAITS]
    #[arg(long, value_name = "N")]
    pub max_profile_traits: Option<usize>,

    /// Most bytes of one profile's traits as JSON; an identify growing them past it is rejected
    /// [env: JOURNEYS_MAX_PROFILE_TRAITS_BYTES]
    #[arg(long, value_name = "BYTES")]
    pub max_profile_traits_bytes: Option<usize>,

    /// Most active instances of one profile across journeys; an event that would start
    /// another is rejected [env: JOURNEYS_MAX_ACTIVE_INSTANCES_PER_PROFILE]
    #[arg(long, value_name = "N")]
    pub max_active_instances_per_profile: Option<usize>,

    /// Most events of one profile per second, 0 for no limit
    /// [env: JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC]
    #[arg(long, value_name = "N")]
    pub max_events_per_profile_per_sec: Option<u32>,

    /// How long a failing send is retried before it is dead-lettered, in seconds
    /// [env: JOURNEYS_RETRY_BUDGET_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub retry_budget_secs: Option<u64>,

    /// Ceiling of the first retry's backoff, in milliseconds (doubles per attempt)
    /// [env: JOURNEYS_RETRY_BACKOFF_BASE_MS]
    #[arg(long, value_name = "MS")]
    pub retry_backoff_base_ms: Option<u64>,

    /// Largest backoff between two attempts of a send, in seconds
    /// [env: JOURNEYS_RETRY_BACKOFF_MAX_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub retry_backoff_max_secs: Option<u64>,

    /// Longest Retry-After of a destination that is honoured, in seconds
    /// [env: JOURNEYS_RETRY_AFTER_MAX_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub retry_after_max_secs: Option<u64>,

    /// Webhook requests in flight at once to one destination (1–256)
    /// [env: JOURNEYS_MAX_SENDS_IN_FLIGHT_PER_DESTINATION]
    #[arg(long, value_name = "N")]
    pub max_sends_in_flight_per_destination: Option<usize>,

    /// Threads running destination functions, one engine each; 0 = four per core (0–256)
    /// [env: JOURNEYS_FUNCTION_WORKERS]
    #[arg(long, value_name = "N")]
    pub function_workers: Option<usize>,

    /// CPU time one function invocation may use, in milliseconds (1–60,000)
    /// [env: JOURNEYS_FUNCTION_CPU_MS]
    #[arg(long, value_name = "MS")]
    pub function_cpu_ms: Option<u64>,

    /// Memory of one function engine, in MiB (1–4096) [env: JOURNEYS_FUNCTION_MEMORY_MB]
    #[arg(long, value_name = "MIB")]
    pub function_memory_mb: Option<usize>,

    /// Event names the event catalog records from events (1–1,000,000)
    /// [env: JOURNEYS_MAX_CATALOG_EVENTS]
    #[arg(long, value_name = "N")]
    pub max_catalog_events: Option<usize>,

    /// Write keys the data plane keeps resolved in memory, and as many unknown keys
    /// (1–10,000,000) [env: JOURNEYS_WRITE_KEY_CACHE_SIZE]
    #[arg(long, value_name = "N")]
    pub write_key_cache_size: Option<usize>,

    /// Profiles a partition owner keeps in memory, least recently used out; 0 keeps none
    /// (0–10,000,000) [env: JOURNEYS_PROFILE_CACHE_SIZE]
    #[arg(long, value_name = "N")]
    pub profile_cache_size: Option<usize>,

    /// Return-to-start passes one hold-until step allows per instance
    /// [env: JOURNEYS_MAX_RETURN_TO_START_PASSES]
    #[arg(long, value_name = "N")]
    pub max_return_to_start_passes: Option<u32>,

    /// Longest unique-identifier value of an entry event, in characters
    /// [env: JOURNEYS_MAX_UNIQUE_VALUE_CHARS]
    #[arg(long, value_name = "CHARS")]
    pub max_unique_value_chars: Option<usize>,

    /// Shortest delay step a journey may define, in seconds [env: JOURNEYS_MIN_DELAY_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub min_delay_secs: Option<u64>,

    /// Longest delay step a journey may define, in seconds [env: JOURNEYS_MAX_DELAY_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub max_delay_secs: Option<u64>,

    /// Shortest maximum hold of a hold-until step, in seconds [env: JOURNEYS_MIN_HOLD_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub min_hold_secs: Option<u64>,

    /// Longest maximum hold of a hold-until step, in seconds [env: JOURNEYS_MAX_HOLD_SECS]
    #[arg(long, value_name = "SECONDS")]
    pub max_hold_secs: Option<u64>,

    /// Days an instance lives at most before housekeeping ends it
    /// [env: JOURNEYS_MAX_INSTANCE_LIFETIME_DAYS]
    #[arg(long, value_name = "DAYS")]
    pub max_instance_lifetime_days: Option<u64>,

    /// Days a finished instance is kept before housekeeping deletes it with its timeline (0:
    /// at the next housekeeping run) [env: JOURNEYS_INSTANCE_RETENTION_DAYS]
    #[arg(long, value_name = "DAYS")]
    pub instance_retention_days: Option<u64>,
}
