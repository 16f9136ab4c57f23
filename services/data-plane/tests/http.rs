//! The Segment-compatible HTTP API end to end: a real server over a real store, a real HTTP
//! client, and a recording sink standing in for the engine.

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

use common::{Harness, WRITE_KEY, basic, gzip, post, request};
use hyper::StatusCode;
use journeys_core::model::EventType;
use journeys_data_plane::{MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES};
use journeys_testkit::each_backend;
use serde_json::{Value, json};

#[tokio::test]
async fn every_endpoint_hands_its_event_to_the_sink() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let calls = [
            (
                "/v1/track",
                json!({"userId": "u1", "messageId": "m-track", "event": "Order Completed",
                       "properties": {"total": 30}, "timestamp": "2024-05-01T12:00:00Z"}),
            ),
            (
                "/v1/identify",
                json!({"userId": "u1", "messageId": "m-identify", "traits": {"plan": "pro"},
                       "context": {"traits": {"email": "u1@example.com"}}}),
            ),
            (
                "/v1/page",
                json!({"anonymousId": "a1", "messageId": "m-page", "name": "Pricing",
                       "properties": {"path": "/pricing"}}),
            ),
            (
                "/v1/screen",
                json!({"userId": "u1", "messageId": "m-screen", "name": "Cart"}),
            ),
            (
                "/v1/group",
                json!({"userId": "u1", "messageId": "m-group", "groupId": "acme",
                       "traits": {"seats": 5}}),
            ),
            (
                "/v1/alias",
                json!({"userId": "u1", "messageId": "m-alias", "previousId": "a1"}),
            ),
            (
                "/v1/batch",
                json!({"batch": [
                    {"type": "track", "userId": "u2", "messageId": "m-b1", "event": "Signed Up"},
                    {"type": "identify", "userId": "u2", "messageId": "m-b2", "traits": {"x": 1}}
                ]}),
            ),
            (
                "/v1/t",
                json!({"userId": "u3", "messageId": "m-short", "event": "Clicked"}),
            ),
        ];
        for (path, body) in &calls {
            let reply = post(h.http, path, Some(WRITE_KEY), body).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
            assert_eq!(reply.body, json!({"success": true}), "{path}");
        }

        let events = h.sink.events();
        let summary: Vec<(&str, EventType, &str)> = events
            .iter()
            .map(|e| (e.message_id.as_str(), e.kind, e.event.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("m-track", EventType::Track, "Order Completed"),
                ("m-identify", EventType::Identify, "identify"),
                ("m-page", EventType::Page, "page"),
                ("m-screen", EventType::Screen, "screen"),
                ("m-group", EventType::Group, "group"),
                ("m-alias", EventType::Alias, "alias"),
                ("m-b1", EventType::Track, "Signed Up"),
                ("m-b2", EventType::Identify, "identify"),
                ("m-short", EventType::Track, "Clicked"),
            ]
        );
        assert_eq!(events[0].properties, json!({"total": 30}));
        assert_eq!(
            events[0].timestamp.to_rfc3339(),
            "2024-05-01T12:00:00+00:00"
        );
        assert_eq!(
            events[1].traits,
            json!({"plan": "pro", "email": "u1@example.com"})
        );
        assert_eq!(
            events[2].properties,
            json!({"path": "/pricing", "name": "Pricing"})
        );
        assert_eq!(events[2].anonymous_id.as_deref(), Some("a1"));
        assert_eq!(events[4].properties, json!({"groupId": "acme"}));
        assert_eq!(events[4].traits, json!({"seats": 5}));
        assert_eq!(events[5].properties, json!({"previousId": "a1"}));
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn write_key_as_basic_user_or_in_the_body() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let event = json!({"userId": "u1", "event": "e"});

        let reply = post(
            h.http,
            "/v1/track",
            None,
            &json!({"writeKey": WRITE_KEY, "userId": "u1", "event": "e", "messageId": "body-key"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let reply = post(
            h.http,
            "/v1/batch",
            None,
            &json!({"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u", "event": "e", "messageId": "body-key-batch"}]}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(h.sink.ids(), vec!["body-key", "body-key-batch"]);

        let reply = post(h.http, "/v1/track", None, &event).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "missing_write_key");
        let reply = post(h.http, "/v1/track", Some("wk_wrong_key_000000"), &event).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "invalid_write_key");
        let reply = post(
            h.http,
            "/v1/track",
            None,
            &json!({"writeKey": "wk_wrong_key_000000", "userId": "u1", "event": "e"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "invalid_write_key");
        // A good key in the body does not rescue a bad one in the header.
        let reply = post(
            h.http,
            "/v1/track",
            Some("wk_wrong_key_000000"),
            &json!({"writeKey": WRITE_KEY, "userId": "u1", "event": "e"}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        assert_eq!(h.sink.events().len(), 2, "refused requests store nothing");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_revoked_source_is_refused_once_its_cache_entry_expires() {
    each_backend(async |db| {
        let ttl = Duration::from_millis(300);
        let h = Harness::start_with_ttl(db, ttl).await;
        let event = json!({"userId": "u1", "event": "e"});
        assert_eq!(
            post(h.http, "/v1/track", Some(WRITE_KEY), &event)
                .await
                .status,
            StatusCode::OK
        );
        h.revoke().await;
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        let reply = post(h.http, "/v1/track", Some(WRITE_KEY), &event).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "invalid_write_key");
        assert_eq!(h.sink.events().len(), 1);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn gzip_bodies_are_decoded_and_bombs_defused() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let auth = basic(WRITE_KEY);
        let gz_headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ];
        let body = json!({"batch": [
            {"type": "track", "userId": "u1", "event": "Zipped", "messageId": "gz-1"},
            {"type": "page", "userId": "u1", "name": "Home", "messageId": "gz-2"}
        ]});
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &gz_headers,
            gzip(&serde_json::to_vec(&body).unwrap()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        assert_eq!(h.sink.ids(), vec!["gz-1", "gz-2"]);

        // 8 MB of spaces (valid JSON whitespace) in a body of a few KB.
        let mut bomb = b"{\"userId\": \"u1\", \"event\": \"e\"".to_vec();
        bomb.extend(std::iter::repeat_n(b' ', 8 * 1024 * 1024));
        bomb.push(b'}');
        let compressed = gzip(&bomb);
        assert!(compressed.len() < MAX_REQUEST_BYTES);
        let reply = request(h.http, "POST", "/v1/track", &gz_headers, compressed).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "request_too_large");

        let reply = request(
            h.http,
            "POST",
            "/v1/track",
            &gz_headers,
            b"{\"not\": \"gzip\"}".to_vec(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "invalid_gzip");

        let reply = request(
            h.http,
            "POST",
            "/v1/track",
            &[("authorization", auth.as_str()), ("content-encoding", "br")],
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(reply.code(), "unsupported_encoding");

        assert_eq!(h.sink.events().len(), 2);
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_400_and_store_nothing() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let auth = basic(WRITE_KEY);
        let good = json!({"type": "track", "userId": "u", "event": "ok"});
        let big = "x".repeat(MAX_EVENT_BYTES);
        let json_cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "/v1/track",
                json!({"event": "e"}),
                "missing_user_id",
                "userId: userId or anonymousId is required",
            ),
            (
                "/v1/track",
                json!({"userId": "u", "properties": {}}),
                "missing_event",
                "event: is required for track",
            ),
            (
                "/v1/track",
                json!({"userId": "u", "event": "e", "properties": "cheap"}),
                "wrong_type",
                "properties: must be an object, not a string",
            ),
            (
                "/v1/identify",
                json!({"userId": ["u"]}),
                "wrong_type",
                "userId: must be a string or a number, not an array",
            ),
            (
                "/v1/track",
                json!({"userId": "u", "event": "e", "properties": {"blob": big}}),
                "event_too_large",
                "",
            ),
            (
                "/v1/batch",
                json!({"batch": [good, {"type": "track", "userId": "u"}]}),
                "missing_event",
                "batch[1].event: is required for track",
            ),
            (
                "/v1/batch",
                json!({"batch": [good, {"type": "identify"}]}),
                "missing_user_id",
                "batch[1].userId: userId or anonymousId is required",
            ),
            (
                "/v1/batch",
                json!({"batch": [good, {"type": "track", "userId": "u", "event": "e", "context": []}]}),
                "wrong_type",
                "batch[1].context: must be an object, not an array",
            ),
            (
                "/v1/batch",
                json!({"batch": [good, {"type": "track", "userId": "u", "event": "e", "properties": {"blob": big}}]}),
                "event_too_large",
                "",
            ),
            (
                "/v1/batch",
                json!({"batch": vec![good.clone(); MAX_BATCH_EVENTS + 1]}),
                "too_many_events",
                "batch: holds 2501 events; at most 2500 are accepted per request",
            ),
            (
                "/v1/batch",
                json!({"batch": "all of them"}),
                "wrong_type",
                "batch: must be an array, not a string",
            ),
        ];
        for (path, body, code, message) in json_cases {
            let reply = post(h.http, path, Some(WRITE_KEY), &body).await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{code}: {:?}",
                reply.body
            );
            assert_eq!(reply.code(), code, "{:?}", reply.body);
            if !message.is_empty() {
                assert_eq!(reply.body["message"], message);
            }
        }

        // 600 KB of small, individually valid events: over the request limit.
        let item = json!({"type": "track", "userId": "u", "event": "e", "properties": {"p": "y".repeat(1000)}});
        let oversize = json!({"batch": vec![item; 600]});
        let reply = post(h.http, "/v1/batch", Some(WRITE_KEY), &oversize).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "request_too_large");

        for raw in [
            &b"{\"userId\": \"u\", \"event\": "[..],
            b"[]",
            b"",
            b"userId=u",
        ] {
            let reply = request(
                h.http,
                "POST",
                "/v1/track",
                &[("authorization", auth.as_str())],
                raw.to_vec(),
            )
            .await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{raw:?}");
            assert_eq!(reply.code(), "invalid_json");
        }

        assert_eq!(h.sink.calls(), 0, "nothing reached the sink");
        assert!(h.sink.events().is_empty());
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn engine_refusals_map_to_429_503_and_duplicates_to_200() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let batch = |outcome: &str| {
            json!({"batch": [
                {"type": "track", "userId": "u", "event": "e", "messageId": format!("{outcome}-1")},
                {"type": "track", "userId": "u", "event": "e", "messageId": format!("{outcome}-2"),
                 "properties": {"outcome": outcome}}
            ]})
        };

        let reply = post(h.http, "/v1/batch", Some(WRITE_KEY), &batch("rate_limited")).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(reply.code(), "rate_limited");
        assert_eq!(reply.headers["retry-after"], "1");

        let reply = post(h.http, "/v1/batch", Some(WRITE_KEY), &batch("unavailable")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.code(), "unavailable");
        assert_eq!(reply.headers["retry-after"], "5");

        // Overload is retryable: Segment clients drop a batch answered 400, so never that.
        let reply = post(h.http, "/v1/batch", Some(WRITE_KEY), &batch("overloaded")).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.code(), "overloaded");
        assert_eq!(reply.headers["retry-after"], "1");

        let reply = post(h.http, "/v1/batch", Some(WRITE_KEY), &batch("duplicate")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, json!({"success": true}));

        let reply = post(
            h.http,
            "/v1/batch",
            Some(WRITE_KEY),
            &batch("too_many_instances"),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert_eq!(reply.code(), "too_many_instances");
        h.stop().await;
    })
    .await;
}

/// The requests Segment's own libraries send, byte for byte in shape: analytics-python (Basic
/// auth, gzip, `sentAt`, `+00:00` timestamps) and analytics-node (`_metadata`, `writeKey`-less
/// body, `Z` timestamps), both to `/v1/batch`.
#[tokio::test]
async fn official_segment_library_requests_work_unchanged() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let auth = basic(WRITE_KEY);

        let python = json!({
            "batch": [{
                "integrations": {},
                "anonymousId": null,
                "properties": {"plan": "pro"},
                "event": "Upgraded",
                "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
                "timestamp": "2024-06-01T10:00:00.123456+00:00",
                "userId": "user-42",
                "type": "track",
                "messageId": "5d8b6c4e-6d66-4a4f-8f2e-3c3b9f1f2a01"
            }],
            "sentAt": "2024-06-01T10:00:01.000000+00:00"
        });
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
                ("user-agent", "analytics-python/2.3.3"),
            ],
            gzip(&serde_json::to_vec(&python).unwrap()),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

        let node = json!({
            "batch": [
                {
                    "type": "identify", "userId": "user-42", "traits": {"email": "x@example.com"},
                    "messageId": "node-00000000-1", "timestamp": "2024-06-01T10:00:02.000Z",
                    "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.2"}},
                    "integrations": {}, "_metadata": {"jsRuntime": "node"}
                },
                {
                    "type": "page", "anonymousId": "anon-7", "name": "Docs",
                    "properties": {"url": "https://example.com/docs"},
                    "messageId": "node-00000000-2", "timestamp": "2024-06-01T10:00:03.000Z",
                    "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.2"}},
                    "integrations": {}, "_metadata": {"jsRuntime": "node"}
                }
            ],
            "sentAt": "2024-06-01T10:00:04.000Z"
        });
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
                ("user-agent", "analytics-node-next/latest"),
            ],
            serde_json::to_vec(&node).unwrap(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

        let events = h.sink.events();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].event, "Upgraded");
        assert_eq!(events[0].user_id.as_deref(), Some("user-42"));
        assert_eq!(events[0].anonymous_id, None);
        assert_eq!(
            events[0].timestamp.to_rfc3339(),
            "2024-06-01T10:00:00.123456+00:00"
        );
        assert_eq!(events[1].traits, json!({"email": "x@example.com"}));
        assert_eq!(
            events[2].properties,
            json!({"url": "https://example.com/docs", "name": "Docs"})
        );
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn health_and_unknown_paths() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        let reply = request(h.http, "GET", "/health", &[], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = request(h.http, "POST", "/v1/nope", &[], Vec::new()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.code(), "not_found");
        h.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_write_key_is_checked_before_the_body_is_parsed() {
    each_backend(async |db| {
        let h = Harness::start(db).await;
        // Nearly 500 KB that never becomes valid JSON, behind an unknown key.
        let junk = format!("[{}", "{\"x\": [1, 2, ".repeat(30_000));
        let key_in_body = format!("{{\"writeKey\": \"wk_unknown_key_0000\", \"batch\": {junk}");
        assert!(key_in_body.len() < MAX_REQUEST_BYTES);
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &[("content-type", "application/json")],
            key_in_body.into_bytes(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        assert_eq!(reply.code(), "invalid_write_key");

        // A key in the Basic header is checked before the body is even read.
        let auth = basic("wk_unknown_key_0000");
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            junk.clone().into_bytes(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);
        assert_eq!(reply.code(), "invalid_write_key");

        // A good key still gets the body's own error.
        let reply = request(
            h.http,
            "POST",
            "/v1/batch",
            &[
                ("content-type", "application/json"),
                ("authorization", &basic(WRITE_KEY)),
            ],
            junk.into_bytes(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        assert_eq!(reply.code(), "invalid_json");
        assert!(h.sink.events().is_empty());
        h.stop().await;
    })
    .await;
}
