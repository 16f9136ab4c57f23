//! Operator limits end to end, on every backend: each limit lowered through the node's
//! configuration changes what a client sees — the per-profile active-instance limit answers
//! `too_many_instances` (gRPC `REJECTED`, HTTP 400) and the refused event is not stored, the
//! per-profile events-per-second limit rate limits, a shorter unique-identifier length starts
//! no instance, a shorter dedupe window lets a resent `messageId` apply again, a tighter delay
//! or hold bound refuses a journey at create, and a shorter retry budget dead-letters a failing
//! send within seconds.

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
use journeys_runtime::config::Config;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{IngestStream, keyed, send_accepted, statuses, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

fn with(configure: fn(&mut Config)) -> StackOptions {
    StackOptions {
        configure: Some(configure),
        ..StackOptions::default()
    }
}

/// Re-entry per `session_id`: hold until `purchase_completed` of the same session for an
/// hour, then thank (or nudge on timeout).
fn checkout_journey() -> Value {
    json!({"journey": {
        "id": "checkout",
        "name": "Abandoned checkout",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for the purchase", "hold_until": {
                "branches": [{"name": "bought", "event": "purchase_completed", "next": "thanks"}],
                "max_duration": "3600s",
                "timeout_next": "nudge"
            }},
            {"key": "thanks", "name": "Thanks", "send": {
                "destination_id": "hook",
                "mapping": {"session": {"@path": "$.properties.journey_context.checkout_started.session_id"}}
            }},
            {"key": "nudge", "name": "Nudge", "send": {
                "destination_id": "hook",
                "mapping": {"nudge": {"@path": "$.properties.journey_context.checkout_started.session_id"}}
            }}
        ]
    }})
}

fn checkout(user: &str, id: &str, session: &str) -> pb::Event {
    track(
        user,
        "checkout_started",
        id,
        &json!({"session_id": session}),
    )
}

fn active(instances: &[pb::Instance]) -> Vec<&str> {
    let mut sessions: Vec<&str> = instances
        .iter()
        .filter(|i| i.state == pb::InstanceState::Active as i32)
        .map(|i| i.unique_value.as_str())
        .collect();
    sessions.sort_unstable();
    sessions
}

