//! The scheduler process over real gRPC: a node with the roles of `journeys-scheduler` on an
//! ephemeral port, a tonic client, `GetSchedulerStats` and `ListTimers`, and the admin token.

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

mod common;

use std::time::Duration;

use journeys::{Listeners, Node, Roles};
use journeys_proto::v1::scheduler_service_client::SchedulerServiceClient;
use journeys_proto::v1::{GetSchedulerStatsRequest, GetSchedulerStatsResponse, ListTimersRequest};
use journeys_runtime::config::{Config, DEV_DESTINATION_ALLOW, Service};
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::{Code, Request};

use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};

use common::{
    CHECKOUT_STARTED, SIGNED_UP, delay_journey, destination, engine, hold_journey, instance_of,
    submit_all,
};

const TOKEN: &str = "scheduler-test-token";

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("ascii metadata"),
    );
    request
}

async fn stats(client: &mut SchedulerServiceClient<Channel>) -> GetSchedulerStatsResponse {
    client
        .get_scheduler_stats(authorized(GetSchedulerStatsRequest {}))
        .await
        .expect("GetSchedulerStats")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_stats_and_timers_over_grpc() {
    each_backend(async |db| {
        let store = db.store().clone();
        let destination = destination(&store).await;
        let delayed = publish(&store, &delay_journey(&destination, Duration::from_secs(1))).await;
        let held = publish(
            &store,
            &hold_journey(&destination, Duration::from_secs(3600)),
        )
        .await;

        let mut config = Config::defaults_for(Service::Scheduler);
        config.database_url = db.url().to_owned();
        config.admin_token = Some(TOKEN.to_owned());
        // The webhook sink listens on loopback.
        config.destination_allow = DEV_DESTINATION_ALLOW
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let node = Node::new(config, Roles::of_service(Service::Scheduler));
        let server = tokio::spawn(node.serve(Listeners::new(listener, None), async {
            let _ = stopped.await;
        }));

        // Events enter through an engine of their own (a data plane); the scheduler process
        // fires the timers they set.
        let ingest = engine(&store).await;
        let mut events: Vec<_> = (0..4)
            .map(|i| track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({})))
            .collect();
        events.push(track(
            "shopper",
            CHECKOUT_STARTED,
            "start",
            json!({"session_id": "s1"}),
        ));
        submit_all(&ingest, events).await;

        let channel = eventually("the server answers", Duration::from_secs(30), || async {
            Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .ok()
        })
        .await;
        let mut client = SchedulerServiceClient::new(channel);

        let denied = client
            .get_scheduler_stats(GetSchedulerStatsRequest {})
            .await
            .expect_err("no token");
        assert_eq!(denied.code(), Code::Unauthenticated);

        // Every delay fired and only the hour-long hold is left. (`fired_total` counts firings
        // the engine discarded too, e.g. a timer re-claimed after its lease while its first
        // firing was committing; effects stay exactly once, which the replica tests check.)
        let fired = eventually("four delays fired", Duration::from_secs(60), || {
            let mut client = client.clone();
            async move {
                let response = stats(&mut client).await;
                (response.fired_total >= 4 && response.pending_timers == 1).then_some(response)
            }
        })
        .await;
        assert_eq!(fired.pending_timers, 1);
        assert_eq!(fired.overdue_timers, 0);
        let next_due = fired.next_due_at.expect("next due time");
        let in_an_hour = chrono::Utc::now().timestamp() + 3600;
        assert!(
            (in_an_hour - 10..=in_an_hour + 10).contains(&next_due.seconds),
            "next due {next_due:?}"
        );
        let p50 = fired.lateness_p50.expect("p50");
        let p99 = fired.lateness_p99.expect("p99");
        assert!((p50.seconds, p50.nanos) <= (p99.seconds, p99.nanos));
        // The two parts of the lateness: before the engine call, and the call itself. The
        // delays were fired, so both were recorded (a call takes time).
        fired.wait_p99.expect("wait p99");
        let apply = fired.apply_p99.expect("apply p99");
        assert!(apply.seconds > 0 || apply.nanos > 0, "apply p99 {apply:?}");

        let instance = instance_of(&held, "start");
        let timers = client
            .list_timers(authorized(ListTimersRequest {
                instance_id: instance.clone(),
            }))
            .await
            .expect("ListTimers")
            .into_inner()
            .timers;
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].instance_id, instance);
        assert_eq!(timers[0].kind, "hold_timeout");
        assert_eq!(timers[0].step_key, "hold");
        assert_eq!(timers[0].due_at, Some(next_due));

        let fired_instance = instance_of(&delayed, "m0");
        let none = client
            .list_timers(authorized(ListTimersRequest {
                instance_id: fired_instance,
            }))
            .await
            .expect("ListTimers")
            .into_inner()
            .timers;
        assert!(none.is_empty());

        let invalid = client
            .list_timers(authorized(ListTimersRequest {
                instance_id: String::new(),
            }))
            .await
            .expect_err("empty instance id");
        assert_eq!(invalid.code(), Code::InvalidArgument);

        stop.send(()).expect("server still running");
        server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        ingest.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_public_address_without_a_token_is_refused() {
    let mut config = Config::defaults_for(Service::Scheduler);
    config.database_url = "sqlite::memory:".to_owned();
    let listener = TcpListener::bind("0.0.0.0:0").await.expect("bind");
    let result = Node::new(config, Roles::of_service(Service::Scheduler))
        .serve(Listeners::new(listener, None), std::future::pending())
        .await;
    let error = result.expect_err("must refuse");
    assert!(error.to_string().contains("admin token"), "{error}");
}
