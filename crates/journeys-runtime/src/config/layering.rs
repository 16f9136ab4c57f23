//! The layering of configuration sources: defaults → TOML file → environment → flags.
//!
//! The environment is passed in as a map ([`load_with_env`]) so tests never touch the process
//! environment; [`load`] reads the real one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Config, ConfigArgs, ConfigError, LogFormat, Service};

/// Names the TOML file when `--config` is not given.
const CONFIG_FILE_VAR: &str = "JOURNEYS_CONFIG";

/// Every environment variable a Journeys process reads, for deployment files to be checked
/// against. `RUST_LOG`, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` are read by
/// `telemetry::init`; `JOURNEYS_HOUSEKEEPING_SCHEDULE` only by the scheduler's own flags.
pub const ENV_VARS: &[&str] = &[
    CONFIG_FILE_VAR,
    "JOURNEYS_DATABASE_URL",
    "JOURNEYS_GRPC_ADDR",
    "JOURNEYS_HTTP_ADDR",
    "JOURNEYS_ADMIN_TOKEN",
    "JOURNEYS_ALLOW_SHORT_DURATIONS",
    "JOURNEYS_LOG_FORMAT",
    "JOURNEYS_DEDUPE_WINDOW_SECS",
    "JOURNEYS_NODE_ID",
    "JOURNEYS_PARTITIONS",
    "JOURNEYS_NATS_URL",
    "JOURNEYS_NATS_STREAM",
    "JOURNEYS_DESTINATION_ALLOW",
    "JOURNEYS_MAX_PROFILE_TRAITS",
    "JOURNEYS_MAX_PROFILE_TRAITS_BYTES",
    "JOURNEYS_MAX_ACTIVE_INSTANCES_PER_PROFILE",
    "JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC",
    "JOURNEYS_RETRY_BUDGET_SECS",
    "JOURNEYS_RETRY_BACKOFF_BASE_MS",
    "JOURNEYS_RETRY_BACKOFF_MAX_SECS",
    "JOURNEYS_RETRY_AFTER_MAX_SECS",
    "JOURNEYS_MAX_SENDS_IN_FLIGHT_PER_DESTINATION",
    "JOURNEYS_FUNCTION_WORKERS",
    "JOURNEYS_FUNCTION_CPU_MS",
    "JOURNEYS_FUNCTION_MEMORY_MB",
    "JOURNEYS_MAX_CATALOG_EVENTS",
    "JOURNEYS_WRITE_KEY_CACHE_SIZE",
    "JOURNEYS_PROFILE_CACHE_SIZE",
    "JOURNEYS_MAX_RETURN_TO_START_PASSES",
    "JOURNEYS_MAX_UNIQUE_VALUE_CHARS",
    "JOURNEYS_MIN_DELAY_SECS",
    "JOURNEYS_MAX_DELAY_SECS",
    "JOURNEYS_MIN_HOLD_SECS",
    "JOURNEYS_MAX_HOLD_SECS",
    "JOURNEYS_MAX_INSTANCE_LIFETIME_DAYS",
    "JOURNEYS_INSTANCE_RETENTION_DAYS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "JOURNEYS_HOUSEKEEPING_SCHEDULE",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "RUST_LOG",
];

/// One environment variable and how it sets its field; the error names no variable, the caller
/// adds it.
struct EnvBinding {
    var: &'static str,
    apply: fn(&mut Config, &str) -> Result<(), String>,
}

/// An [`EnvBinding`] of a whole-number setting; `$unit` names what the number counts.
macro_rules! number_binding {
    ($var:literal, $field:ident, $unit:literal) => {
        EnvBinding {
            var: $var,
            apply: |config, value| {
                config.$field = parse_number(value, $unit)?;
                Ok(())
            },
        }
    };
}

