//! Service configuration: one [`Config`] struct shared by every Journeys process.
//!
//! Values are layered, later layers winning: built-in defaults for the [`Service`] → an optional
//! TOML file (`--config` / `JOURNEYS_CONFIG`) → `JOURNEYS_*` environment variables → command-line
//! flags ([`ConfigArgs`]). [`load`] does the layering; `--print-config` shows the result through
//! [`Config::to_toml`], with secrets masked.

mod args;
mod layering;
mod limits;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use args::ConfigArgs;
pub use layering::{ENV_VARS, load, load_with_env};
pub use limits::{
    DEFAULT_FUNCTION_CPU_MS, DEFAULT_FUNCTION_MEMORY_MB, DEFAULT_FUNCTION_WORKERS,
    DEFAULT_INSTANCE_RETENTION_DAYS, DEFAULT_MAX_ACTIVE_INSTANCES_PER_PROFILE,
    DEFAULT_MAX_CATALOG_EVENTS, DEFAULT_MAX_DELAY_SECS, DEFAULT_MAX_EVENTS_PER_PROFILE_PER_SEC,
    DEFAULT_MAX_HOLD_SECS, DEFAULT_MAX_INSTANCE_LIFETIME_DAYS, DEFAULT_MAX_RETURN_TO_START_PASSES,
    DEFAULT_MAX_SENDS_IN_FLIGHT_PER_DESTINATION, DEFAULT_MAX_UNIQUE_VALUE_CHARS,
    DEFAULT_MIN_DELAY_SECS, DEFAULT_MIN_HOLD_SECS, DEFAULT_PROFILE_CACHE_SIZE,
    DEFAULT_RETRY_AFTER_MAX_SECS, DEFAULT_RETRY_BACKOFF_BASE_MS, DEFAULT_RETRY_BACKOFF_MAX_SECS,
    DEFAULT_RETRY_BUDGET_SECS, DEFAULT_WRITE_KEY_CACHE_SIZE, MAX_SENDS_IN_FLIGHT,
};

/// Database used when nothing else is configured: a SQLite file in the working directory, created
/// on first use, so `journeys dev` works on a fresh machine.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./journeys-dev.db?mode=rwc";

/// How long a `messageId` is remembered for de-duplication when not configured: one day.
pub const DEFAULT_DEDUPE_WINDOW_SECS: u64 = 86_400;

/// Profile partitions unless configured (SCALE-OUT.md §1).
pub const DEFAULT_PARTITIONS: u32 = 64;
/// The partition log's stream unless configured.
pub const DEFAULT_NATS_STREAM: &str = "journeys";

/// The most partitions a deployment may configure.
pub const MAX_PARTITIONS: u32 = 4096;

/// The destination allow-list of `journeys dev`: loopback, where its demo sink listens.
pub const DEV_DESTINATION_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128"];

/// What replaces secrets in [`Config::to_toml`] and `Debug` output.
const MASK: &str = "********";

/// Which process is being configured; decides the defaults (mainly the gRPC port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// `journeys-control-plane`: journeys, destinations, audiences, sources, catalog, profiles.
    ControlPlane,
    /// `journeys-data-plane`: ingestion over gRPC and the Segment-compatible HTTP API.
    DataPlane,
    /// `journeys-scheduler`: durable timers and housekeeping.
    Scheduler,
    /// `journeys dev`: everything in one process on SQLite.
    Dev,
    /// `journeys serve --roles …`: any set of roles in one process.
    Node,
}

impl Service {
    /// The process name, used as the OpenTelemetry `service.name` and in logs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Service::ControlPlane => "journeys-control-plane",
            Service::DataPlane => "journeys-data-plane",
            Service::Scheduler => "journeys-scheduler",
            Service::Dev => "journeys-dev",
            Service::Node => "journeys",
        }
    }

    /// Default gRPC port of the process (API.md, "Ports and processes").
    #[must_use]
    pub fn default_grpc_port(self) -> u16 {
        match self {
            Service::ControlPlane | Service::Dev | Service::Node => 50051,
            Service::DataPlane => 50052,
            Service::Scheduler => 50053,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "invalid log format '{s}' (expected 'text' or 'json')"
            )),
        }
    }
}

