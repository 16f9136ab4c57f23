//! The stand-alone data-plane process (a node with the roles of `journeys-data-plane`)
//! publishes its fairness watermark as a heartbeat row in the store while it runs, and removes
//! the row when it shuts down gracefully.

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

use std::time::{Duration, Instant};

use journeys::{Listeners, Node, Roles};
use journeys_runtime::config::{Config, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_testkit::each_backend;
use tokio::net::TcpListener;

const LEASE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_beats_while_it_runs_and_removes_its_row_on_shutdown() {
    each_backend(async |db| {
        let mut config = Config::defaults_for(Service::DataPlane);
        config.database_url = db.url().to_owned();
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stop = Shutdown::new();
        let node = Node::new(config, Roles::of_service(Service::DataPlane));
        let running = tokio::spawn(node.serve(Listeners::new(grpc, Some(http)), stop.wait()));

        let started = Instant::now();
        let low = loop {
            if let Some(low) = db
                .watermarks()
                .low(chrono::Utc::now(), LEASE)
                .await
                .expect("low")
            {
                break low;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no heartbeat");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Idle: the watermark keeps up with the clock.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = db
            .watermarks()
            .low(chrono::Utc::now(), LEASE)
            .await
            .expect("low")
            .expect("a live replica");
        assert!(later > low);

        stop.trigger();
        running.await.expect("join").expect("serve");
        assert_eq!(
            db.watermarks()
                .low(chrono::Utc::now(), LEASE)
                .await
                .expect("low"),
            None
        );
    })
    .await;
}
