//! Webhook delivery end to end, on every backend, against a real HTTP receiver: retries of a
//! failing destination carry the same `Idempotency-Key` and `messageId`; a final 4xx becomes a
//! dead letter, visible through the API, which replay delivers once the destination recovers.
//!
//! Retries run on the production backoff (1 s base, doubling, full jitter), so the waits here
//! are generous.

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
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{send_accepted, track};
use journeys_tests::{Stack, StackClients, StackOptions, on_each_backend};
use serde_json::{Value, json};

fn forward_to(destination: &str, id: &str) -> Value {
    json!({"journey": {
        "id": id,
        "name": format!("Forward orders to {destination}"),
        "entry": {"event": "order_placed"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "order_id",
        "start_step": "forward",
        "steps": [{"key": "forward", "name": "Forward order", "send": {
            "destination_id": destination,
            "action": {"path": "/orders"},
            "mapping": {
                "message_id": {"@path": "$.messageId"},
                "order": {"@path": "$.properties.journey_context.order_placed.order_id"}
            }
        }}]
    }})
}

async fn send_stats(c: &mut StackClients, journey: &str) -> anyhow::Result<pb::SendStats> {
    let stats = c.stats(journey).await?;
    stats
        .sends
        .into_iter()
        .find(|s| s.step_key == "forward")
        .ok_or_else(|| anyhow::anyhow!("no stats for the send step"))
}

#[tokio::test]
async fn a_failing_destination_gets_every_attempt_with_the_same_idempotency_key()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        sink.script([500, 500]);
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("shop").await?;
        c.webhook("flaky", &sink.url(), None).await?;
        c.register_events(&["order_placed"]).await?;
        c.publish(&forward_to("flaky", "flaky-orders")).await?;

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
        // Backoff ceilings 1 s then 2 s, plus the dispatcher's idle poll: well inside 30 s.
        sink.wait_for(3, Duration::from_secs(30)).await;
        let attempts = sink.settle(Duration::from_millis(1500)).await;
        assert_eq!(
            attempts.iter().map(|a| a.answered).collect::<Vec<_>>(),
            [500, 500, 200],
            "retried until delivered, then no more"
        );
        let first = &attempts[0];
        let message_id = first.str_field("message_id");
        assert!(message_id.starts_with("jm_"), "{:?}", first.body);
        for attempt in &attempts {
            assert_eq!(attempt.idempotency_key(), message_id);
            assert_eq!(
                attempt.body, first.body,
                "every attempt sends the same body"
            );
            assert_eq!(attempt.path, "/orders");
        }
        assert!(attempts[1].at > attempts[0].at && attempts[2].at > attempts[1].at);
        assert!(c.dead_letters("flaky").await?.is_empty());

        let stats = send_stats(&mut c, "flaky-orders").await?;
        assert_eq!((stats.sent, stats.dead_lettered), (1, 0), "{stats:?}");
        // GetJourneyStats documents `failed` as "failed delivery attempts": two here.
        assert_eq!(stats.failed, 2, "failed delivery attempts: {stats:?}");
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_rejected_send_is_dead_lettered_and_replay_delivers_it() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        sink.answer_by_default(400);
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("shop").await?;
        c.webhook("strict", &sink.url(), None).await?;
        c.register_events(&["order_placed"]).await?;
        let journey = c.publish(&forward_to("strict", "strict-orders")).await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![track(
                "u1",
                "order_placed",
                "o-1",
                &json!({"order_id": "B7"}),
            )],
        )
        .await?;
        let first = sink.wait_for(1, Duration::from_secs(20)).await.remove(0);
        let dead = eventually("a dead letter", Duration::from_secs(20), || {
            let mut c = c.clone();
            async move {
                let letters = c.dead_letters("strict").await?;
                Ok::<_, anyhow::Error>((!letters.is_empty()).then_some(letters))
            }
        })
        .await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        let letter = &dead[0];
        let instance = &c.instances_of(&journey.id, "u1").await?[0];
        assert_eq!(letter.destination_id, "strict");
        assert_eq!(letter.journey_id, journey.id);
        assert_eq!(letter.instance_id, instance.id);
        assert_eq!(letter.message_id, first.idempotency_key());
        assert_eq!(letter.attempts, 1, "a 400 is final: no retries");
        assert!(letter.last_error.contains("400"), "{}", letter.last_error);
        assert_eq!(
            journeys_control_plane::convert::json::opt_struct_to_json(letter.payload.as_ref()),
            first.body
        );
        assert!(letter.dead_lettered_at.is_some());
        // The instance shows the send with its payload and how its delivery went.
        let sends = |c: &mut journeys_tests::StackClients| {
            let id = instance.id.clone();
            let mut c = c.clone();
            async move {
                Ok::<_, anyhow::Error>(
                    c.instances
                        .get_instance(pb::GetInstanceRequest { id })
                        .await?
                        .into_inner()
                        .sends,
                )
            }
        };
        let before = sends(&mut c).await?;
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(
            (before[0].status.as_str(), before[0].message_id.as_str()),
            ("DEAD", letter.message_id.as_str())
        );
        assert_eq!(
            journeys_control_plane::convert::json::opt_struct_to_json(before[0].payload.as_ref()),
            first.body
        );
        assert_eq!(sink.settle(Duration::from_millis(1500)).await.len(), 1);
        let stats = send_stats(&mut c, "strict-orders").await?;
        assert_eq!((stats.sent, stats.dead_lettered), (0, 1), "{stats:?}");

        // The destination is fixed; replay delivers the same send once.
        sink.answer_by_default(200);
        let replayed = c
            .destinations
            .replay_dead_letters(pb::ReplayDeadLettersRequest {
                ids: vec![letter.id.clone()],
            })
            .await?
            .into_inner();
        assert_eq!(replayed.replayed, 1);
        let received = sink.wait_for(2, Duration::from_secs(20)).await;
        let again = &received[1];
        assert_eq!(again.answered, 200);
        assert_eq!(again.idempotency_key(), letter.message_id);
        assert_eq!(again.body, first.body);
        assert_eq!(sink.settle(Duration::from_millis(1500)).await.len(), 2);
        let after = eventually(
            "the replayed send marked sent",
            Duration::from_secs(10),
            || {
                let mut c = c.clone();
                async move {
                    let stats = send_stats(&mut c, "strict-orders").await?;
                    Ok::<_, anyhow::Error>((stats.sent == 1).then_some(stats))
                }
            },
        )
        .await;
        assert_eq!(after.dead_lettered, 0, "{after:?}");
        let delivered = sends(&mut c).await?;
        assert_eq!(delivered[0].status, "SENT", "{delivered:?}");
        assert!(delivered[0].sent_at.is_some());
        assert!(c.dead_letters("strict").await?.is_empty());
        // Replaying it again does nothing: it is no longer a dead letter.
        let again = c
            .destinations
            .replay_dead_letters(pb::ReplayDeadLettersRequest {
                ids: vec![letter.id.clone()],
            })
            .await?
            .into_inner();
        assert_eq!(again.replayed, 0);
        assert_eq!(sink.settle(Duration::from_millis(1200)).await.len(), 2);
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