/// The effective configuration of one process.
///
/// The TOML keys are the field names; unknown keys are rejected so a typo cannot silently fall
/// back to a default. Add new settings here, in [`ConfigArgs`] and in the environment table of
/// the loader; `Config::defaults_for` gives every field a value, so the TOML file stays optional.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mysql://…` or `sqlite://…`; may carry a password, so it is masked when printed.
    pub database_url: String,
    /// gRPC listen address. A non-loopback address requires `admin_token` (see `auth::check_bind`).
    pub grpc_addr: SocketAddr,
    /// HTTP listen address of the Segment-compatible API (data plane and `journeys dev` only).
    pub http_addr: SocketAddr,
    /// Bearer token required on control-plane and scheduler calls; `None` means loopback only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
    /// Allow second-scale delays and holds, which production journeys should not need.
    pub allow_short_durations: bool,
    /// Log output format.
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint (e.g. `http://otel-collector:4317`); unset disables export.
    /// Read from the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, not a `JOURNEYS_*` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// How long an event `messageId` is remembered to drop duplicates, in seconds.
    pub dedupe_window_secs: u64,
    /// This node's id among the nodes sharing a store; unset means the host name. Must be
    /// unique per process and stable across its restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Profile partitions (1–4096, the same on every node of a deployment). Changing it on a
    /// store that has run is refused: it is a drain-and-migrate operation.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// NATS server (`nats://host:4222`) whose JetStream stream carries events and timers
    /// between the nodes: any node takes any event and the owner of its partition applies it.
    /// Unset: this node applies what it receives itself (one node, or `journeys dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// Name of that stream (its subjects are `<name>.ev.<partition>`); the same on every node.
    #[serde(default = "default_nats_stream")]
    pub nats_stream: String,
    /// Networks (CIDRs or IP addresses) and host names that webhook destinations may reach
    /// besides global addresses: loopback, private, link-local and unspecified addresses are
    /// refused unless listed here. `journeys dev` lists loopback.
    #[serde(default)]
    pub destination_allow: Vec<String>,
    /// Most top-level traits of one profile: an identify adding traits past it is rejected
    /// (`traits_limit`).
    #[serde(default = "default_max_profile_traits")]
    pub max_profile_traits: usize,
    /// Most bytes of one profile's traits (as JSON): an identify growing them past it is
    /// rejected (`traits_limit`).
    #[serde(default = "default_max_profile_traits_bytes")]
    pub max_profile_traits_bytes: usize,
    /// Most instances of one profile active at once, across journeys: an event that would
    /// start another is rejected (`too_many_instances`).
    #[serde(default = "limits::default_max_active_instances_per_profile")]
    pub max_active_instances_per_profile: usize,
    /// Events of one profile per second beyond which events are rejected (`rate_limited`);
    /// `0` disables the limit.
    #[serde(default = "limits::default_max_events_per_profile_per_sec")]
    pub max_events_per_profile_per_sec: u32,
    /// How long after its first attempt a failing send is still retried before it is
    /// dead-lettered, in seconds.
    #[serde(default = "limits::default_retry_budget_secs")]
    pub retry_budget_secs: u64,
    /// Ceiling of the first retry's backoff (doubling per attempt, full jitter), in ms.
    #[serde(default = "limits::default_retry_backoff_base_ms")]
    pub retry_backoff_base_ms: u64,
    /// Largest backoff ceiling between two attempts, in seconds.
    #[serde(default = "limits::default_retry_backoff_max_secs")]
    pub retry_backoff_max_secs: u64,
    /// Longest `Retry-After` of a destination that is honoured, in seconds.
    #[serde(default = "limits::default_retry_after_max_secs")]
    pub retry_after_max_secs: u64,
    /// Webhook requests in flight at once to one destination, of the 256 a node sends at once:
    /// a destination that hangs or answers slowly holds at most this many, and the others
    /// keep flowing. Its further sends wait in the outbox.
    #[serde(default = "limits::default_max_sends_in_flight_per_destination")]
    pub max_sends_in_flight_per_destination: usize,
    /// Threads running destination functions, each with its own engine; 0 means four per
    /// core (a worker waits for its invocation's fetches). Invocations beyond them wait for a
    /// free one.
    #[serde(default = "limits::default_function_workers")]
    pub function_workers: usize,
    /// CPU time one function invocation may use running JavaScript, in milliseconds; past it
    /// the function is stopped (`CpuLimitError`, dead letter).
    #[serde(default = "limits::default_function_cpu_ms")]
    pub function_cpu_ms: u64,
    /// Memory of one function engine (all the functions its worker holds), in MiB; an
    /// allocation past it throws (`MemoryLimitError`, dead letter).
    #[serde(default = "limits::default_function_memory_mb")]
    pub function_memory_mb: usize,
    /// Event names the event catalog records from events: a new name past it is not recorded
    /// (its events are still applied).
    #[serde(default = "limits::default_max_catalog_events")]
    pub max_catalog_events: usize,
    /// Write keys the data plane keeps resolved in memory, and as many unknown keys; past it
    /// the least recently used one is asked of the store again.
    #[serde(default = "limits::default_write_key_cache_size")]
    pub write_key_cache_size: usize,
    /// Profiles a partition owner keeps in memory (with their waiting instances), least
    /// recently used out; `0` keeps none and reads every profile from the store. Bounds the
    /// owner's memory whatever the number of waiting instances.
    #[serde(default = "limits::default_profile_cache_size")]
    pub profile_cache_size: usize,
    /// Return-to-start passes one hold-until step allows per instance; the next match of a
    /// return-to-start branch continues onward.
    #[serde(default = "limits::default_max_return_to_start_passes")]
    pub max_return_to_start_passes: u32,
    /// Longest unique-identifier value an entry event may carry, in characters; a longer one
    /// starts no instance (`unique_identifier_too_long`).
    #[serde(default = "limits::default_max_unique_value_chars")]
    pub max_unique_value_chars: usize,
    /// Shortest delay step a journey may define, in seconds (unless short durations are
    /// allowed). Checked when journeys are validated.
    #[serde(default = "limits::default_min_delay_secs")]
    pub min_delay_secs: u64,
    /// Longest delay step a journey may define, in seconds.
    #[serde(default = "limits::default_max_delay_secs")]
    pub max_delay_secs: u64,
    /// Shortest maximum hold of a hold-until step, in seconds (unless short durations are
    /// allowed).
    #[serde(default = "limits::default_min_hold_secs")]
    pub min_hold_secs: u64,
    /// Longest maximum hold of a hold-until step, in seconds.
    #[serde(default = "limits::default_max_hold_secs")]
    pub max_hold_secs: u64,
    /// Days an instance lives at most: housekeeping ends it (exited) afterwards.
    #[serde(default = "limits::default_max_instance_lifetime_days")]
    pub max_instance_lifetime_days: u64,
    /// Days a finished instance (with its timeline) is kept before housekeeping purges it (0:
    /// until the next housekeeping run); journey statistics are counters and survive the purge.
    #[serde(default = "limits::default_instance_retention_days")]
    pub instance_retention_days: u64,
}

