//! `docker/` checked against the binaries, since Docker itself is not available to the tests.
//!
//! - Every variable `docker/compose.yaml` sets on a Journeys service is one the services read
//!   (`journeys_runtime::config::ENV_VARS`), and the values load through the same configuration
//!   loader the binaries use, pass the bind check (non-loopback needs an admin token) and point
//!   at services the file defines.
//! - Every `command:` names a binary of the workspace that the Dockerfile builds (and the
//!   Dockerfile builds nothing else), with flags that binary accepts.
//! - Start-up order: MySQL healthy → migrations once → the services; two scheduler replicas; the
//!   collector's configuration is mounted and feeds Jaeger.
//!
//! compose.yaml is read with a small parser for the block-style YAML subset it uses (nested
//! mappings, `- item` lists, JSON-style `[...]` lists); anything else fails the test.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use journeys_runtime::auth::check_bind;
use journeys_runtime::config::{ConfigArgs, ENV_VARS, Service, load_with_env};

/// The image the compose file builds from docker/Dockerfile.
const JOURNEYS_IMAGE: &str = "journeys:local";

/// Stands in for `${JOURNEYS_ADMIN_TOKEN:?…}`, which the operator must export.
const TOKEN_STAND_IN: &str = "compose-test-token";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_root().join(relative))
        .unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

// ---- a small YAML reader for compose.yaml ----------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Scalar(String),
    List(Vec<String>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn entries(&self) -> &[(String, Node)] {
        match self {
            Node::Map(entries) => entries,
            _ => &[],
        }
    }

    fn scalar(&self) -> Option<&str> {
        match self {
            Node::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// A block list, or a JSON-style flow list of strings.
    fn list(&self) -> Vec<String> {
        match self {
            Node::List(items) => items.clone(),
            Node::Scalar(s) if s.starts_with('[') => serde_json::from_str(s)
                .unwrap_or_else(|e| panic!("flow list {s} is not a list of strings: {e}")),
            Node::Scalar(s) => vec![s.clone()],
            Node::Map(_) => panic!("expected a list, found a mapping"),
        }
    }
}

/// Lines without comments and blanks, as (indent, text).
fn yaml_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            (indent, line.trim().to_owned())
        })
        .collect()
}

fn unquote(value: &str) -> String {
    let value = value.trim();
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_owned();
        }
    }
    value.to_owned()
}

/// Parses the block starting at `lines[*at]` whose lines are indented exactly `indent`.
fn parse_block(lines: &[(usize, String)], at: &mut usize, indent: usize) -> Node {
    if lines[*at].1.starts_with("- ") {
        let mut items = Vec::new();
        while *at < lines.len() && lines[*at].0 == indent && lines[*at].1.starts_with("- ") {
            items.push(unquote(&lines[*at].1[2..]));
            *at += 1;
        }
        return Node::List(items);
    }
    let mut entries = Vec::new();
    while *at < lines.len() && lines[*at].0 == indent {
        let line = &lines[*at].1;
        let (key, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("compose.yaml: expected `key: value`, found {line:?}"));
        let (key, value) = (unquote(key), value.trim().to_owned());
        *at += 1;
        let node = if !value.is_empty() {
            Node::Scalar(if value.starts_with('[') {
                value
            } else {
                unquote(&value)
            })
        } else if *at < lines.len() && lines[*at].0 > indent {
            let child = lines[*at].0;
            parse_block(lines, at, child)
        } else {
            Node::Scalar(String::new())
        };
        entries.push((key, node));
    }
    assert!(
        *at >= lines.len() || lines[*at].0 < indent,
        "compose.yaml: unexpected indentation at {:?}",
        lines[*at].1
    );
    Node::Map(entries)
}

fn compose() -> Node {
    let lines = yaml_lines(&read("docker/compose.yaml"));
    let mut at = 0;
    let root = parse_block(&lines, &mut at, 0);
    assert_eq!(at, lines.len(), "compose.yaml was not read to its end");
    root
}

