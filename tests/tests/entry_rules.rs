//! Entry and exit rules end to end, on every backend: enter-once, re-entry with a unique
//! identifier (parallel instances per profile), a hold-until branch event that reaches only the
//! instance with its identifier value, and an exit rule ending an instance mid-hold.

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
use journeys_tests::ingest::send_accepted;
use journeys_tests::ingest::track;
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::json;

fn state(instance: &pb::Instance) -> pb::InstanceState {
    pb::InstanceState::try_from(instance.state).unwrap_or(pb::InstanceState::Unspecified)
}

#[tokio::test]
async fn enter_once_admits_a_profile_a_single_time() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["signed_up"]).await?;
        c.publish(&json!({"journey": {
            "id": "welcome",
            "name": "Welcome once",
            "entry": {"event": "signed_up"},
            "entry_rule": "ENTER_ONCE",
            "start_step": "hello",
            "steps": [{"key": "hello", "name": "Say hello", "send": {
                "destination_id": "hook",
                "mapping": {"user": {"@path": "$.userId"}, "plan": {"@path": "$.properties.journey_context.signed_up.plan"}}
            }}]
        }}))
        .await?;

        // The first instance completes at once (a single send); later sign-ups of u1 must not
        // start another, also after that instance ended.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track("u1", "signed_up", "s-1", &json!({"plan": "trial"})),
                track("u1", "signed_up", "s-2", &json!({"plan": "pro"})),
                track("u2", "signed_up", "s-3", &json!({"plan": "pro"})),
                track("u1", "signed_up", "s-4", &json!({"plan": "team"})),
            ],
        )
        .await?;
        let u1 = c.instances_of("welcome", "u1").await?;
        assert_eq!(u1.len(), 1, "{u1:?}");
        assert_eq!(state(&u1[0]), pb::InstanceState::Completed);
        assert_eq!(c.instances_of("welcome", "u2").await?.len(), 1);

        sink.wait_for(2, Duration::from_secs(20)).await;
        let mut bodies: Vec<_> = sink
            .settle(Duration::from_millis(700))
            .await
            .into_iter()
            .map(|r| r.body)
            .collect();
        bodies.sort_by_key(|b| b["user"].to_string());
        assert_eq!(
            bodies,
            [
                json!({"user": "u1", "plan": "trial"}),
                json!({"user": "u2", "plan": "pro"})
            ]
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

fn applications_journey() -> serde_json::Value {
    json!({"journey": {
        "id": "applications",
        "name": "Application follow-up",
        "entry": {"event": "application_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "application_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for completion", "hold_until": {
                "branches": [{"name": "completed", "event": "application_completed", "next": "congratulate"}],
                "max_duration": "3600s",
                "timeout_next": ""
            }},
            {"key": "congratulate", "name": "Congratulate", "send": {
                "destination_id": "hook",
                "action": {"path": "/applications/{{application}}"},
                "mapping": {
                    "message_id": {"@path": "$.messageId"},
                    "user": {"@path": "$.userId"},
                    "application": {"@path": "$.properties.journey_context.application_started.application_id"},
                    "started": {"@path": "$.properties.journey_context.application_started"},
                    "completed": {"@path": "$.properties.journey_context.application_completed"}
                }
            }}
        ],
        "exit_rules": [{"event": "application_withdrawn", "match_unique_identifier": true}]
    }})
}

#[tokio::test]
async fn reentry_runs_one_instance_per_identifier_and_events_reach_only_their_own()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&[
            "application_started",
            "application_completed",
            "application_withdrawn",
        ])
        .await?;
        c.publish(&applications_journey()).await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track(
                    "u1",
                    "application_started",
                    "a-1",
                    &json!({"application_id": "A", "amount": 100}),
                ),
                track(
                    "u1",
                    "application_started",
                    "a-2",
                    &json!({"application_id": "B", "amount": 200}),
                ),
                // Same value as an active instance: no second instance for A.
                track(
                    "u1",
                    "application_started",
                    "a-3",
                    &json!({"application_id": "A", "amount": 999}),
                ),
                // Same value, another profile: its own instance.
                track(
                    "u2",
                    "application_started",
                    "a-4",
                    &json!({"application_id": "A", "amount": 300}),
                ),
            ],
        )
        .await?;
        let mut u1 = c.instances_of("applications", "u1").await?;
        u1.sort_by(|a, b| a.unique_value.cmp(&b.unique_value));
        assert_eq!(u1.len(), 2, "{u1:?}");
        for (instance, value) in u1.iter().zip(["A", "B"]) {
            assert_eq!(instance.unique_value, value);
            assert_eq!(state(instance), pb::InstanceState::Active);
            assert_eq!(instance.current_step, "wait");
            assert_eq!(instance.waiting_event, "application_completed");
        }
        let (u1_a, u1_b) = (u1[0].id.clone(), u1[1].id.clone());
        let u2 = c.instances_of("applications", "u2").await?;
        assert_eq!(u2.len(), 1);
        let u2_a = u2[0].id.clone();

        // B's completion takes B's branch only.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "application_completed",
                "a-5",
                &json!({"application_id": "B", "score": 7}),
            )],
        )
        .await?;
        let received = sink.wait_for(1, Duration::from_secs(20)).await;
        let request = &received[0];
        assert_eq!(request.path, "/applications/B");
        assert_eq!(
            request.body,
            json!({
                "message_id": request.idempotency_key(),
                "user": "u1",
                "application": "B",
                "started": {"application_id": "B", "amount": 200},
                "completed": {"application_id": "B", "score": 7}
            })
        );
        assert_eq!(
            state(&c.instance(&u1_b).await?),
            pb::InstanceState::Completed
        );
        let a = c.instance(&u1_a).await?;
        assert_eq!(state(&a), pb::InstanceState::Active, "A still waits");
        assert_eq!(a.current_step, "wait");
        assert_eq!(state(&c.instance(&u2_a).await?), pb::InstanceState::Active);

        // The exit rule ends u1's A at once, mid-hold; u2's A (same value) is not touched.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "application_withdrawn",
                "a-6",
                &json!({"application_id": "A"}),
            )],
        )
        .await?;
        let a = c.instance(&u1_a).await?;
        assert_eq!(state(&a), pb::InstanceState::Exited);
        assert!(a.ended_at.is_some());
        let timeline: Vec<(&str, &str)> = a
            .timeline
            .iter()
            .map(|t| (t.kind.as_str(), t.cause.as_str()))
            .collect();
        assert_eq!(timeline.first(), Some(&("entered", "a-1")), "{timeline:?}");
        assert_eq!(timeline.last(), Some(&("exited", "a-6")), "{timeline:?}");
        assert_eq!(state(&c.instance(&u2_a).await?), pb::InstanceState::Active);

        // A completion for the exited instance changes nothing and sends nothing.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "application_completed",
                "a-7",
                &json!({"application_id": "A"}),
            )],
        )
        .await?;
        assert_eq!(state(&c.instance(&u1_a).await?), pb::InstanceState::Exited);

        // Once A ended, the same value may enter again.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "application_started",
                "a-8",
                &json!({"application_id": "A", "amount": 5}),
            )],
        )
        .await?;
        let u1 = c.instances_of("applications", "u1").await?;
        assert_eq!(u1.len(), 3);
        let active: Vec<_> = u1
            .iter()
            .filter(|i| state(i) == pb::InstanceState::Active)
            .collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].unique_value, "A");
        assert_ne!(active[0].id, u1_a);

        let received = sink.settle(Duration::from_millis(700)).await;
        assert_eq!(received.len(), 1, "only B's completion was sent");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
