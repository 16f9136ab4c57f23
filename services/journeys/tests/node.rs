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
