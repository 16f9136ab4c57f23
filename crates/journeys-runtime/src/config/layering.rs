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
/// `telemetry::init`; the two `JOURNEYS_*` names after `OTEL_EXPORTER_OTLP_ENDPOINT` only by
/// `journeys-scheduler`'s own flags.
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
    "JOURNEYS_DESTINATION_ALLOW",
    "JOURNEYS_MAX_PROFILE_TRAITS",
    "JOURNEYS_MAX_PROFILE_TRAITS_BYTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "JOURNEYS_INSTANCE_RETENTION_DAYS",
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
    if !(1..=super::MAX_PARTITIONS).contains(&config.partitions) {
        return Err(ConfigError::Invalid(format!(
            "partitions: {} is out of range (1 to {})",
            config.partitions,
            super::MAX_PARTITIONS
        )));
    }
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
        destination_allow,
        max_profile_traits,
        max_profile_traits_bytes,
    } = args;
    if let Some(v) = database_url {
        v.clone_into(&mut config.database_url);
    }
    if let Some(v) = grpc_addr {
        config.grpc_addr = *v;
    }
    if let Some(v) = http_addr {
        config.http_addr = *v;
    }
    if let Some(v) = admin_token {
        config.admin_token = Some(v.clone());
    }
    if let Some(v) = allow_short_durations {
        config.allow_short_durations = *v;
    }
    if let Some(v) = log_format {
        config.log_format = *v;
    }
    if let Some(v) = otlp_endpoint {
        config.otlp_endpoint = Some(v.clone());
    }
    if let Some(v) = dedupe_window_secs {
        config.dedupe_window_secs = *v;
    }
    if let Some(v) = node_id {
        config.node_id = Some(v.clone());
    }
    if let Some(v) = partitions {
        config.partitions = *v;
    }
    if let Some(v) = destination_allow {
        config.destination_allow.clone_from(v);
    }
    if let Some(v) = max_profile_traits {
        config.max_profile_traits = *v;
    }
    if let Some(v) = max_profile_traits_bytes {
        config.max_profile_traits_bytes = *v;
    }
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
