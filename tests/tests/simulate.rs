//! `SimulateJourney` and `PreviewPayload` over gRPC on the shipped examples: the documented
//! paths on a virtual clock, and payloads exactly as they would be sent.

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

use journeys_proto::v1 as pb;
use journeys_tests::ingest::track;
use journeys_tests::{ControlPlane, Options, example, on_each_backend};
use serde_json::json;

fn ts(secs: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_800_000_000 + secs,
        nanos: 0,
    }
}

fn at(event: pb::Event, secs: i64) -> pb::SimulatedEvent {
    pb::SimulatedEvent {
        event: Some(event),
        at: Some(ts(secs)),
        source_id: String::new(),
    }
}

fn to_json(s: Option<&prost_types::Struct>) -> serde_json::Value {
    journeys_control_plane::convert::json::opt_struct_to_json(s)
}

#[tokio::test]
async fn abandoned_checkout_nudges_only_the_session_that_did_not_buy() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let journey = example("abandoned-checkout.json")?.journey;
        let events = vec![
            at(
                track(
                    "u1",
                    "checkout_started",
                    "m1",
                    &json!({"session_id": "s1", "total": 42}),
                ),
                0,
            ),
            at(
                track(
                    "u2",
                    "checkout_started",
                    "m2",
                    &json!({"session_id": "s2", "total": 7}),
                ),
                10,
            ),
            // u1 buys within the hour, for the same session.
            at(
                track(
                    "u1",
                    "purchase_completed",
                    "m3",
                    &json!({"session_id": "s1"}),
                ),
                1200,
            ),
            // u2 buys too, but for another session: that must not end s2's hold.
            at(
                track(
                    "u2",
                    "purchase_completed",
                    "m4",
                    &json!({"session_id": "other"}),
                ),
                1300,
            ),
        ];
        let response = c
            .journeys
            .simulate_journey(pb::SimulateJourneyRequest {
                target: journey.map(pb::simulate_journey_request::Target::Journey),
                events,
                profile: Some(pb::SimulatedProfile {
                    traits: Some(journeys_control_plane::convert::json::json_to_struct(
                        &json!({"email": "shopper@example.com", "first_name": "Ada"}),
                    )),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(response.instances.len(), 2, "{response:?}");
        let s1 = response
            .instances
            .iter()
            .find(|i| i.unique_value == "s1")
            .ok_or_else(|| anyhow::anyhow!("no instance for s1"))?;
        let s2 = response
            .instances
            .iter()
            .find(|i| i.unique_value == "s2")
            .ok_or_else(|| anyhow::anyhow!("no instance for s2"))?;

        assert_eq!(s1.final_state, "COMPLETED");
        assert_eq!(s1.final_step, "purchased");
        assert!(s1.sends.is_empty(), "a buyer gets no nudge: {:?}", s1.sends);

        assert_eq!(s2.final_state, "COMPLETED");
        assert_eq!(s2.final_step, "done");
        assert_eq!(s2.sends.len(), 1, "exactly one nudge");
        let nudge = &s2.sends[0];
        assert_eq!(nudge.step_key, "nudge");
        assert_eq!(nudge.destination_id, "webhook");
        assert_eq!(
            nudge.at.as_ref().map(|t| t.seconds),
            Some(ts(10 + 3600).seconds),
            "the nudge goes out when the hour of virtual time has passed"
        );
        let payload = to_json(nudge.payload.as_ref());
        assert_eq!(payload["type"], "track");
        assert_eq!(payload["event"], "Checkout Abandoned");
        assert_eq!(payload["userId"], "u2");
        assert_eq!(
            payload["properties"]["journey_context"]["checkout_started"],
            json!({"session_id": "s2", "total": 7})
        );
        assert_eq!(payload["properties"]["email"], "shopper@example.com");
        assert_eq!(
            payload["properties"]["journey_metadata"]["journey_id"],
            "abandoned-checkout"
        );
        assert!(
            s2.path.iter().any(|p| p.step_key == "nudge"),
            "the path shows the nudge step: {:?}",
            s2.path
        );
        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn preview_renders_the_mapped_payload_of_a_stored_journey() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        let created = c
            .journeys
            .create_journey(example("content-follow-up.json")?)
            .await?
            .into_inner();
        let preview = c
            .journeys
            .preview_payload(pb::PreviewPayloadRequest {
                journey_id: created.id.clone(),
                step_key: "follow_up".to_owned(),
                sample_event: Some(track(
                    "u9",
                    "content_downloaded",
                    "sample-1",
                    &json!({"content_id": "c1", "title": "The Rust Book"}),
                )),
                traits: Some(journeys_control_plane::convert::json::json_to_struct(
                    &json!({"email": "reader@example.com", "first_name": "Grace"}),
                )),
                sample_events: vec![],
            })
            .await?
            .into_inner();
        let payload = to_json(preview.payload.as_ref());
        assert_eq!(
            payload,
            json!({
                "to": "reader@example.com",
                "subject": "Thanks for reading The Rust Book",
                "content_title": "The Rust Book",
                "first_name": "Grace"
            })
        );

        let err = c
            .journeys
            .preview_payload(pb::PreviewPayloadRequest {
                journey_id: created.id,
                step_key: "wait_a_day".to_owned(),
                ..Default::default()
            })
            .await
            .expect_err("a delay step has no payload");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("step_key"));
        cp.stop().await
    })
    .await
}

