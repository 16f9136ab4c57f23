//! Bad input end to end, on every backend: over HTTP and gRPC, invalid JSON, missing ids,
//! oversize events and batches, wrong write keys and wrong types get the documented error and
//! store nothing — no catalog entry or count, no profile, no instance, no webhook. A valid
//! event sent last shows that the same path does store when the input is good.

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

use std::time::Duration;

use http::header;
use journeys_proto::v1 as pb;
use journeys_testkit::Sink;
use journeys_tests::http::{HttpClient, basic_auth, gzip};
use journeys_tests::ingest::{IngestStream, keyed, track};
use journeys_tests::{Stack, StackClients, StackOptions, on_each_backend};
use serde_json::{Value, json};
use tonic::Code;

/// A string property that makes one event larger than 32 KB.
fn big() -> String {
    "x".repeat(33 * 1024)
}

fn signup(user: &str, id: &str) -> Value {
    json!({"userId": user, "messageId": id, "event": "signup", "properties": {"plan": "pro"}})
}

async fn expect_http(
    http: &HttpClient,
    path: &str,
    headers: &[(header::HeaderName, String)],
    body: Vec<u8>,
    status: u16,
    code: &str,
) -> anyhow::Result<()> {
    let reply = http.post(path, headers, body).await?;
    assert_eq!(
        (reply.status.as_u16(), reply.code()),
        (status, code),
        "{path}: {:?}",
        reply.body
    );
    assert!(
        !reply.message().is_empty(),
        "{path}: a message explains the error"
    );
    Ok(())
}

