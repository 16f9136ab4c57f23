//! `journeys.v1.IngestService` end to end: a real server over a real store, a tonic client, and
//! a recording sink standing in for the engine.

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

use common::{Harness, WRITE_KEY, basic, create_source};
use journeys_core::model::EventType;
use journeys_data_plane::{MAX_BATCH_EVENTS, SERVICE_NAME, serve_with};
use journeys_proto::v1::ingest_request::Payload;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_proto::v1::{self as pb, AckStatus};
use journeys_testkit::each_backend;
use prost_types::value::Kind;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request};

fn event(message_id: &str, user_id: &str, name: &str) -> pb::Event {
    pb::Event {
        r#type: pb::EventType::Track.into(),
        message_id: message_id.to_owned(),
        user_id: user_id.to_owned(),
        event: name.to_owned(),
        ..Default::default()
    }
}

fn with_properties(mut event: pb::Event, properties: &Value) -> pb::Event {
    event.properties = Some(to_struct(properties));
    event
}

fn to_struct(value: &Value) -> prost_types::Struct {
    let Value::Object(map) = value else {
        panic!("not an object")
    };
    prost_types::Struct {
        fields: map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
    }
}

fn to_value(value: &Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(to_struct(value)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn authed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-write-key", WRITE_KEY.parse().unwrap());
    request
}

fn single(event: pb::Event) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(Payload::Event(event)),
    }
}

fn batch(events: Vec<pb::Event>) -> pb::IngestRequest {
    pb::IngestRequest {
        payload: Some(Payload::Batch(pb::EventBatch { events })),
    }
}

/// `(message_id, status, code)` of each ack.
fn summary(acks: &[pb::Ack]) -> Vec<(String, AckStatus, String)> {
    acks.iter()
        .map(|a| (a.message_id.clone(), a.status(), a.code.clone()))
        .collect()
}

fn ack(id: &str, status: AckStatus, code: &str) -> (String, AckStatus, String) {
    (id.to_owned(), status, code.to_owned())
}