#[tokio::test]
async fn previews_take_samples_of_hold_and_exit_events_for_mappings_that_read_them()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let cp = ControlPlane::start(&url, Options::default()).await?;
        let mut c = cp.clients().await?;
        c.destinations
            .create_destination(pb::CreateDestinationRequest {
                destination: Some(pb::Destination {
                    id: "hook".into(),
                    name: "Hook".into(),
                    webhook: Some(pb::WebhookSettings {
                        url: "https://hooks.example.com/in".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            })
            .await?;
        let journey = json!({"journey": {
            "id": "thanks",
            "name": "Thank buyers",
            "entry": {"event": "checkout_started"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "session_id",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait", "hold_until": {
                    "branches": [{"name": "Bought", "event": "purchase_completed", "next": "thank"}],
                    "max_duration": "3600s",
                    "timeout_next": ""
                }},
                {"key": "thank", "name": "Thank", "send": {
                    "destination_id": "hook",
                    "mapping": {
                        "session": {"@path": "$.properties.journey_context.checkout_started.session_id"},
                        "order": {"@path": "$.properties.journey_context.purchase_completed.order_id"}
                    }
                }}
            ],
            "exit_rules": [{"event": "account_closed", "send": {
                "destination_id": "hook",
                "mapping": {"why": {"@path": "$.properties.journey_context.account_closed.reason"}}
            }}]
        }});
        let created = c
            .journeys
            .create_journey(journeys_tests::journey_request_from_json(&journey)?)
            .await?
            .into_inner();
        let checkout = track("u1", "checkout_started", "m-1", &json!({"session_id": "s1"}));
        let preview = async |c: &mut journeys_tests::Clients, step: &str, others: Vec<pb::Event>| {
            c.journeys
                .preview_payload(pb::PreviewPayloadRequest {
                    journey_id: created.id.clone(),
                    step_key: step.to_owned(),
                    sample_event: Some(checkout.clone()),
                    sample_events: others,
                    ..Default::default()
                })
                .await
                .map(|r| to_json(r.into_inner().payload.as_ref()))
        };
        let bought = track("u1", "purchase_completed", "m-2", &json!({"order_id": "o-7"}));
        assert_eq!(
            preview(&mut c, "thank", vec![bought]).await?,
            json!({"session": "s1", "order": "o-7"})
        );
        let closed = track("u1", "account_closed", "m-3", &json!({"reason": "moved"}));
        assert_eq!(
            preview(&mut c, "exit_rules[0]", vec![closed]).await?,
            json!({"why": "moved"})
        );
        // Without the sample, the path reads nothing (as it would before the purchase).
        assert_eq!(preview(&mut c, "thank", vec![]).await?, json!({"session": "s1"}));
        let stray = track("u1", "page_viewed", "m-4", &json!({}));
        let err = preview(&mut c, "thank", vec![stray]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("sample_events[0].event")
                && err.message().contains("purchase_completed, account_closed"),
            "{}",
            err.message()
        );
        cp.stop().await
    })
    .await
}