/// Nothing of the refused input was stored: the catalog holds only what was registered,
/// no profile or instance exists, and the webhook received nothing.
async fn assert_nothing_stored(
    c: &mut StackClients,
    sink: &Sink,
    users: &[&str],
) -> anyhow::Result<()> {
    let catalog = c
        .catalog
        .list_events(pb::ListEventsRequest {})
        .await?
        .into_inner();
    let names: Vec<(&str, i64)> = catalog
        .events
        .iter()
        .map(|e| (e.name.as_str(), e.count))
        .collect();
    assert_eq!(names, [("signup", 0)], "catalog");
    for user in users {
        let err = c
            .profiles
            .get_profile(pb::GetProfileRequest {
                user_id: (*user).to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("no profile may exist");
        assert_eq!(err.code(), Code::NotFound, "{user}");
    }
    assert!(c.instances_of("", "").await?.is_empty(), "instances");
    assert_eq!(sink.settle(Duration::from_millis(500)).await.len(), 0);
    Ok(())
}

#[tokio::test]
async fn bad_http_requests_get_the_documented_errors_and_store_nothing() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["signup"]).await?;
        c.publish(&json!({"journey": {
            "id": "signups", "name": "Forward sign-ups",
            "entry": {"event": "signup"}, "entry_rule": "ENTER_ONCE",
            "start_step": "send",
            "steps": [{"key": "send", "name": "Send", "send": {"destination_id": "hook"}}]
        }}))
        .await?;
        let http = stack.http();
        let json_ct = (header::CONTENT_TYPE, "application/json".to_owned());
        let auth = (header::AUTHORIZATION, basic_auth(&key));
        let with_key = [json_ct.clone(), auth.clone()];
        let bytes = |v: &Value| serde_json::to_vec(v).unwrap_or_default();

        // Invalid JSON, and JSON that is not an object.
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            b"{\"userId\": \"u1\", ".to_vec(),
            400,
            "invalid_json",
        )
        .await?;
        expect_http(
            &http,
            "/v1/batch",
            &with_key,
            b"[1, 2]".to_vec(),
            400,
            "invalid_json",
        )
        .await?;
        // Missing ids and names.
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&json!({"event": "signup", "messageId": "h-1"})),
            400,
            "missing_user_id",
        )
        .await?;
        expect_http(
            &http,
            "/v1/identify",
            &with_key,
            bytes(&json!({"userId": "", "anonymousId": "", "traits": {"a": 1}})),
            400,
            "missing_user_id",
        )
        .await?;
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&json!({"userId": "u1", "messageId": "h-2"})),
            400,
            "missing_event",
        )
        .await?;
        // Oversize: one event over 32 KB; a request over 500 KB; a batch over 2500 events.
        let mut oversize = signup("u1", "h-3");
        oversize["properties"]["blob"] = json!(big());
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&oversize),
            400,
            "event_too_large",
        )
        .await?;
        let heavy: Vec<Value> = (0..20)
            .map(|i| {
                let mut e = signup(&format!("heavy{i}"), &format!("hv-{i}"));
                e["type"] = json!("track");
                e["properties"]["blob"] = json!("y".repeat(30 * 1024));
                e
            })
            .collect();
        expect_http(
            &http,
            "/v1/batch",
            &with_key,
            bytes(&json!({"batch": heavy})),
            400,
            "request_too_large",
        )
        .await?;
        let many: Vec<Value> = (0..2501)
            .map(|i| json!({"type": "track", "userId": format!("many{i}"), "event": "signup"}))
            .collect();
        expect_http(
            &http,
            "/v1/batch",
            &with_key,
            bytes(&json!({"batch": many})),
            400,
            "too_many_events",
        )
        .await?;
        // Also when the oversize body arrives gzip-compressed.
        let gz_heavy = gzip(&bytes(&json!({"batch": heavy})))?;
        let gz_headers = [
            json_ct.clone(),
            auth.clone(),
            (header::CONTENT_ENCODING, "gzip".to_owned()),
        ];
        expect_http(
            &http,
            "/v1/batch",
            &gz_headers,
            gz_heavy,
            400,
            "request_too_large",
        )
        .await?;
        expect_http(
            &http,
            "/v1/track",
            &gz_headers,
            b"not gzip at all".to_vec(),
            400,
            "invalid_gzip",
        )
        .await?;
        // Wrong types.
        let mut wrong = signup("u1", "h-4");
        wrong["properties"] = json!("plan=pro");
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&wrong),
            400,
            "wrong_type",
        )
        .await?;
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&json!({"userId": true, "event": "signup"})),
            400,
            "wrong_type",
        )
        .await?;
        expect_http(
            &http,
            "/v1/track",
            &with_key,
            bytes(&json!({"userId": "u1", "event": "signup", "timestamp": "yesterday"})),
            400,
            "invalid_timestamp",
        )
        .await?;
        expect_http(
            &http,
            "/v1/batch",
            &with_key,
            bytes(&json!({"batch": [{"type": "click", "userId": "u1"}]})),
            400,
            "invalid_type",
        )
        .await?;
        // A batch is all or nothing: one bad event refuses the good one beside it.
        let mut good = signup("u2", "h-5");
        good["type"] = json!("track");
        expect_http(
            &http,
            "/v1/batch",
            &with_key,
            bytes(&json!({"batch": [good, {"type": "track", "userId": "u3"}]})),
            400,
            "missing_event",
        )
        .await?;
        // Write keys: missing, unknown (header or body), revoked later below.
        expect_http(
            &http,
            "/v1/track",
            std::slice::from_ref(&json_ct),
            bytes(&signup("u1", "h-6")),
            401,
            "missing_write_key",
        )
        .await?;
        let wrong_key = [
            json_ct.clone(),
            (header::AUTHORIZATION, basic_auth("not-a-key")),
        ];
        expect_http(
            &http,
            "/v1/track",
            &wrong_key,
            bytes(&signup("u1", "h-7")),
            401,
            "invalid_write_key",
        )
        .await?;
        let mut in_body = signup("u1", "h-8");
        in_body["writeKey"] = json!("not-a-key");
        expect_http(
            &http,
            "/v1/track",
            std::slice::from_ref(&json_ct),
            bytes(&in_body),
            401,
            "invalid_write_key",
        )
        .await?;

        assert_nothing_stored(&mut c, &sink, &["u1", "u2", "u3", "heavy0", "many0"]).await?;

        // The same path stores a good event (so the checks above can fail).
        let reply = http
            .post("/v1/track", &with_key, bytes(&signup("u1", "h-9")))
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(c.instances_of("signups", "u1").await?.len(), 1);
        sink.wait_for(1, Duration::from_secs(20)).await;
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_grpc_events_are_refused_with_reasons_and_store_nothing() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("backend").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["signup"]).await?;
        c.publish(&json!({"journey": {
            "id": "signups", "name": "Forward sign-ups",
            "entry": {"event": "signup"}, "entry_rule": "ENTER_ONCE",
            "start_step": "send",
            "steps": [{"key": "send", "name": "Send", "send": {"destination_id": "hook"}}]
        }}))
        .await?;
        let ok_props = json!({"plan": "pro"});

        // Write keys: missing or unknown fail the call, on unary calls and the stream.
        let err = c
            .ingest
            .track(tonic::Request::new(track("u1", "signup", "g-1", &ok_props)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let err = c
            .ingest
            .track(keyed(track("u1", "signup", "g-2", &ok_props), "not-a-key")?)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let err = c
            .ingest
            .batch(keyed(
                pb::BatchRequest {
                    events: vec![track("u1", "signup", "g-3", &ok_props)],
                },
                "not-a-key",
            )?)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let Err(err) = IngestStream::open(&mut c.ingest, "not-a-key").await else {
            anyhow::bail!("a stream with an unknown write key must fail");
        };
        let status = err
            .downcast_ref::<tonic::Status>()
            .ok_or_else(|| anyhow::anyhow!("not a status: {err:?}"))?;
        assert_eq!(status.code(), Code::Unauthenticated);

        // Unary calls: INVALID_ARGUMENT naming the field.
        let mut oversize = track("u1", "signup", "g-4", &json!({"blob": big()}));
        let mut no_user = track("", "signup", "g-5", &ok_props);
        let no_event = track("u1", "", "g-6", &ok_props);
        let mut identify_type = track("u1", "signup", "g-7", &ok_props);
        identify_type.r#type = pb::EventType::Identify as i32;
        let mut unknown_type = track("u1", "signup", "g-8", &ok_props);
        unknown_type.r#type = 42;
        let mut bad_time = track("u1", "signup", "g-9", &ok_props);
        bad_time.timestamp = Some(prost_types::Timestamp {
            seconds: i64::MAX / 2,
            nanos: 0,
        });
        let mut nan = track("u1", "signup", "g-10", &ok_props);
        nan.properties = Some(prost_types::Struct {
            fields: [(
                "score".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(f64::NAN)),
                },
            )]
            .into_iter()
            .collect(),
        });
        for (event, field) in [
            (oversize.clone(), ""),
            (no_user.clone(), "user_id"),
            (no_event.clone(), "event"),
            (identify_type, "type"),
            (unknown_type.clone(), "type"),
            (bad_time.clone(), "timestamp"),
            (nan.clone(), "properties.score"),
        ] {
            let id = event.message_id.clone();
            let err = c.ingest.track(keyed(event, &key)?).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{id}: {err:?}");
            assert!(err.message().contains(field), "{id}: {}", err.message());
        }
        let too_many = pb::BatchRequest {
            events: (0..2501)
                .map(|i| track(&format!("many{i}"), "signup", &format!("b-{i}"), &ok_props))
                .collect(),
        };
        let err = c.ingest.batch(keyed(too_many, &key)?).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        // The stream: each bad event is REJECTED with its code; the stream goes on. (Any
        // event type is valid on the stream, so the identify sent to `Track` is left out.)
        oversize.message_id = "s-4".to_owned();
        no_user.message_id = "s-5".to_owned();
        let mut stream = IngestStream::open(&mut c.ingest, &key).await?;
        for event in [oversize, no_user, no_event, unknown_type, bad_time, nan] {
            stream.send(event).await?;
        }
        stream
            .send_batch(
                (0..2501)
                    .map(|i| track(&format!("many{i}"), "signup", &format!("sb-{i}"), &ok_props))
                    .collect(),
            )
            .await?;
        let acks = stream.acks(6 + 2501, Duration::from_secs(20)).await?;
        let codes: Vec<(&str, &str)> = acks[..6]
            .iter()
            .map(|a| (a.message_id.as_str(), a.code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("s-4", "event_too_large"),
                ("s-5", "missing_user_id"),
                ("g-6", "missing_event"),
                ("g-8", "invalid_type"),
                ("g-9", "invalid_timestamp"),
                ("g-10", "invalid_value"),
            ]
        );
        assert!(
            acks.iter()
                .all(|a| a.status == pb::AckStatus::Rejected as i32 && !a.message.is_empty()),
            "every bad event is REJECTED with a message"
        );
        assert!(acks[6..].iter().all(|a| a.code == "too_many_events"));

        assert_nothing_stored(&mut c, &sink, &["u1", "many0", "many2500"]).await?;

        // The same stream stores a good event (so the checks above can fail).
        stream
            .send(track("u1", "signup", "s-ok", &ok_props))
            .await?;
        let ack = stream.acks(1, Duration::from_secs(10)).await?.remove(0);
        assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");
        assert_eq!(c.instances_of("signups", "u1").await?.len(), 1);
        sink.wait_for(1, Duration::from_secs(20)).await;
        // An open stream would hold the server's graceful shutdown for its drain timeout.
        stream.close();
        assert!(
            stream.next_acks().await?.is_none(),
            "the stream ends cleanly"
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