fn services(root: &Node) -> &[(String, Node)] {
    root.get("services")
        .expect("compose.yaml has services")
        .entries()
}

/// The services that run the Journeys image, with their command.
fn journeys_services(root: &Node) -> Vec<(&str, &Node, Vec<String>)> {
    let found: Vec<_> = services(root)
        .iter()
        .filter(|(_, service)| service.get("image").and_then(Node::scalar) == Some(JOURNEYS_IMAGE))
        .map(|(name, service)| {
            let command = service
                .get("command")
                .unwrap_or_else(|| panic!("service {name} names no command"))
                .list();
            (name.as_str(), service, command)
        })
        .collect();
    assert!(!found.is_empty(), "no service runs {JOURNEYS_IMAGE}");
    found
}

/// `environment:` of a service, with `${VAR:?…}` / `${VAR:-…}` / `${VAR}` interpolated: the
/// admin token by a stand-in, defaults by their default.
fn environment(name: &str, service: &Node) -> HashMap<String, String> {
    service
        .get("environment")
        .map(Node::entries)
        .unwrap_or_default()
        .iter()
        .map(|(key, value)| {
            let value = value
                .scalar()
                .unwrap_or_else(|| panic!("{name}: {key} is not a plain value"));
            (key.clone(), interpolate(name, key, value))
        })
        .collect()
}

fn interpolate(service: &str, key: &str, value: &str) -> String {
    let Some(inner) = value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) else {
        assert!(
            !value.contains("${"),
            "{service}: {key} mixes text and interpolation"
        );
        return value.to_owned();
    };
    if let Some((var, _message)) = inner.split_once(":?") {
        assert_eq!(
            var, "JOURNEYS_ADMIN_TOKEN",
            "{service}: only the admin token is required from the operator"
        );
        return TOKEN_STAND_IN.to_owned();
    }
    if let Some((_, default)) = inner.split_once(":-") {
        return default.to_owned();
    }
    panic!("{service}: {key} = {value} has no default; use ${{VAR:-default}} or ${{VAR:?why}}")
}

fn depends_on(service: &Node) -> BTreeMap<&str, &str> {
    service
        .get("depends_on")
        .map(Node::entries)
        .unwrap_or_default()
        .iter()
        .map(|(name, spec)| {
            let condition = spec
                .get("condition")
                .and_then(Node::scalar)
                .unwrap_or("service_started");
            (name.as_str(), condition)
        })
        .collect()
}

/// The process configuration a command loads.
fn service_kind(command: &[String]) -> Service {
    match command.first().map(String::as_str) {
        Some("journeys-control-plane") => Service::ControlPlane,
        Some("journeys-data-plane") => Service::DataPlane,
        Some("journeys-scheduler") => Service::Scheduler,
        Some("journeys") => Service::Dev,
        other => panic!("unknown Journeys command {other:?}"),
    }
}

/// `host:port` of a URL such as `http://otel-collector:4317` or `mysql://u:p@mysql:3306/db`.
fn url_host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{url} names no port"));
    (
        host.to_owned(),
        port.parse()
            .unwrap_or_else(|_| panic!("{url}: bad port {port}")),
    )
}

// ---- the workspace and the Dockerfile ----------------------------------------------------------

/// Binaries of the workspace: `[[bin]]` names, or the package name of a `src/main.rs`.
fn workspace_binaries() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("workspace members");
    let mut binaries = BTreeSet::new();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let text = read(&format!("{member}/Cargo.toml"));
        let mut section = String::new();
        let mut explicit = false;
        let mut package = None;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let Some(name) = line
                .strip_prefix("name")
                .map(str::trim_start)
                .and_then(|l| l.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
            else {
                continue;
            };
            match section.as_str() {
                "[package]" => package = Some(name),
                "[[bin]]" => {
                    explicit = true;
                    binaries.insert(name);
                }
                _ => {}
            }
        }
        if !explicit && repo_root().join(member).join("src/main.rs").is_file() {
            binaries.insert(package.expect("package name"));
        }
    }
    binaries
}