const ENV_BINDINGS: &[EnvBinding] = &[
    EnvBinding {
        var: "JOURNEYS_DATABASE_URL",
        apply: |config, value| {
            value.clone_into(&mut config.database_url);
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_GRPC_ADDR",
        apply: |config, value| {
            config.grpc_addr = parse_socket_addr(value)?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_HTTP_ADDR",
        apply: |config, value| {
            config.http_addr = parse_socket_addr(value)?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_ADMIN_TOKEN",
        apply: |config, value| {
            config.admin_token = Some(value.to_owned());
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_ALLOW_SHORT_DURATIONS",
        apply: |config, value| {
            config.allow_short_durations = parse_bool(value)?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_LOG_FORMAT",
        apply: |config, value| {
            config.log_format = value.parse::<LogFormat>()?;
            Ok(())
        },
    },
    EnvBinding {
        var: "OTEL_EXPORTER_OTLP_ENDPOINT",
        apply: |config, value| {
            config.otlp_endpoint = Some(value.to_owned());
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_DEDUPE_WINDOW_SECS",
        apply: |config, value| {
            config.dedupe_window_secs = value.trim().parse().map_err(|_| {
                format!("invalid number '{value}' (expected a whole number of seconds)")
            })?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_NODE_ID",
        apply: |config, value| {
            config.node_id = Some(value.trim().to_owned());
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_NATS_URL",
        apply: |config, value| {
            config.nats_url = Some(value.trim().to_owned());
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_NATS_STREAM",
        apply: |config, value| {
            config.nats_stream = value.trim().to_owned();
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_PARTITIONS",
        apply: |config, value| {
            config.partitions = value.trim().parse().map_err(|_| {
                format!("invalid number '{value}' (expected a whole number of partitions)")
            })?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_DESTINATION_ALLOW",
        apply: |config, value| {
            config.destination_allow = value.split(',').map(str::to_owned).collect();
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_MAX_PROFILE_TRAITS",
        apply: |config, value| {
            config.max_profile_traits = value.trim().parse().map_err(|_| {
                format!("invalid number '{value}' (expected a whole number of traits)")
            })?;
            Ok(())
        },
    },
    EnvBinding {
        var: "JOURNEYS_MAX_PROFILE_TRAITS_BYTES",
        apply: |config, value| {
            config.max_profile_traits_bytes = value.trim().parse().map_err(|_| {
                format!("invalid number '{value}' (expected a whole number of bytes)")
            })?;
            Ok(())
        },
    },
    number_binding!(
        "JOURNEYS_MAX_ACTIVE_INSTANCES_PER_PROFILE",
        max_active_instances_per_profile,
        "instances"
    ),
    number_binding!(
        "JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC",
        max_events_per_profile_per_sec,
        "events"
    ),
    number_binding!("JOURNEYS_RETRY_BUDGET_SECS", retry_budget_secs, "seconds"),
    number_binding!(
        "JOURNEYS_RETRY_BACKOFF_BASE_MS",
        retry_backoff_base_ms,
        "milliseconds"
    ),
    number_binding!(
        "JOURNEYS_RETRY_BACKOFF_MAX_SECS",
        retry_backoff_max_secs,
        "seconds"
    ),
    number_binding!(
        "JOURNEYS_RETRY_AFTER_MAX_SECS",
        retry_after_max_secs,
        "seconds"
    ),
    number_binding!(
        "JOURNEYS_MAX_SENDS_IN_FLIGHT_PER_DESTINATION",
        max_sends_in_flight_per_destination,
        "requests"
    ),
    number_binding!("JOURNEYS_FUNCTION_WORKERS", function_workers, "threads"),
    number_binding!("JOURNEYS_FUNCTION_CPU_MS", function_cpu_ms, "milliseconds"),
    number_binding!("JOURNEYS_FUNCTION_MEMORY_MB", function_memory_mb, "MiB"),
    number_binding!(
        "JOURNEYS_MAX_CATALOG_EVENTS",
        max_catalog_events,
        "event names"
    ),
    number_binding!(
        "JOURNEYS_WRITE_KEY_CACHE_SIZE",
        write_key_cache_size,
        "write keys"
    ),
    number_binding!(
        "JOURNEYS_PROFILE_CACHE_SIZE",
        profile_cache_size,
        "profiles"
    ),
    number_binding!(
        "JOURNEYS_MAX_RETURN_TO_START_PASSES",
        max_return_to_start_passes,
        "passes"
    ),
    number_binding!(
        "JOURNEYS_MAX_UNIQUE_VALUE_CHARS",
        max_unique_value_chars,
        "characters"
    ),
    number_binding!("JOURNEYS_MIN_DELAY_SECS", min_delay_secs, "seconds"),
    number_binding!("JOURNEYS_MAX_DELAY_SECS", max_delay_secs, "seconds"),
    number_binding!("JOURNEYS_MIN_HOLD_SECS", min_hold_secs, "seconds"),
    number_binding!("JOURNEYS_MAX_HOLD_SECS", max_hold_secs, "seconds"),
    number_binding!(
        "JOURNEYS_MAX_INSTANCE_LIFETIME_DAYS",
        max_instance_lifetime_days,
        "days"
    ),
    number_binding!(
        "JOURNEYS_INSTANCE_RETENTION_DAYS",
        instance_retention_days,
        "days"
    ),
];

/// Loads the configuration of `service` from defaults, the config file, the process environment
/// and `args`, in that order of increasing precedence.
///
/// # Errors
///
/// A value that does not parse, an unreadable or invalid config file, or an environment
/// variable that is not UTF-8; the error names the setting and its source.
pub fn load(service: Service, args: &ConfigArgs) -> Result<Config, ConfigError> {
    let mut env = HashMap::new();
    for &var in ENV_VARS {
        match std::env::var(var) {
            Ok(value) => {
                env.insert(var.to_owned(), value);
            }
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::Env {
                    var,
                    message: "value is not valid UTF-8".to_owned(),
                });
            }
        }
    }
    load_with_env(service, args, &env)
}

/// [`load`] with the environment given as a map, so tests need not mutate the process
/// environment. Empty values count as unset, as `VAR=` in a compose file intends.
///
/// # Errors
///
/// As [`load`].
pub fn load_with_env(
    service: Service,
    args: &ConfigArgs,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let env_value = |var: &str| {
        env.get(var)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    };

    let mut config = Config::defaults_for(service);

    let file = args
        .config
        .clone()
        .or_else(|| env_value(CONFIG_FILE_VAR).map(PathBuf::from));
    if let Some(path) = file {
        config = apply_file(config, &path)?;
    }

    for binding in ENV_BINDINGS {
        if let Some(value) = env_value(binding.var) {
            (binding.apply)(&mut config, value).map_err(|message| ConfigError::Env {
                var: binding.var,
                message,
            })?;
        }
    }

    apply_flags(&mut config, args);
    config.check()?;
    Ok(config.normalized())
}

/// Overlays the TOML file on `config`, one key at a time so that an error names its key.
fn apply_file(config: Config, path: &Path) -> Result<Config, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| file_error(format!("cannot read: {e}")))?;
    let overlay: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_error(e.to_string().trim_end().to_owned()))?;

    let mut merged = match toml::Value::try_from(&config) {
        Ok(toml::Value::Table(table)) => table,
        Ok(_) => {
            return Err(file_error(
                "internal error: defaults are not a table".to_owned(),
            ));
        }
        Err(e) => return Err(file_error(format!("internal error: {e}"))),
    };
    let mut result = config;
    for (key, value) in overlay {
        merge_value(&mut merged, key.clone(), value.clone());
        result = toml::Value::Table(merged.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                file_error(format!("key `{key}` = {value}: {}", e.message().trim_end()))
            })?;
    }
    Ok(result)
}

/// Sets `key` in `base`, merging nested tables key by key rather than replacing them, so a file
/// may set one key of a future `[section]`.
fn merge_value(base: &mut toml::Table, key: String, value: toml::Value) {
    match (base.get_mut(&key), value) {
        (Some(toml::Value::Table(existing)), toml::Value::Table(overlay)) => {
            for (k, v) in overlay {
                merge_value(existing, k, v);
            }
        }
        (_, value) => {
            base.insert(key, value);
        }
    }
}

// One line per flag: a long list, not a long procedure.
#[allow(clippy::too_many_lines)]
fn apply_flags(config: &mut Config, args: &ConfigArgs) {
    // Destructured so that a new flag cannot be forgotten here.
    let ConfigArgs {
        config: _,
        print_config: _,
        database_url,
        grpc_addr,
        http_addr,
        admin_token,
        allow_short_durations,
        log_format,
        otlp_endpoint,
        dedupe_window_secs,
        node_id,
        partitions,
        nats_url,
        nats_stream,
        destination_allow,
        max_profile_traits,
        max_profile_traits_bytes,
        max_active_instances_per_profile,
        max_events_per_profile_per_sec,
        retry_budget_secs,
        retry_backoff_base_ms,
        retry_backoff_max_secs,
        retry_after_max_secs,
        max_sends_in_flight_per_destination,
        function_workers,
        function_cpu_ms,
        function_memory_mb,
        max_catalog_events,
        write_key_cache_size,
        profile_cache_size,
        max_return_to_start_passes,
        max_unique_value_chars,
        min_delay_secs,
        max_delay_secs,
        min_hold_secs,
        max_hold_secs,
        max_instance_lifetime_days,
        instance_retention_days,
    } = args;
    // The flags that set an optional text of the same name.
    macro_rules! set_some {
        ($($field:ident),* $(,)?) => {
            $(if let Some(v) = $field {
                config.$field = Some(v.clone());
            })*
        };
    }
    set_some!(admin_token, otlp_endpoint, node_id, nats_url);
    // The flags that set a text or list of the same name.
    macro_rules! set_clone {
        ($($field:ident),* $(,)?) => {
            $(if let Some(v) = $field {
                config.$field.clone_from(v);
            })*
        };
    }
    set_clone!(database_url, nats_stream, destination_allow);
    // The flags that set a plain value of the same name.
    macro_rules! set {
        ($($field:ident),* $(,)?) => {
            $(if let Some(v) = $field {
                config.$field = *v;
            })*
        };
    }
    set!(
        grpc_addr,
        http_addr,
        allow_short_durations,
        log_format,
        dedupe_window_secs,
        partitions,
        max_profile_traits,
        max_profile_traits_bytes,
        max_active_instances_per_profile,
        max_events_per_profile_per_sec,
        retry_budget_secs,
        retry_backoff_base_ms,
        retry_backoff_max_secs,
        retry_after_max_secs,
        max_sends_in_flight_per_destination,
        function_workers,
        function_cpu_ms,
        function_memory_mb,
        max_catalog_events,
        write_key_cache_size,
        profile_cache_size,
        max_return_to_start_passes,
        max_unique_value_chars,
        min_delay_secs,
        max_delay_secs,
        min_hold_secs,
        max_hold_secs,
        max_instance_lifetime_days,
        instance_retention_days,
    );
}

/// A whole number of `unit`s.
fn parse_number<T: std::str::FromStr>(value: &str, unit: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("invalid number '{value}' (expected a whole number of {unit})"))
}

fn parse_socket_addr(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        format!("invalid socket address '{value}' (expected IP:PORT, e.g. 0.0.0.0:50051)")
    })
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "invalid boolean '{value}' (expected true or false)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write temp file");
        file
    }

    #[test]
    fn no_sources_gives_the_service_defaults() {
        let config = load_with_env(Service::Scheduler, &ConfigArgs::default(), &HashMap::new())
            .expect("defaults load");
        assert_eq!(config, Config::defaults_for(Service::Scheduler));
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        // Each layer sets one more key than the layer above it, so every key shows which layer
        // won: http_addr from the file, dedupe from the env, grpc_addr from the flags.
        let file = toml_file(
            r#"
            grpc_addr = "127.0.0.1:1001"
            http_addr = "127.0.0.1:1002"
            dedupe_window_secs = 10
            log_format = "json"
            "#,
        );
        let env = env(&[
            ("JOURNEYS_GRPC_ADDR", "127.0.0.1:2001"),
            ("JOURNEYS_DEDUPE_WINDOW_SECS", "20"),
        ]);
        let args = ConfigArgs {
            config: Some(file.path().to_owned()),
            grpc_addr: Some("127.0.0.1:3001".parse().expect("addr")),
            ..ConfigArgs::default()
        };
        let config = load_with_env(Service::ControlPlane, &args, &env).expect("loads");
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:3001");
        assert_eq!(config.dedupe_window_secs, 20);
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:1002");
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.database_url, super::super::DEFAULT_DATABASE_URL);
    }

    #[test]
    fn config_file_can_come_from_the_environment() {
        let file = toml_file("allow_short_durations = true\n");
        let env = env(&[("JOURNEYS_CONFIG", file.path().to_str().expect("utf-8 path"))]);
        let config = load_with_env(Service::Dev, &ConfigArgs::default(), &env).expect("loads");
        assert!(config.allow_short_durations);
    }

    #[test]
    fn every_env_var_is_read() {
        let env = env(&[
            ("JOURNEYS_DATABASE_URL", "mysql://u:p@db/j"),
            ("JOURNEYS_GRPC_ADDR", "0.0.0.0:6000"),
            ("JOURNEYS_HTTP_ADDR", "0.0.0.0:6001"),
            ("JOURNEYS_ADMIN_TOKEN", "tok"),
            ("JOURNEYS_ALLOW_SHORT_DURATIONS", "TRUE"),
            ("JOURNEYS_LOG_FORMAT", "Json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("JOURNEYS_DEDUPE_WINDOW_SECS", "60"),
            ("JOURNEYS_DESTINATION_ALLOW", "10.0.0.0/8, hooks.internal"),
        ]);
        let config =
            load_with_env(Service::DataPlane, &ConfigArgs::default(), &env).expect("loads");
        assert_eq!(config.database_url, "mysql://u:p@db/j");
        assert_eq!(config.grpc_addr.to_string(), "0.0.0.0:6000");
        assert_eq!(config.http_addr.to_string(), "0.0.0.0:6001");
        assert_eq!(config.admin_token.as_deref(), Some("tok"));
        assert!(config.allow_short_durations);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4317")
        );
        assert_eq!(config.dedupe_window_secs, 60);
        assert_eq!(config.destination_allow, ["10.0.0.0/8", "hooks.internal"]);
        for binding in ENV_BINDINGS {
            assert!(
                ENV_VARS.contains(&binding.var),
                "{} missing from ENV_VARS",
                binding.var
            );
        }
    }

    #[test]
    fn every_limit_is_set_by_file_env_and_flags() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: ConfigArgs,
        }

        let file = toml_file(
            r"
            max_active_instances_per_profile = 5
            max_unique_value_chars = 40
            max_delay_secs = 7200
            instance_retention_days = 7
            ",
        );
        let env = env(&[
            ("JOURNEYS_MAX_ACTIVE_INSTANCES_PER_PROFILE", "6"),
            ("JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC", "3"),
            ("JOURNEYS_RETRY_BUDGET_SECS", "120"),
            ("JOURNEYS_RETRY_BACKOFF_BASE_MS", "50"),
            ("JOURNEYS_RETRY_BACKOFF_MAX_SECS", "5"),
            ("JOURNEYS_RETRY_AFTER_MAX_SECS", "30"),
            ("JOURNEYS_MAX_SENDS_IN_FLIGHT_PER_DESTINATION", "16"),
            ("JOURNEYS_FUNCTION_WORKERS", "3"),
            ("JOURNEYS_FUNCTION_CPU_MS", "250"),
            ("JOURNEYS_FUNCTION_MEMORY_MB", "16"),
            ("JOURNEYS_MAX_RETURN_TO_START_PASSES", "4"),
            ("JOURNEYS_MIN_DELAY_SECS", "30"),
            ("JOURNEYS_MIN_HOLD_SECS", "60"),
            ("JOURNEYS_MAX_HOLD_SECS", "86400"),
            ("JOURNEYS_MAX_INSTANCE_LIFETIME_DAYS", "30"),
            ("JOURNEYS_INSTANCE_RETENTION_DAYS", "14"),
        ]);
        let cli = Cli::try_parse_from([
            "journeys",
            "--config",
            file.path().to_str().expect("utf-8 path"),
            "--max-active-instances-per-profile",
            "7",
            "--max-delay-secs",
            "3600",
        ])
        .expect("flags parse");
        let config = load_with_env(Service::Dev, &cli.config, &env).expect("loads");
        // Flags over the environment over the file.
        assert_eq!(config.max_active_instances_per_profile, 7);
        assert_eq!(config.max_delay_secs, 3600);
        assert_eq!(config.instance_retention_days, 14);
        assert_eq!(config.max_unique_value_chars, 40);
        assert_eq!(config.max_events_per_profile_per_sec, 3);
        assert_eq!(config.retry_budget_secs, 120);
        assert_eq!(config.retry_backoff_base_ms, 50);
        assert_eq!(config.retry_backoff_max_secs, 5);
        assert_eq!(config.retry_after_max_secs, 30);
        assert_eq!(config.max_sends_in_flight_per_destination, 16);
        assert_eq!(
            (
                config.function_workers,
                config.function_cpu_ms,
                config.function_memory_mb
            ),
            (3, 250, 16)
        );
        assert_eq!(config.max_return_to_start_passes, 4);
        assert_eq!(config.min_delay_secs, 30);
        assert_eq!(config.min_hold_secs, 60);
        assert_eq!(config.max_hold_secs, 86_400);
        assert_eq!(config.max_instance_lifetime_days, 30);
        // --print-config shows them, and reads back.
        let printed = config.to_toml();
        assert!(
            printed.contains("max_active_instances_per_profile = 7"),
            "{printed}"
        );
        assert!(printed.contains("max_unique_value_chars = 40"), "{printed}");
        let parsed: Config = toml::from_str(&printed).expect("printed config parses");
        assert_eq!(parsed, config);
    }

    #[test]
    fn bad_limits_fail_at_load_naming_the_setting() {
        let err = load_with_env(
            Service::DataPlane,
            &ConfigArgs::default(),
            &env(&[("JOURNEYS_MAX_ACTIVE_INSTANCES_PER_PROFILE", "0")]),
        )
        .expect_err("zero instances");
        assert_eq!(
            err.to_string(),
            "max_active_instances_per_profile: 0 is out of range (1 to 100000)"
        );
        let err = load_with_env(
            Service::DataPlane,
            &ConfigArgs::default(),
            &env(&[("JOURNEYS_MAX_UNIQUE_VALUE_CHARS", "-1")]),
        )
        .expect_err("negative");
        assert!(
            err.to_string().starts_with(
                "JOURNEYS_MAX_UNIQUE_VALUE_CHARS: invalid number '-1' (expected a whole number of characters)"
            ),
            "{err}"
        );
        let file = toml_file("min_delay_secs = -5\n");
        let args = ConfigArgs {
            config: Some(file.path().to_owned()),
            ..ConfigArgs::default()
        };
        let err = load_with_env(Service::ControlPlane, &args, &HashMap::new())
            .expect_err("negative in the file");
        assert!(
            err.to_string().contains("key `min_delay_secs` = -5"),
            "{err}"
        );
        let args = ConfigArgs {
            max_return_to_start_passes: Some(0),
            ..ConfigArgs::default()
        };
        let err = load_with_env(Service::Dev, &args, &HashMap::new()).expect_err("zero passes");
        assert_eq!(
            err.to_string(),
            "max_return_to_start_passes: 0 is out of range (1 to 10000)"
        );
    }

    #[test]
    fn empty_env_values_count_as_unset() {
        let env = env(&[("JOURNEYS_ADMIN_TOKEN", ""), ("JOURNEYS_GRPC_ADDR", " ")]);
        let config =
            load_with_env(Service::ControlPlane, &ConfigArgs::default(), &env).expect("loads");
        assert_eq!(config.admin_token, None);
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn empty_admin_token_from_a_flag_is_no_token() {
        let args = ConfigArgs {
            admin_token: Some(String::new()),
            ..ConfigArgs::default()
        };
        let config = load_with_env(Service::ControlPlane, &args, &HashMap::new()).expect("loads");
        assert_eq!(config.admin_token, None);
    }

    #[test]
    fn bad_env_value_names_the_variable_and_the_value() {
        for (var, value, expected) in [
            (
                "JOURNEYS_GRPC_ADDR",
                "x",
                "JOURNEYS_GRPC_ADDR: invalid socket address 'x'",
            ),
            (
                "JOURNEYS_LOG_FORMAT",
                "xml",
                "JOURNEYS_LOG_FORMAT: invalid log format 'xml'",
            ),
            (
                "JOURNEYS_DEDUPE_WINDOW_SECS",
                "-5",
                "JOURNEYS_DEDUPE_WINDOW_SECS: invalid number '-5'",
            ),
            (
                "JOURNEYS_ALLOW_SHORT_DURATIONS",
                "maybe",
                "JOURNEYS_ALLOW_SHORT_DURATIONS: invalid boolean 'maybe'",
            ),
        ] {
            let err = load_with_env(
                Service::ControlPlane,
                &ConfigArgs::default(),
                &env(&[(var, value)]),
            )
            .expect_err("must fail");
            assert!(err.to_string().starts_with(expected), "{err}");
        }
    }

    #[test]
    fn bad_file_value_names_the_file_and_the_key() {
        let file = toml_file("grpc_addr = \"nope\"\n");
        let args = ConfigArgs {
            config: Some(file.path().to_owned()),
            ..ConfigArgs::default()
        };
        let err =
            load_with_env(Service::ControlPlane, &args, &HashMap::new()).expect_err("must fail");
        let message = err.to_string();
        assert!(message.starts_with("config file "), "{message}");
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("key `grpc_addr` = \"nope\""), "{message}");
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let file = toml_file("grpc_adr = \"127.0.0.1:1\"\n");
        let args = ConfigArgs {
            config: Some(file.path().to_owned()),
            ..ConfigArgs::default()
        };
        let err =
            load_with_env(Service::ControlPlane, &args, &HashMap::new()).expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("grpc_adr"), "{message}");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn missing_and_malformed_files_are_reported() {
        let args = ConfigArgs {
            config: Some(PathBuf::from("/nonexistent/journeys.toml")),
            ..ConfigArgs::default()
        };
        let err =
            load_with_env(Service::ControlPlane, &args, &HashMap::new()).expect_err("must fail");
        assert!(
            err.to_string()
                .starts_with("config file /nonexistent/journeys.toml: cannot read"),
            "{err}"
        );

        let file = toml_file("grpc_addr = \n");
        let args = ConfigArgs {
            config: Some(file.path().to_owned()),
            ..ConfigArgs::default()
        };
        let err =
            load_with_env(Service::ControlPlane, &args, &HashMap::new()).expect_err("must fail");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn flags_parse_through_clap() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            config: ConfigArgs,
        }

        let cli = Cli::try_parse_from([
            "journeys",
            "--allow-short-durations",
            "--log-format",
            "json",
            "--grpc-addr",
            "127.0.0.1:9000",
            "--print-config",
        ])
        .expect("flags parse");
        assert_eq!(cli.config.allow_short_durations, Some(true));
        assert_eq!(cli.config.log_format, Some(LogFormat::Json));
        assert!(cli.config.print_config);
        let config = load_with_env(Service::Dev, &cli.config, &HashMap::new()).expect("loads");
        assert!(config.allow_short_durations);
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:9000");

        let cli =
            Cli::try_parse_from(["journeys", "--allow-short-durations=false"]).expect("parses");
        assert_eq!(cli.config.allow_short_durations, Some(false));

        let err = Cli::try_parse_from(["journeys", "--grpc-addr", "x"])
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("--grpc-addr"), "{err}");
    }
}
