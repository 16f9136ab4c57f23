//! The split deployment, on every backend: control plane, stand-alone data plane and scheduler
//! as separate nodes over one store, each with the roles its binary runs
//! (`journeys-control-plane`, `journeys-data-plane`, `journeys-scheduler`). A journey published
//! on the control plane reaches the data plane through the store; its delay is fired by the
//! scheduler; the webhook arrives.

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

use std::net::SocketAddr;
use std::time::Duration;

use journeys::{Node, Roles};
use journeys_proto::v1 as pb;
use journeys_runtime::config::{Config, Service};
use journeys_runtime::shutdown::Shutdown;
use journeys_testkit::Sink;
use journeys_tests::http::HttpClient;
use journeys_tests::ingest::{IngestStream, track};
use journeys_tests::stack::{JOURNEY_CACHE_REFRESH, wait_serving};
use journeys_tests::{StackClients, on_each_backend};
use serde_json::json;
use tokio::task::JoinHandle;

/// One node started as its binary would start it.
struct Server {
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    shutdown: Shutdown,
    task: JoinHandle<Result<(), journeys::Error>>,
}

impl Server {
    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .map_err(|_| anyhow::anyhow!("did not stop within 30 s"))???;
        Ok(())
    }
}

/// Starts the node of the binary `service` on `127.0.0.1:0`.
async fn start(service: Service, url: &str) -> anyhow::Result<Server> {
    let mut config = Config::defaults_for(service);
    config.database_url = url.to_owned();
    config.allow_short_durations = true;
    config.grpc_addr = "127.0.0.1:0".parse()?;
    config.http_addr = "127.0.0.1:0".parse()?;
    // The webhook sink listens on loopback.
    config.destination_allow = journeys_tests::loopback();
    let node = Node::new(config, Roles::of_service(service));
    let listeners = node.bind().await?;
    let grpc = listeners.grpc_addr()?;
    let http = listeners.http_addr()?;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(node.serve(listeners, shutdown.wait()));
    wait_serving(grpc, || task.is_finished()).await?;
    Ok(Server {
        grpc,
        http,
        shutdown,
        task,
    })
}

#[tokio::test]
async fn control_plane_data_plane_and_scheduler_work_as_separate_servers() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let control = start(Service::ControlPlane, &url).await?;
        let data = start(Service::DataPlane, &url).await?;
        let scheduler = start(Service::Scheduler, &url).await?;

        let mut c = StackClients::connect(control.grpc, None).await?;
        let mut ingest = StackClients::connect(data.grpc, None).await?.ingest;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["form_submitted", "download"]).await?;
        c.publish(&json!({"journey": {
            "id": "forms", "name": "Forward forms",
            "entry": {"event": "form_submitted"},
            "entry_rule": "REENTER_EVERY_TIME", "unique_identifier": "form_id",
            "start_step": "send",
            "steps": [{"key": "send", "name": "Send", "send": {
                "destination_id": "hook", "action": {"path": "/forms"}
            }}]
        }}))
        .await?;
        c.publish(&json!({"journey": {
            "id": "downloads", "name": "Follow up downloads",
            "entry": {"event": "download"},
            "entry_rule": "REENTER_EVERY_TIME", "unique_identifier": "file",
            "start_step": "later",
            "steps": [
                {"key": "later", "name": "Wait a moment", "delay": {"duration": "2s", "next": "send"}},
                {"key": "send", "name": "Follow up", "send": {
                    "destination_id": "hook", "action": {"path": "/downloads"}
                }}
            ]
        }}))
        .await?;

        // The data plane learns of both journeys through the store.
        tokio::time::sleep(JOURNEY_CACHE_REFRESH).await;

        // gRPC stream and HTTP, both on the data plane.
        let mut stream = IngestStream::open(&mut ingest, &key).await?;
        stream
            .send(track("u1", "form_submitted", "f-1", &json!({"form_id": "F1"})))
            .await?;
        stream
            .send(track("u1", "download", "d-1", &json!({"file": "guide.pdf"})))
            .await?;
        let acks = stream.acks(2, Duration::from_secs(10)).await?;
        assert!(
            acks.iter()
                .all(|a| a.status == pb::AckStatus::Accepted as i32),
            "{acks:?}"
        );
        let http_base = data
            .http
            .map(|a| format!("http://{a}"))
            .ok_or_else(|| anyhow::anyhow!("no HTTP address"))?;
        let reply = HttpClient::new(http_base)
            .post_json(
                "/v1/track",
                Some(&key),
                &json!({"userId": "u2", "messageId": "f-2", "event": "form_submitted",
                        "properties": {"form_id": "F2"}}),
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);

        let received = sink.wait_for(3, Duration::from_secs(30)).await;
        let mut paths: Vec<(&str, &str)> = received
            .iter()
            .map(|r| (r.path.as_str(), r.body["userId"].as_str().unwrap_or_default()))
            .collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [("/downloads", "u1"), ("/forms", "u1"), ("/forms", "u2")]
        );
        let download = received
            .iter()
            .find(|r| r.path == "/downloads")
            .ok_or_else(|| anyhow::anyhow!("no follow-up"))?;
        let form = received
            .iter()
            .find(|r| r.body["userId"] == "u1" && r.path == "/forms")
            .ok_or_else(|| anyhow::anyhow!("no form"))?;
        assert!(
            download.at.duration_since(form.at) >= Duration::from_millis(1500),
            "the follow-up waits for its delay"
        );

        // A graceful stop of the data plane ends the open stream and drains the engine.
        stream.close();
        data.stop().await?;
        scheduler.stop().await?;
        control.stop().await?;
        assert_eq!(sink.settle(Duration::from_millis(500)).await.len(), 3);
        sink.stop().await;
        Ok(())
    })
    .await
}