#[tokio::test]
async fn the_stream_pipelines_requests_and_answers_in_order() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let mut client = h.grpc_client().await;
        let (tx, rx) = mpsc::channel(16);
        // The sink holds the first request's ack for 1.5 s; the others are quick.
        tx.send(single(with_properties(
            event("s-1", "u1", "Slow"),
            &json!({"delay_ms": 1500}),
        )))
        .await
        .unwrap();
        tx.send(batch(vec![
            event("s-2", "u2", "Fine"),
            event("s-3", "", "No Profile"),
            with_properties(
                event("s-4", "u2", "Again"),
                &json!({"outcome": "duplicate"}),
            ),
            event("s-5", "u3", ""),
        ]))
        .await
        .unwrap();
        tx.send(single(event("", "u4", "Generated Id")))
            .await
            .unwrap();
        tx.send(pb::IngestRequest { payload: None }).await.unwrap();

        let mut responses = client
            .ingest(authed(ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();

        // Pipelined: while the first request waits for its ack, the later ones reach the
        // sink (one at a time, they would wait 1.5 s behind it).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while h.sink.ids().len() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "later requests wait behind the first: {:?}",
                h.sink.ids()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(&h.sink.ids()[..3], ["s-1", "s-2", "s-4"]);

        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(
            summary(&first.acks),
            vec![ack("s-1", AckStatus::Accepted, "")]
        );

        let second = responses.message().await.unwrap().unwrap();
        assert_eq!(
            summary(&second.acks),
            vec![
                ack("s-2", AckStatus::Accepted, ""),
                ack("s-3", AckStatus::Rejected, "missing_user_id"),
                ack("s-4", AckStatus::Duplicate, ""),
                ack("s-5", AckStatus::Rejected, "missing_event"),
            ]
        );
        assert_eq!(
            second.acks[1].message,
            "batch.events[1].user_id: user_id or anonymous_id is required"
        );

        let third = responses.message().await.unwrap().unwrap();
        assert_eq!(third.acks.len(), 1);
        assert_eq!(third.acks[0].status(), AckStatus::Accepted);
        assert!(!third.acks[0].message_id.is_empty(), "a generated id");
        assert_eq!(third.acks[0].message_id, h.sink.ids()[3]);

        let empty = responses.message().await.unwrap().unwrap();
        assert!(empty.acks.is_empty());

        drop(tx);
        assert!(
            responses.message().await.unwrap().is_none(),
            "the stream ends"
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_unreadable_stream_message_ends_the_stream_with_an_error_not_ok() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let mut client = h
            .grpc_client()
            .await
            .max_encoding_message_size(64 * 1024 * 1024);
        // Over the server's 4 MB message limit: the server cannot decode it.
        let huge = with_properties(
            event("huge", "u", "e"),
            &json!({"blob": "x".repeat(5 * 1024 * 1024)}),
        );
        let requests = vec![
            single(event("before", "u", "e")),
            single(huge),
            single(event("after", "u", "e")),
        ];
        let mut responses = client
            .ingest(authed(tokio_stream::iter(requests)))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(
            summary(&first.acks),
            vec![ack("before", AckStatus::Accepted, "")]
        );
        let status = responses
            .message()
            .await
            .expect_err("the stream ends with an error status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("request 2 of the stream could not be read"),
            "{}",
            status.message()
        );
        assert_eq!(h.sink.ids(), vec!["before"]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_stream_refuses_oversize_batches_and_events_per_event() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let mut client = h.grpc_client().await;
        let too_many: Vec<pb::Event> = (0..=MAX_BATCH_EVENTS)
            .map(|i| event(&format!("many-{i}"), "u", "e"))
            .collect();
        let big = with_properties(
            event("big", "u", "e"),
            &json!({"blob": "x".repeat(40 * 1024)}),
        );
        let requests = vec![batch(too_many), batch(vec![big, event("small", "u", "e")])];
        let mut responses = client
            .ingest(authed(tokio_stream::iter(requests)))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(first.acks.len(), MAX_BATCH_EVENTS + 1);
        assert!(
            first
                .acks
                .iter()
                .all(|a| a.status() == AckStatus::Rejected && a.code == "too_many_events")
        );
        let second = responses.message().await.unwrap().unwrap();
        assert_eq!(
            summary(&second.acks),
            vec![
                ack("big", AckStatus::Rejected, "event_too_large"),
                ack("small", AckStatus::Accepted, ""),
            ]
        );
        assert_eq!(h.sink.ids(), vec!["small"]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unary_track_identify_and_batch() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let mut client = h.grpc_client().await;

        let tracked = client
            .track(authed(event("u-1", "u1", "Viewed")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(tracked.message_id, "u-1");
        assert_eq!(tracked.status(), AckStatus::Accepted);

        let identify = pb::Event {
            message_id: "u-2".into(),
            user_id: "u1".into(),
            traits: Some(to_struct(&json!({"plan": "pro", "seats": 3}))),
            ..Default::default()
        };
        let identified = client
            .identify(authed(identify))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(identified.status(), AckStatus::Accepted);

        let limited = client
            .track(authed(with_properties(
                event("u-3", "u1", "Spam"),
                &json!({"outcome": "rate_limited"}),
            )))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(limited.status(), AckStatus::Rejected);
        assert_eq!(limited.code, "rate_limited");

        let results = client
            .batch(authed(pb::BatchRequest {
                events: vec![
                    event("u-4", "u2", "A"),
                    pb::Event {
                        r#type: pb::EventType::Page.into(),
                        message_id: "u-5".into(),
                        anonymous_id: "a2".into(),
                        ..Default::default()
                    },
                    event("u-6", "", "B"),
                ],
            }))
            .await
            .unwrap()
            .into_inner()
            .results;
        assert_eq!(
            summary(&results),
            vec![
                ack("u-4", AckStatus::Accepted, ""),
                ack("u-5", AckStatus::Accepted, ""),
                ack("u-6", AckStatus::Rejected, "missing_user_id"),
            ]
        );

        let events = h.sink.events();
        let kinds: Vec<(&str, EventType)> = events
            .iter()
            .map(|e| (e.message_id.as_str(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("u-1", EventType::Track),
                ("u-2", EventType::Identify),
                ("u-3", EventType::Track),
                ("u-4", EventType::Track),
                ("u-5", EventType::Page),
            ]
        );
        assert_eq!(events[1].traits, json!({"plan": "pro", "seats": 3}));

        let status = client
            .track(authed(event("u-7", "u1", "")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "event: is required for track");
        let status = client
            .identify(authed(pb::Event {
                r#type: pb::EventType::Track.into(),
                user_id: "u".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = client
            .batch(authed(pb::BatchRequest {
                events: vec![event("", "u", "e"); MAX_BATCH_EVENTS + 1],
            }))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(h.sink.events().len(), 5, "refused calls store nothing");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn calls_without_a_valid_write_key_are_unauthenticated() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let mut client = h.grpc_client().await;

        let status = client
            .track(Request::new(event("x", "u", "e")))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = client
            .ingest(Request::new(tokio_stream::iter(vec![single(event(
                "x", "u", "e",
            ))])))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);

        let mut wrong = Request::new(event("x", "u", "e"));
        wrong
            .metadata_mut()
            .insert("x-write-key", "wk_not_a_real_key_00".parse().unwrap());
        assert_eq!(
            client.track(wrong).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        let mut wrong = Request::new(pb::BatchRequest::default());
        wrong.metadata_mut().insert(
            "authorization",
            basic("wk_not_a_real_key_00").parse().unwrap(),
        );
        assert_eq!(
            client.batch(wrong).await.unwrap_err().code(),
            Code::Unauthenticated
        );
        assert!(h.sink.events().is_empty());

        // Basic metadata works like x-write-key.
        let mut basic_auth = Request::new(event("basic-ok", "u", "e"));
        basic_auth
            .metadata_mut()
            .insert("authorization", basic(WRITE_KEY).parse().unwrap());
        let acked = client.track(basic_auth).await.unwrap().into_inner();
        assert_eq!(acked.status(), AckStatus::Accepted);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn revoking_a_source_ends_its_open_streams() {
    each_backend(async |db| {
        let ttl = Duration::from_millis(300);
        let h = Harness::start_with_ttl(db, ttl).await;
        let mut client = h.grpc_client().await;
        let (tx, rx) = mpsc::channel(4);
        tx.send(single(event("r-1", "u", "e"))).await.unwrap();
        let mut responses = client
            .ingest(authed(ReceiverStream::new(rx)))
            .await
            .unwrap()
            .into_inner();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(first.acks[0].status(), AckStatus::Accepted);

        h.revoke().await;
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        tx.send(single(event("r-2", "u", "e"))).await.unwrap();
        let status = responses.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(h.sink.ids(), vec!["r-1"]);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn serve_with_reports_health_and_stops_on_shutdown() {
    each_backend(async |db| {
        create_source(db, WRITE_KEY).await;
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_with(
            common::FakeSink::default(),
            db.store().clone(),
            grpc_listener,
            http_listener,
            async {
                let _ = stopped.await;
            },
        ));

        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: SERVICE_NAME.to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
        let acked = IngestServiceClient::new(channel)
            .track(authed(event("h-1", "u", "e")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(acked.status(), AckStatus::Accepted);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(15), server)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap();
    })
    .await;
}