#[tokio::test]
async fn a_lower_active_instance_limit_answers_too_many_instances() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, with(|c| c.max_active_instances_per_profile = 2)).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "purchase_completed"])
            .await?;
        c.publish(&checkout_journey()).await?;

        let mut stream = IngestStream::open(&mut c.ingest, &key).await?;
        stream
            .send_batch(vec![
                checkout("u1", "c-1", "s1"),
                checkout("u1", "c-2", "s2"),
                checkout("u1", "c-3", "s3"),
                // Another profile has its own allowance.
                checkout("u2", "c-4", "s1"),
            ])
            .await?;
        let acks = stream.acks(4, Duration::from_secs(20)).await?;
        let by_id = statuses(&acks);
        assert_eq!(by_id["c-1"], pb::AckStatus::Accepted);
        assert_eq!(by_id["c-2"], pb::AckStatus::Accepted);
        assert_eq!(by_id["c-4"], pb::AckStatus::Accepted);
        let refused = acks.iter().find(|a| a.message_id == "c-3").unwrap();
        assert_eq!(
            refused.status,
            pb::AckStatus::Rejected as i32,
            "{refused:?}"
        );
        assert_eq!(refused.code, "too_many_instances");
        assert!(
            refused.message.contains("maximum of 2 active instances"),
            "{}",
            refused.message
        );
        stream.close();

        // Over HTTP the same refusal is a 400 with the code: a Segment library does not retry it.
        let reply = stack
            .http()
            .post_json(
                "/v1/track",
                Some(&key),
                &json!({"userId": "u1", "event": "checkout_started", "messageId": "c-5",
                        "properties": {"session_id": "s5"}}),
            )
            .await?;
        assert_eq!(reply.status, 400, "{:?}", reply.body);
        assert_eq!(reply.code(), "too_many_instances");
        assert_eq!(
            active(&c.instances_of("checkout", "u1").await?),
            ["s1", "s2"]
        );

        // Nothing of a refused event was stored: once s1 is bought, c-3 sent again applies
        // (it is not a duplicate).
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track(
                    "u1",
                    "purchase_completed",
                    "p-1",
                    &json!({"session_id": "s1"}),
                ),
                checkout("u1", "c-3", "s3"),
            ],
        )
        .await?;
        assert_eq!(
            active(&c.instances_of("checkout", "u1").await?),
            ["s2", "s3"]
        );
        let thanks = sink.wait_for(1, Duration::from_secs(20)).await;
        assert_eq!(thanks[0].body, json!({"session": "s1"}));
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_lower_events_per_second_limit_rate_limits_a_profile() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let stack = Stack::start(&url, with(|c| c.max_events_per_profile_per_sec = 2)).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        let mut stream = IngestStream::open(&mut c.ingest, &key).await?;
        let events: Vec<pb::Event> = (0..4)
            .map(|i| track("u1", "page_viewed", &format!("v-{i}"), &json!({})))
            .chain([track("u2", "page_viewed", "w-0", &json!({}))])
            .collect();
        stream.send_batch(events).await?;
        let acks = stream.acks(5, Duration::from_secs(20)).await?;
        let limited: Vec<&str> = acks
            .iter()
            .filter(|a| a.code == "rate_limited")
            .map(|a| a.message_id.as_str())
            .collect();
        // Two per second for u1 (the default, 25, would take all four); u2 is not affected.
        assert_eq!(limited, ["v-2", "v-3"], "{acks:?}");
        assert_eq!(statuses(&acks)["w-0"], pb::AckStatus::Accepted);
        stream.close();

        let reply = stack
            .http()
            .post_json(
                "/v1/batch",
                Some(&key),
                &json!({"batch": [
                    {"type": "track", "userId": "u3", "event": "page_viewed", "messageId": "h-1"},
                    {"type": "track", "userId": "u3", "event": "page_viewed", "messageId": "h-2"},
                    {"type": "track", "userId": "u3", "event": "page_viewed", "messageId": "h-3"}
                ]}),
            )
            .await?;
        assert_eq!(reply.status, 429, "{:?}", reply.body);
        assert_eq!(reply.code(), "rate_limited");
        assert!(reply.headers.contains_key("retry-after"));
        stack.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_shorter_unique_value_length_starts_no_instance_for_longer_values() -> anyhow::Result<()>
{
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, with(|c| c.max_unique_value_chars = 8)).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["checkout_started", "purchase_completed"])
            .await?;
        c.publish(&checkout_journey()).await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                checkout("u1", "c-1", "123456789"),
                checkout("u1", "c-2", "12345678"),
            ],
        )
        .await?;
        // The event is accepted; only the 8-character value started an instance.
        assert_eq!(
            active(&c.instances_of("checkout", "u1").await?),
            ["12345678"]
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_shorter_dedupe_window_lets_a_resent_message_apply_again() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let stack = Stack::start(&url, with(|c| c.dedupe_window_secs = 1)).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        let event = track("u1", "page_viewed", "m-1", &json!({}));
        let status = |ack: pb::Ack| pb::AckStatus::try_from(ack.status).unwrap();
        let first = c
            .ingest
            .track(keyed(event.clone(), &key)?)
            .await?
            .into_inner();
        assert_eq!(status(first), pb::AckStatus::Accepted);
        let again = c
            .ingest
            .track(keyed(event.clone(), &key)?)
            .await?
            .into_inner();
        assert_eq!(status(again), pb::AckStatus::Duplicate);
        // Past the one-second window (not the default day), the same messageId is new.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later = c.ingest.track(keyed(event, &key)?).await?.into_inner();
        assert_eq!(status(later), pb::AckStatus::Accepted);
        stack.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn tighter_delay_and_hold_bounds_refuse_a_journey_at_create() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let stack = Stack::start(
            &url,
            with(|c| {
                c.max_delay_secs = 3_600;
                c.max_hold_secs = 1_800;
            }),
        )
        .await?;
        let mut c = stack.clients().await?;
        let journey = |delay: &str, hold: &str| {
            json!({"journey": {
                "name": format!("Delay {delay}, hold {hold}"),
                "entry": {"event": "signed_up"},
                "entry_rule": "ENTER_ONCE",
                "start_step": "wait",
                "steps": [
                    {"key": "wait", "name": "Wait", "delay": {"duration": delay, "next": "hold"}},
                    {"key": "hold", "name": "Hold", "hold_until": {
                        "branches": [{"name": "paid", "event": "paid", "next": ""}],
                        "max_duration": hold
                    }}
                ]
            }})
        };
        let err = c
            .journeys
            .create_journey(journeys_tests::journey_request_from_json(&journey(
                "7200s", "3600s",
            ))?)
            .await
            .expect_err("bounds of the configuration");
        assert_eq!(err.code(), Code::InvalidArgument);
        let violations: Vec<(String, String)> = err
            .get_error_details()
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| (v.field.clone(), v.description.clone()))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            violations,
            [
                (
                    "steps[0].delay.duration".to_owned(),
                    "delay of 2h is longer than the maximum of 1h".to_owned()
                ),
                (
                    "steps[1].hold_until.max_duration".to_owned(),
                    "maximum hold of 1h is longer than the maximum of 30m".to_owned()
                )
            ],
            "{}",
            err.message()
        );
        // Within the configured bounds (and far within the defaults of 182 days) it is taken.
        let created = c
            .journeys
            .create_journey(journeys_tests::journey_request_from_json(&journey(
                "3600s", "1800s",
            ))?)
            .await?
            .into_inner();
        assert_eq!(created.state, pb::JourneyState::Draft as i32);
        stack.stop().await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_shorter_retry_budget_dead_letters_a_failing_send_within_seconds() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        sink.answer_by_default(503);
        let stack = Stack::start(
            &url,
            with(|c| {
                c.retry_budget_secs = 2;
                c.retry_backoff_base_ms = 100;
                c.retry_backoff_max_secs = 1;
            }),
        )
        .await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("web").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["order_placed"]).await?;
        c.publish(&json!({"journey": {
            "id": "orders",
            "name": "Forward orders",
            "entry": {"event": "order_placed"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "order_id",
            "start_step": "forward",
            "steps": [{"key": "forward", "name": "Forward", "send": {"destination_id": "hook"}}]
        }}))
        .await?;
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "order_placed",
                "o-1",
                &json!({"order_id": "A1"}),
            )],
        )
        .await?;
        // Under the default budget (a day) the send would still be retried; here it is dead
        // after two seconds of 503s, with the last error.
        let dead = eventually("the send dead-lettered", Duration::from_secs(20), || {
            let mut c = c.clone();
            async move {
                let dead = c.dead_letters("hook").await.ok()?;
                (!dead.is_empty()).then_some(dead)
            }
        })
        .await;
        assert_eq!(dead.len(), 1);
        assert!(dead[0].last_error.contains("503"), "{:?}", dead[0]);
        assert!(sink.count() >= 2, "retried before giving up");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
