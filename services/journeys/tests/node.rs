//! The composition root on `127.0.0.1:0`: a node refuses what it cannot serve before touching
//! the store, runs any subset of roles, and stops cleanly; `journeys serve --roles` parses the
//! roles it documents.

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

use std::process::Command;
use std::time::Duration;

use journeys::{Error, Listeners, Node, Role, Roles};
use journeys_runtime::config::{Config, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_tests::stack::wait_serving;
use tokio::net::TcpListener;

fn config(database_url: &str) -> Config {
    let mut config = Config::defaults_for(Service::Node);
    config.database_url = database_url.to_owned();
    config.destination_allow = journeys_tests::loopback();
    config
}

#[tokio::test]
async fn a_data_plane_without_an_http_listener_is_refused() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // Refused before the store is touched: this URL does not even parse as a database.
    let node = Node::new(config("not-a-database"), Roles::of(&[Role::DataPlane]));
    let result = node
        .serve(Listeners::new(grpc, None), std::future::pending())
        .await;
    assert!(
        matches!(result, Err(Error::NoHttpListener(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn journeys_dev_refuses_a_non_loopback_http_port_without_a_token() {
    // The demo sink lists every delivery it received: not for the network by accident.
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let node = Node::dev(config("not-a-database"));
    let result = node
        .serve(Listeners::new(grpc, Some(http)), std::future::pending())
        .await;
    let message = format!("{result:?}");
    assert!(matches!(result, Err(Error::Config(_))), "{message}");
    assert!(message.contains("without an admin token"), "{message}");
}

#[tokio::test]
async fn a_node_refuses_a_nonsensical_limit_before_touching_the_store() {
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = config("not-a-database");
    config.max_active_instances_per_profile = 0;
    let result = Node::new(config, Roles::of(&[Role::Delivery]))
        .serve(Listeners::new(grpc, None), std::future::pending())
        .await;
    let message = format!("{}", result.expect_err("refused"));
    assert!(
        message.contains("max_active_instances_per_profile: 0 is out of range"),
        "{message}"
    );
}

#[test]
fn the_binaries_refuse_bad_limits_at_start_naming_the_setting() {
    let output = Command::new(env!("CARGO_BIN_EXE_journeys"))
        .args(["dev", "--max-delay-secs", "60", "--min-delay-secs", "120"])
        .arg("--print-config")
        .output()
        .expect("journeys runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("min_delay_secs: 120 is more than max_delay_secs (60)"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_journeys-data-plane"))
        .env("JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC", "-3")
        .arg("--print-config")
        .output()
        .expect("journeys-data-plane runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("JOURNEYS_MAX_EVENTS_PER_PROFILE_PER_SEC: invalid number '-3'"),
        "{stderr}"
    );
    // The limits are shown by --print-config, as keys of a config file.
    let output = Command::new(env!("CARGO_BIN_EXE_journeys-scheduler"))
        .args(["--instance-retention-days", "30", "--print-config"])
        .output()
        .expect("journeys-scheduler runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in [
        "instance_retention_days = 30\n",
        "max_active_instances_per_profile = 25\n",
        "max_unique_value_chars = 500\n",
        "retry_budget_secs = 86400\n",
        "max_delay_secs = 15724800\n",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
}

#[tokio::test]
async fn a_delivery_only_node_serves_health_and_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("node.db").display());
    let mut config = config(&url);
    config.grpc_addr = "127.0.0.1:0".parse().expect("address");
    let node = Node::new(config, Roles::of(&[Role::Delivery]));
    assert!(!node.serves_http());
    let listeners = node.bind().await.expect("bind");
    assert_eq!(listeners.http_addr().expect("address"), None);
    let grpc = listeners.grpc_addr().expect("address");
    let shutdown = Shutdown::new();
    let task = tokio::spawn(node.serve(listeners, shutdown.wait()));
    wait_serving(grpc, || task.is_finished())
        .await
        .expect("health SERVING");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops in time")
        .expect("join")
        .expect("stopped cleanly");
}

#[test]
fn serve_takes_a_comma_separated_role_list_and_defaults_to_every_role() {
    let print = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_journeys"))
            .arg("serve")
            .args(args)
            .arg("--print-config")
            .output()
            .expect("journeys runs");
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    assert!(print(&["--roles", "data-plane,delivery"]).contains("# roles = data-plane,delivery\n"));
    let all = print(&[]);
    assert!(
        all.contains("# roles = control-plane,data-plane,scheduler,delivery\n"),
        "{all}"
    );
    assert!(
        all.contains("# scheduler: housekeeping_schedule = ")
            && all.contains("instance_retention_days = 90\n"),
        "{all}"
    );
}