/// Traits per profile unless configured.
pub const DEFAULT_MAX_PROFILE_TRAITS: usize = 1_000;

/// Bytes of traits per profile unless configured: 256 KiB.
pub const DEFAULT_MAX_PROFILE_TRAITS_BYTES: usize = 256 * 1024;

fn default_max_profile_traits() -> usize {
    DEFAULT_MAX_PROFILE_TRAITS
}

fn default_max_profile_traits_bytes() -> usize {
    DEFAULT_MAX_PROFILE_TRAITS_BYTES
}

fn default_partitions() -> u32 {
    DEFAULT_PARTITIONS
}

fn default_nats_stream() -> String {
    DEFAULT_NATS_STREAM.to_owned()
}

impl Config {
    /// Built-in defaults of `service`: loopback addresses only, SQLite, no token, text logs.
    #[must_use]
    pub fn defaults_for(service: Service) -> Config {
        Config {
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            grpc_addr: loopback(service.default_grpc_port()),
            http_addr: loopback(8088),
            admin_token: None,
            allow_short_durations: false,
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            dedupe_window_secs: DEFAULT_DEDUPE_WINDOW_SECS,
            node_id: None,
            partitions: DEFAULT_PARTITIONS,
            nats_url: None,
            nats_stream: DEFAULT_NATS_STREAM.to_owned(),
            destination_allow: if service == Service::Dev {
                DEV_DESTINATION_ALLOW
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                Vec::new()
            },
            max_profile_traits: DEFAULT_MAX_PROFILE_TRAITS,
            max_profile_traits_bytes: DEFAULT_MAX_PROFILE_TRAITS_BYTES,
            max_active_instances_per_profile: DEFAULT_MAX_ACTIVE_INSTANCES_PER_PROFILE,
            max_events_per_profile_per_sec: DEFAULT_MAX_EVENTS_PER_PROFILE_PER_SEC,
            retry_budget_secs: DEFAULT_RETRY_BUDGET_SECS,
            retry_backoff_base_ms: DEFAULT_RETRY_BACKOFF_BASE_MS,
            retry_backoff_max_secs: DEFAULT_RETRY_BACKOFF_MAX_SECS,
            retry_after_max_secs: DEFAULT_RETRY_AFTER_MAX_SECS,
            max_sends_in_flight_per_destination: DEFAULT_MAX_SENDS_IN_FLIGHT_PER_DESTINATION,
            function_workers: DEFAULT_FUNCTION_WORKERS,
            function_cpu_ms: DEFAULT_FUNCTION_CPU_MS,
            function_memory_mb: DEFAULT_FUNCTION_MEMORY_MB,
            max_catalog_events: DEFAULT_MAX_CATALOG_EVENTS,
            write_key_cache_size: DEFAULT_WRITE_KEY_CACHE_SIZE,
            profile_cache_size: DEFAULT_PROFILE_CACHE_SIZE,
            max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
            max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
            min_delay_secs: DEFAULT_MIN_DELAY_SECS,
            max_delay_secs: DEFAULT_MAX_DELAY_SECS,
            min_hold_secs: DEFAULT_MIN_HOLD_SECS,
            max_hold_secs: DEFAULT_MAX_HOLD_SECS,
            max_instance_lifetime_days: DEFAULT_MAX_INSTANCE_LIFETIME_DAYS,
            instance_retention_days: DEFAULT_INSTANCE_RETENTION_DAYS,
        }
    }