/// The Dockerfile with line continuations joined.
fn dockerfile() -> String {
    read("docker/Dockerfile").replace("\\\n", " ")
}

/// The binaries `cargo build --bin …` builds in the Dockerfile.
fn dockerfile_binaries(dockerfile: &str) -> BTreeSet<String> {
    let mut built = BTreeSet::new();
    for line in dockerfile.lines().filter(|l| l.contains("cargo build")) {
        let mut words = line.split_whitespace();
        while let Some(word) = words.next() {
            if word == "--bin" {
                built.insert(words.next().expect("--bin NAME").to_owned());
            }
        }
    }
    built
}

// ---- tests ------------------------------------------------------------------------------------

#[test]
fn compose_sets_only_variables_the_services_read() {
    let root = compose();
    let known: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
    for (name, service, _) in journeys_services(&root) {
        let env = environment(name, service);
        assert!(!env.is_empty(), "{name} is configured by environment");
        for var in env.keys() {
            assert!(
                known.contains(var.as_str()),
                "{name} sets {var}, which no Journeys process reads (ENV_VARS: {known:?})"
            );
        }
    }
}

#[test]
fn compose_environment_loads_and_is_safe_to_bind() {
    let root = compose();
    let defined: BTreeSet<&str> = services(&root).iter().map(|(n, _)| n.as_str()).collect();
    let collector = read("docker/otel-collector.yaml");
    for (name, service, command) in journeys_services(&root) {
        let env = environment(name, service);
        let kind = service_kind(&command);
        let config = load_with_env(kind, &ConfigArgs::default(), &env)
            .unwrap_or_else(|e| panic!("{name}: the environment does not load: {e}"));

        let (db_host, _) = url_host_port(&config.database_url);
        assert!(
            config.database_url.starts_with("mysql://") && defined.contains(db_host.as_str()),
            "{name}: JOURNEYS_DATABASE_URL should name the compose MySQL service: {}",
            config.database_url
        );

        if kind == Service::Dev {
            // `journeys migrate` listens on nothing; it needs the database only.
            continue;
        }
        check_bind(&config.grpc_addr, &config.admin_token)
            .unwrap_or_else(|e| panic!("{name} would refuse to start: {e}"));
        assert!(
            !config.grpc_addr.ip().is_loopback(),
            "{name}: a loopback gRPC address is unreachable from other containers"
        );
        let mut listening = vec![config.grpc_addr.port()];
        if kind == Service::DataPlane {
            assert!(
                !config.http_addr.ip().is_loopback(),
                "{name}: a loopback HTTP address is unreachable from other containers"
            );
            listening.push(config.http_addr.port());
        }
        if let Some(ports) = service.get("ports") {
            for mapping in ports.list() {
                let container_port: u16 = mapping
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: bad port mapping {mapping}"));
                assert!(
                    listening.contains(&container_port),
                    "{name} publishes {container_port}, but listens on {listening:?}"
                );
            }
        }

        let endpoint = config
            .otlp_endpoint
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: OTEL_EXPORTER_OTLP_ENDPOINT is not set"));
        let (host, port) = url_host_port(endpoint);
        assert!(
            defined.contains(host.as_str()),
            "{name}: the OTLP endpoint {endpoint} is not a compose service"
        );
        assert!(
            collector.contains(&format!("0.0.0.0:{port}")),
            "{name}: the collector does not receive OTLP on {port}"
        );
    }
}

#[test]
fn journeys_migrate_takes_the_compose_environment() {
    let root = compose();
    let (name, service, command) = journeys_services(&root)
        .into_iter()
        .find(|(_, _, command)| command.first().map(String::as_str) == Some("journeys"))
        .expect("a service runs the `journeys` command");
    assert_eq!(command, ["journeys", "migrate"], "{name}");
    let mut run = Command::new(env!("CARGO_BIN_EXE_journeys"));
    for var in ENV_VARS {
        run.env_remove(var);
    }
    let output = run
        .args(&command[1..])
        .arg("--print-config")
        .envs(environment(name, service))
        .output()
        .expect("journeys runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("database_url = \"mysql://journeys:********@mysql:3306/journeys\""),
        "{name} prints:\n{printed}"
    );
}

