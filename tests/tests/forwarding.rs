//! Real-time forwarding end to end, on every backend: events in over gRPC and HTTP, the
//! published journey's entry filter (`any_of`), audience filter, selected traits and mapping
//! decide what a real webhook receiver gets, and exactly the matching events arrive.

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

use journeys_proto::v1 as pb;
use journeys_testkit::Sink;
use journeys_tests::ingest::{identify, send_accepted, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::{Value, json};

const SECRET: &str = "whsec_forms";

fn forwarding_journey() -> Value {
    json!({"journey": {
        "id": "vip-forms",
        "name": "Forward VIP forms",
        "entry": {
            "event": "form_submitted",
            "audience_key": "vip",
            "filters": [{"property": "form_type", "any_of": ["contact", "demo_request"]}]
        },
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "submission_id",
        "start_step": "forward",
        "steps": [{
            "key": "forward",
            "name": "Forward form",
            "send": {
                "destination_id": "crm",
                "action": {"method": "POST", "path": "/forms/{{form}}"},
                "event_name": "Form Submitted",
                "traits": ["email", "plan"],
                "mapping": {
                    "kind": "form",
                    "message_id": {"@path": "$.messageId"},
                    "user_id": {"@path": "$.userId"},
                    "email": {"@path": "$.properties.email"},
                    "plan": {"@case": {"value": {"@path": "$.properties.plan"}, "operator": "upper"}},
                    "form": {"@path": "$.properties.journey_context.form_submitted.form_type"},
                    "submission": {"@path": "$.properties.journey_context.form_submitted.submission_id"},
                    "subject": {"@template": "New {{properties.journey_context.form_submitted.form_type}} form from {{properties.email}}"}
                }
            }
        }]
    }})
}

#[tokio::test]
async fn only_matching_events_reach_the_webhook_with_mapped_bodies() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("crm", &sink.url(), Some(SECRET)).await?;
        c.register_events(&["form_submitted"]).await?;
        c.audience("vip", &["u1", "u2"]).await?;
        let journey = c.publish(&forwarding_journey()).await?;
        assert_eq!(journey.state, pb::JourneyState::Published as i32);

        // Traits first: u1 over gRPC, u2 over HTTP, u3 (not in the audience) over gRPC.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                identify("u1", "id-1", &json!({"email": "ann@example.com", "plan": "pro", "age": 41})),
                identify("u3", "id-3", &json!({"email": "cid@example.com", "plan": "pro"})),
            ],
        )
        .await?;
        let http = stack.http();
        let reply = http
            .post_json(
                "/v1/identify",
                Some(&key),
                &json!({"userId": "u2", "messageId": "id-2", "traits": {"email": "bo@example.com", "plan": "free"}}),
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.body, json!({"success": true}));

        // Matching and non-matching events, over both interfaces.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                // Sent: in the audience, form type listed.
                track("u1", "form_submitted", "m-1", &json!({"form_type": "contact", "submission_id": "s1"})),
                // Not sent: form type not listed.
                track("u1", "form_submitted", "m-2", &json!({"form_type": "newsletter", "submission_id": "s2"})),
                // Not sent: not in the audience.
                track("u3", "form_submitted", "m-3", &json!({"form_type": "contact", "submission_id": "s3"})),
                // Not sent: no form type at all.
                track("u1", "form_submitted", "m-5", &json!({"submission_id": "s5"})),
                // Not sent: another event with the same properties.
                track("u2", "page_viewed", "m-6", &json!({"form_type": "contact", "submission_id": "s6"})),
            ],
        )
        .await?;
        let reply = http
            .post_json(
                "/v1/track",
                Some(&key),
                // Sent: u2 is in the audience.
                &json!({"userId": "u2", "messageId": "m-4", "event": "form_submitted",
                        "properties": {"form_type": "demo_request", "submission_id": "s4"}}),
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let reply = http
            .post_json(
                "/v1/batch",
                None,
                &json!({"writeKey": key, "batch": [
                    // Sent.
                    {"type": "track", "userId": "u1", "messageId": "m-7", "event": "form_submitted",
                     "properties": {"form_type": "demo_request", "submission_id": "s7"}},
                    // Not sent: not in the audience.
                    {"type": "track", "userId": "u3", "messageId": "m-8", "event": "form_submitted",
                     "properties": {"form_type": "demo_request", "submission_id": "s8"}}
                ]}),
            )
            .await?;
        assert_eq!(reply.status, 200, "{:?}", reply.body);

        // Every event is committed once acknowledged: exactly three instances exist now.
        let instances = c.instances_of("vip-forms", "").await?;
        let mut entered: Vec<(String, String)> = instances
            .iter()
            .map(|i| (i.user_id.clone(), i.unique_value.clone()))
            .collect();
        entered.sort();
        assert_eq!(
            entered,
            [
                ("u1".to_owned(), "s1".to_owned()),
                ("u1".to_owned(), "s7".to_owned()),
                ("u2".to_owned(), "s4".to_owned())
            ]
        );

        sink.wait_for(3, Duration::from_secs(20)).await;
        let mut received = sink.settle(Duration::from_millis(700)).await;
        assert_eq!(received.len(), 3, "exactly the matching events are forwarded");
        received.sort_by(|a, b| a.body["submission"].as_str().cmp(&b.body["submission"].as_str()));
        let expected = [
            ("u1", "s1", "contact", "ann@example.com", "PRO"),
            ("u2", "s4", "demo_request", "bo@example.com", "FREE"),
            ("u1", "s7", "demo_request", "ann@example.com", "PRO"),
        ];
        for (request, (user, submission, form, email, plan)) in received.iter().zip(expected) {
            let message_id = request.str_field("message_id").to_owned();
            assert!(message_id.starts_with("jm_"), "{message_id}");
            assert_eq!(request.idempotency_key(), message_id);
            assert_eq!(
                request.body,
                json!({
                    "kind": "form",
                    "message_id": message_id,
                    "user_id": user,
                    "email": email,
                    "plan": plan,
                    "form": form,
                    "submission": submission,
                    "subject": format!("New {form} form from {email}"),
                })
            );
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, format!("/forms/{form}"));
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert!(request.signed_with(SECRET), "bad signature: {:?}", request.headers);
            assert!(!request.signed_with("another secret"));
        }
        let ids: std::collections::HashSet<&str> =
            received.iter().map(journeys_testkit::Received::idempotency_key).collect();
        assert_eq!(ids.len(), 3, "each send has its own messageId");

        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unmapped_send_carries_the_default_track_payload() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["order_placed"]).await?;
        let journey = c
            .publish(&json!({"journey": {
                "id": "orders",
                "name": "Forward orders",
                "entry": {"event": "order_placed", "filters": [{"property": "order.total", "equals": 30}]},
                "entry_rule": "ENTER_ONCE",
                "start_step": "tell",
                "steps": [{
                    "key": "tell",
                    "name": "Tell the shop",
                    "send": {"destination_id": "hook", "traits": ["email", "address.city", "missing"]}
                }]
            }}))
            .await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                identify("u9", "i-1", &json!({"email": "u9@example.com", "address": {"city": "Lyon"}})),
                track("u9", "order_placed", "o-1", &json!({"order": {"id": "A1", "total": 30}})),
            ],
        )
        .await?;
        let received = sink.wait_for(1, Duration::from_secs(20)).await;
        let request = &received[0];
        let body = &request.body;
        let instance = &c.instances_of(&journey.id, "u9").await?[0];
        let message_id = body["messageId"].as_str().unwrap_or_default();
        assert_eq!(request.idempotency_key(), message_id);
        assert!(message_id.starts_with("jm_"));
        assert_eq!(body["type"], "track");
        assert_eq!(body["event"], "Tell the shop", "the event name defaults to the step name");
        assert_eq!(body["userId"], "u9");
        assert!(body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
        assert_eq!(
            body["properties"],
            json!({
                "email": "u9@example.com",
                "address.city": "Lyon",
                "journey_context": {"order_placed": {"order": {"id": "A1", "total": 30}}},
                "journey_metadata": {
                    "journey_id": "orders",
                    "journey_version": journey.revision,
                    "journey_name": "Forward orders",
                    "step_key": body["context"]["journeys"]["step_key"],
                    "instance_id": instance.id,
                }
            })
        );
        assert_eq!(body["context"]["journeys"]["step_name"], "Tell the shop");
        assert_eq!(body["context"]["journeys"]["journey_id"], "orders");
        assert!(
            body["context"]["journeys"]["step_key"]
                .as_str()
                .is_some_and(|k| k.contains("tell")),
            "{body}"
        );
        assert_eq!(request.header("journeys-signature"), None, "no secret, no signature");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