    /// Refuses numbers that make no sense (a zero limit, a value past its range, a minimum
    /// above its maximum); [`load`] does this, and a node checks a configuration built in code
    /// again before it starts.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first setting at fault.
    pub fn check(&self) -> Result<(), ConfigError> {
        limits::check(self)
    }

    /// The configuration as TOML, ready to be saved as a `--config` file, with the admin token
    /// and any database password replaced by `********`.
    #[must_use]
    pub fn to_toml(&self) -> String {
        let masked = self.masked();
        match toml::to_string_pretty(&masked) {
            Ok(text) => text,
            // Every field is a plain scalar, so serialisation cannot fail in practice; still, a
            // diagnostic tool must not panic.
            Err(error) => format!("# cannot render the configuration as TOML: {error}\n"),
        }
    }

    /// A copy safe to show: secrets replaced by [`MASK`].
    fn masked(&self) -> Config {
        Config {
            database_url: mask_url_password(&self.database_url),
            nats_url: self.nats_url.as_deref().map(mask_url_password),
            admin_token: self.admin_token.as_ref().map(|_| MASK.to_owned()),
            ..self.clone()
        }
    }

    /// Empty strings in optional settings mean "unset" (as in `JOURNEYS_ADMIN_TOKEN=` in a
    /// compose file): an empty admin token must never count as a token.
    fn normalized(mut self) -> Config {
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            self.admin_token = None;
        }
        if self
            .otlp_endpoint
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            self.otlp_endpoint = None;
        }
        if self.node_id.as_deref().is_some_and(|n| n.trim().is_empty()) {
            self.node_id = None;
        }
        if self
            .nats_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            self.nats_url = None;
        }
        self.destination_allow = self
            .destination_allow
            .iter()
            .map(|entry| entry.trim().to_owned())
            .filter(|entry| !entry.is_empty())
            .collect();
        self
    }
}

/// Secrets are masked so that `tracing::debug!(?config)` cannot leak them.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let masked = self.masked();
        f.debug_struct("Config")
            .field("database_url", &masked.database_url)
            .field("grpc_addr", &masked.grpc_addr)
            .field("http_addr", &masked.http_addr)
            .field("admin_token", &masked.admin_token)
            .field("allow_short_durations", &masked.allow_short_durations)
            .field("log_format", &masked.log_format)
            .field("otlp_endpoint", &masked.otlp_endpoint)
            .field("dedupe_window_secs", &masked.dedupe_window_secs)
            .field("node_id", &masked.node_id)
            .field("partitions", &masked.partitions)
            .field("destination_allow", &masked.destination_allow)
            .field("max_profile_traits", &masked.max_profile_traits)
            .field("max_profile_traits_bytes", &masked.max_profile_traits_bytes)
            .field(
                "max_active_instances_per_profile",
                &masked.max_active_instances_per_profile,
            )
            .field(
                "max_events_per_profile_per_sec",
                &masked.max_events_per_profile_per_sec,
            )
            .field("retry_budget_secs", &masked.retry_budget_secs)
            .field("retry_backoff_base_ms", &masked.retry_backoff_base_ms)
            .field("retry_backoff_max_secs", &masked.retry_backoff_max_secs)
            .field("retry_after_max_secs", &masked.retry_after_max_secs)
            .field(
                "max_sends_in_flight_per_destination",
                &masked.max_sends_in_flight_per_destination,
            )
            .field("function_workers", &masked.function_workers)
            .field("function_cpu_ms", &masked.function_cpu_ms)
            .field("function_memory_mb", &masked.function_memory_mb)
            .field("max_catalog_events", &masked.max_catalog_events)
            .field("write_key_cache_size", &masked.write_key_cache_size)
            .field("profile_cache_size", &masked.profile_cache_size)
            .field(
                "max_return_to_start_passes",
                &masked.max_return_to_start_passes,
            )
            .field("max_unique_value_chars", &masked.max_unique_value_chars)
            .field("min_delay_secs", &masked.min_delay_secs)
            .field("max_delay_secs", &masked.max_delay_secs)
            .field("min_hold_secs", &masked.min_hold_secs)
            .field("max_hold_secs", &masked.max_hold_secs)
            .field(
                "max_instance_lifetime_days",
                &masked.max_instance_lifetime_days,
            )
            .field("instance_retention_days", &masked.instance_retention_days)
            .finish()
    }
}