#[test]
fn commands_are_binaries_the_dockerfile_builds_with_flags_they_accept() {
    let root = compose();
    let dockerfile = dockerfile();
    let built = dockerfile_binaries(&dockerfile);
    let workspace = workspace_binaries();
    for binary in &built {
        assert!(
            workspace.contains(binary),
            "the Dockerfile builds {binary}, which is not a binary of the workspace ({workspace:?})"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{binary} ")),
            "the Dockerfile builds {binary} but does not copy it into the runtime image"
        );
    }

    let commands = journeys_services(&root);
    let run: BTreeSet<String> = commands
        .iter()
        .map(|(_, _, command)| command[0].clone())
        .collect();
    assert_eq!(
        run, built,
        "the Dockerfile must build exactly the binaries compose runs"
    );

    for (name, _, command) in &commands {
        let (binary, args) = command.split_first().expect("a command");
        if binary == "journeys" {
            // The real binary: its subcommand and flags, answered by clap.
            let output = Command::new(env!("CARGO_BIN_EXE_journeys"))
                .args(args)
                .arg("--help")
                .output()
                .expect("journeys runs");
            assert!(
                output.status.success(),
                "{name}: `journeys {}` is not a command: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        } else {
            // The service binaries (built beside `journeys`, in this package) answered by clap.
            let exe = match binary.as_str() {
                "journeys-control-plane" => env!("CARGO_BIN_EXE_journeys-control-plane"),
                "journeys-data-plane" => env!("CARGO_BIN_EXE_journeys-data-plane"),
                "journeys-scheduler" => env!("CARGO_BIN_EXE_journeys-scheduler"),
                other => panic!("{name}: {other} is not a Journeys service binary"),
            };
            let output = Command::new(exe)
                .args(args)
                .arg("--help")
                .output()
                .expect("the binary runs");
            assert!(
                output.status.success(),
                "{name}: {binary} does not accept {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

#[test]
fn services_wait_for_mysql_and_the_migration_and_schedulers_run_twice() {
    let root = compose();
    let all = services(&root);
    let service = |name: &str| {
        all.iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| panic!("compose.yaml has no {name} service"), |(_, s)| s)
    };

    let mysql = service("mysql");
    assert!(
        mysql
            .get("image")
            .and_then(Node::scalar)
            .is_some_and(|image| image.starts_with("mysql:8")),
        "MySQL 8"
    );
    assert!(
        mysql
            .get("healthcheck")
            .and_then(|h| h.get("test"))
            .is_some(),
        "MySQL has a healthcheck for the others to wait on"
    );

    let journeys = journeys_services(&root);
    let migrations: Vec<_> = journeys
        .iter()
        .filter(|(_, _, command)| command == &["journeys", "migrate"])
        .collect();
    assert_eq!(migrations.len(), 1, "one migration service");
    let (migrate_name, migrate, _) = migrations[0];
    assert_eq!(
        depends_on(migrate).get("mysql"),
        Some(&"service_healthy"),
        "{migrate_name} waits for MySQL to be healthy"
    );
    assert!(
        migrate.get("deploy").is_none(),
        "{migrate_name} runs once, not replicated"
    );

    for (name, service, command) in &journeys {
        if command[0] == "journeys" {
            continue;
        }
        assert_eq!(
            depends_on(service).get(migrate_name),
            Some(&"service_completed_successfully"),
            "{name} starts only after the migrations succeeded"
        );
    }

    let schedulers: Vec<_> = journeys
        .iter()
        .filter(|(_, _, command)| command[0] == "journeys-scheduler")
        .collect();
    assert_eq!(schedulers.len(), 1, "one scheduler service, replicated");
    let replicas = schedulers[0]
        .1
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .and_then(Node::scalar);
    assert_eq!(replicas, Some("2"), "two scheduler replicas");

    // The collector's configuration is mounted and its trace exporter reaches Jaeger.
    let collector = service("otel-collector");
    let mounted = collector.get("volumes").map(Node::list).unwrap_or_default();
    assert!(
        mounted
            .iter()
            .any(|v| v.starts_with("./otel-collector.yaml:")),
        "the collector mounts docker/otel-collector.yaml: {mounted:?}"
    );
    let config = read("docker/otel-collector.yaml");
    let collector_config = collector.get("command").map(Node::list).unwrap_or_default();
    let target = mounted
        .iter()
        .find_map(|v| v.strip_prefix("./otel-collector.yaml:"))
        .map(|t| t.trim_end_matches(":ro"))
        .expect("mount target");
    assert!(
        collector_config
            .iter()
            .any(|arg| arg == &format!("--config={target}")),
        "the collector is started with the mounted file: {collector_config:?}"
    );
    let jaeger = service("jaeger");
    assert!(jaeger.get("image").is_some());
    assert!(
        config.contains("endpoint: jaeger:4317"),
        "the collector exports traces to the jaeger service"
    );
}

#[test]
fn data_plane_replicas_share_the_nats_log_behind_one_address() {
    let root = compose();
    let all = services(&root);
    let service = |name: &str| {
        all.iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| panic!("compose.yaml has no {name} service"), |(_, s)| s)
    };
    let journeys = journeys_services(&root);
    let data_planes: Vec<_> = journeys
        .iter()
        .filter(|(_, _, command)| command[0] == "journeys-data-plane")
        .collect();
    assert_eq!(data_planes.len(), 1, "one data-plane service, replicated");
    let (name, data_plane, _) = data_planes[0];
    let replicas = data_plane
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .and_then(Node::scalar);
    assert_eq!(replicas, Some("2"), "two data-plane replicas");
    assert!(
        data_plane.get("ports").is_none(),
        "{name}: the replicas publish no ports; the ingest proxy does"
    );

    // The replicas share the NATS service, which runs JetStream.
    let env = environment(name, data_plane);
    let config = load_with_env(Service::DataPlane, &ConfigArgs::default(), &env)
        .unwrap_or_else(|e| panic!("{name}: the environment does not load: {e}"));
    let nats_url = config.nats_url.expect("JOURNEYS_NATS_URL is set");
    let (host, port) = url_host_port(&nats_url);
    assert_eq!(port, 4222, "{nats_url}");
    let nats = service(&host);
    assert!(
        nats.get("image")
            .and_then(Node::scalar)
            .is_some_and(|image| image.starts_with("nats:")),
        "{host} runs NATS"
    );
    let args = nats.get("command").map(Node::list).unwrap_or_default();
    assert!(
        args.iter().any(|a| a == "-js"),
        "NATS runs JetStream: {args:?}"
    );
    assert_eq!(
        depends_on(data_plane).get(host.as_str()),
        Some(&"service_started")
    );

    // One address in front: nginx, with its configuration mounted, reaching both ports.
    let ingest = service("ingest");
    let mounted = ingest.get("volumes").map(Node::list).unwrap_or_default();
    assert!(
        mounted
            .iter()
            .any(|v| v == "./ingest-nginx.conf:/etc/nginx/nginx.conf:ro"),
        "the proxy mounts docker/ingest-nginx.conf: {mounted:?}"
    );
    let proxy = read("docker/ingest-nginx.conf");
    for port in [config.grpc_addr.port(), config.http_addr.port()] {
        assert!(
            proxy.contains(&format!("server {name}:{port};")),
            "the proxy forwards to {name}:{port}"
        );
        assert!(
            proxy.contains(&format!("listen {port};")),
            "the proxy listens on {port}"
        );
        let published = ingest.get("ports").map(Node::list).unwrap_or_default();
        assert!(
            published
                .iter()
                .any(|p| p == &format!("127.0.0.1:{port}:{port}")),
            "the proxy publishes {port}: {published:?}"
        );
    }
    assert!(
        proxy.contains("grpc_pass grpc://"),
        "gRPC is proxied as gRPC"
    );
}