/// A configuration value was rejected; the message names the setting and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable holds a value that does not parse.
    #[error("{var}: {message}")]
    Env {
        /// The variable name, e.g. `JOURNEYS_GRPC_ADDR`.
        var: &'static str,
        /// What is wrong with the value.
        message: String,
    },
    /// The TOML file cannot be read or holds a bad key or value.
    #[error("config file {}: {message}", path.display())]
    File {
        /// The file given by `--config` or `JOURNEYS_CONFIG`.
        path: PathBuf,
        /// What is wrong, naming the key where there is one.
        message: String,
    },
    /// A setting holds a value out of its range; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The configuration is valid value by value but unsafe as a whole.
    #[error("{0}")]
    Unsafe(String),
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

/// Replaces the password of `scheme://user:password@host/...` by [`MASK`]; other URLs unchanged.
fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_owned();
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    format!("{}{MASK}{}", &url[..password_start], &url[password_end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_port_table() {
        assert_eq!(
            Config::defaults_for(Service::ControlPlane)
                .grpc_addr
                .to_string(),
            "127.0.0.1:50051"
        );
        assert_eq!(
            Config::defaults_for(Service::DataPlane)
                .grpc_addr
                .to_string(),
            "127.0.0.1:50052"
        );
        assert_eq!(
            Config::defaults_for(Service::Scheduler)
                .grpc_addr
                .to_string(),
            "127.0.0.1:50053"
        );
        let dev = Config::defaults_for(Service::Dev);
        assert_eq!(dev.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(dev.http_addr.to_string(), "127.0.0.1:8088");
        assert_eq!(dev.database_url, "sqlite://./journeys-dev.db?mode=rwc");
        assert_eq!(dev.dedupe_window_secs, 86_400);
        assert_eq!(dev.admin_token, None);
        assert_eq!(dev.log_format, LogFormat::Text);
        assert!(!dev.allow_short_durations);
        assert_eq!(dev.destination_allow, ["127.0.0.0/8", "::1/128"]);
        assert!(
            Config::defaults_for(Service::Node)
                .destination_allow
                .is_empty()
        );
    }

    #[test]
    fn print_config_masks_the_token_and_database_password() {
        let mut config = Config::defaults_for(Service::ControlPlane);
        config.admin_token = Some("s3cret-token".to_owned());
        config.database_url = "mysql://journeys:db-pass@mysql:3306/journeys".to_owned();
        let text = config.to_toml();
        assert!(!text.contains("s3cret-token"), "{text}");
        assert!(!text.contains("db-pass"), "{text}");
        assert!(text.contains("admin_token = \"********\""), "{text}");
        assert!(
            text.contains("mysql://journeys:********@mysql:3306/journeys"),
            "{text}"
        );
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret-token") && !debug.contains("db-pass"),
            "{debug}"
        );
    }

    #[test]
    fn printed_config_reads_back_as_a_config_file() {
        let mut config = Config::defaults_for(Service::DataPlane);
        config.otlp_endpoint = Some("http://collector:4317".to_owned());
        config.log_format = LogFormat::Json;
        let parsed: Config = toml::from_str(&config.to_toml()).expect("printed config parses");
        assert_eq!(parsed, config);
    }

    #[test]
    fn url_password_masking_leaves_other_urls_alone() {
        assert_eq!(
            mask_url_password("sqlite://./journeys-dev.db?mode=rwc"),
            "sqlite://./journeys-dev.db?mode=rwc"
        );
        assert_eq!(mask_url_password("mysql://root@db/j"), "mysql://root@db/j");
        assert_eq!(
            mask_url_password("mysql://u:p@ss@db/j"),
            "mysql://u:********@db/j"
        );
    }

    #[test]
    fn log_format_parses_case_insensitively() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().unwrap_err().contains("'xml'"));
    }
}
