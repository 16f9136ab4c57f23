//! What the engine writes per transition, on every configured backend: one compact timeline
//! row per transition, no instance row for an instance that starts and ends in one batch (read
//! back from its timeline row), and journey statistics kept as counters that survive purges.

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

use chrono::{TimeDelta, Utc};
use common::{checkout, engine, forwarding, instances};
use journeys_core::machine::instance_id;
use journeys_engine::{Ack, AckStatus};
use journeys_store::{InstanceFilter, InstanceState, PurgePace, StepCounts};
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, identify, track};
use serde_json::json;

fn accepted(acks: &[Ack]) -> bool {
    acks.iter().all(|a| a.status == AckStatus::Accepted)
}

#[tokio::test]
async fn a_forwarded_event_is_one_timeline_row_and_no_instance_row() {
    each_backend(async |db| {
        let b = db.backend();
        db.audiences()
            .insert("vip", "VIP", Utc::now())
            .await
            .unwrap();
        let journey = publish(db, &forwarding()).await;
        let engine = engine(db).await;
        let acks = engine
            .submit(vec![
                identify("ada", "i1", json!({"vip": true, "name": "Ada"})),
                track(
                    "ada",
                    "order_completed",
                    "o1",
                    json!({"order_id": "A1", "plan": "pro", "total": 30}),
                ),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let id = instance_id(&journey, "o1");

        // No instance row...
        let stored = db
            .batches()
            .instances_by_ids(std::slice::from_ref(&id))
            .await
            .unwrap();
        assert!(stored.is_empty(), "{b}: {stored:?}");
        // ...yet GetInstance answers from the one timeline row, with the whole path.
        let detail = db.instances().get(&id).await.unwrap();
        let i = &detail.instance;
        assert_eq!(i.journey_id, journey, "{b}");
        assert_eq!(i.profile_id, "ada", "{b}");
        assert_eq!(i.unique_value.as_deref(), Some("A1"), "{b}");
        assert_eq!(i.state, InstanceState::Completed, "{b}");
        assert_eq!(i.current_step.as_deref(), Some("forward"), "{b}");
        assert_eq!(i.ended_at, Some(i.entered_at), "{b}");
        let path: Vec<(&str, &str)> = detail
            .timeline
            .iter()
            .map(|t| (t.kind.as_str(), t.step_key.as_str()))
            .collect();
        assert_eq!(
            path,
            [
                ("entered", "forward"),
                ("step", "forward"),
                ("send", "forward"),
                ("completed", "forward"),
            ],
            "{b}"
        );
        assert!(
            detail
                .timeline
                .iter()
                .all(|t| t.id == detail.timeline[0].id && t.cause == "o1"),
            "one stored row: {:?}",
            detail.timeline
        );
        let sends = common::sends(db).await;
        assert_eq!(
            detail.timeline[2].detail["message_id"],
            json!(sends[0].message_id),
            "{b}"
        );

        // ListInstances shows it, with and without the state filter that fits it.
        let listed = instances(db, &journey, "ada").await;
        assert_eq!(listed.len(), 1, "{b}");
        assert_eq!(&listed[0], i, "{b}");
        let filtered = |state| InstanceFilter {
            journey_id: Some(journey.clone()),
            profile_id: None,
            state: Some(state),
        };
        let page = |state| async move {
            db.instances()
                .list(&filtered(state), 10, None)
                .await
                .unwrap()
                .items
        };
        assert_eq!(page(InstanceState::Completed).await.len(), 1, "{b}");
        assert!(page(InstanceState::Active).await.is_empty(), "{b}");
        assert!(page(InstanceState::Exited).await.is_empty(), "{b}");

        // Purged with the finished instances past retention, not before.
        let batches = db.batches();
        let now = Utc::now();
        assert_eq!(
            batches
                .purge_finished_instances(now - TimeDelta::days(1), PurgePace::UNPACED)
                .await
                .unwrap(),
            0,
            "{b}"
        );
        assert!(db.instances().get(&id).await.is_ok(), "{b}");
        assert_eq!(
            batches
                .purge_finished_instances(now + TimeDelta::days(1), PurgePace::UNPACED)
                .await
                .unwrap(),
            1,
            "{b}"
        );
        assert!(db.instances().get(&id).await.is_err(), "{b}");
        assert!(instances(db, &journey, "ada").await.is_empty(), "{b}");
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn journey_stats_survive_a_purge_of_finished_instances() {
    each_backend(async |db| {
        let b = db.backend();
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        let start = |user: &str, session: &str, id: &str| {
            track(user, "checkout_started", id, json!({"session_id": session}))
        };
        // Four checkouts: one bought, one cancelled, two still waiting...
        let acks = engine
            .submit(vec![
                start("u1", "s1", "c1"),
                start("u2", "s2", "c2"),
                start("u3", "s3", "c3"),
                start("u4", "s4", "c4"),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");
        let acks = engine
            .submit(vec![
                track(
                    "u1",
                    "purchase_completed",
                    "p1",
                    json!({"session_id": "s1"}),
                ),
                track("u2", "session_cancelled", "x2", json!({"session_id": "s2"})),
                // ...and one that starts and ends within one batch.
                start("u5", "s5", "c5"),
                track(
                    "u5",
                    "purchase_completed",
                    "p5",
                    json!({"session_id": "s5"}),
                ),
            ])
            .await;
        assert!(accepted(&acks), "{acks:?}");

        let before = db.batches().journey_stats(&journey).await.unwrap();
        let hold = before
            .steps
            .iter()
            .find(|s| s.step_key == "wait_purchase")
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            hold,
            StepCounts {
                step_key: "wait_purchase".into(),
                entered: 5,
                waiting: 2,
                completed: 2,
                exited: 1,
                failed: 0,
            },
            "{b}: {before:?}"
        );
        // The cancellation left by the journey's first exit rule.
        assert_eq!(
            before.exits,
            std::collections::BTreeMap::from([("exit_rule:0".to_owned(), 1)]),
            "{b}"
        );
        assert_eq!(before.entries, 5, "{b}");
        let bought: i64 = before.branches.iter().map(|c| c.taken).sum();
        assert_eq!(bought, 2, "{b}: {before:?}");
        assert_eq!(
            db.batches()
                .purge_finished_instances(Utc::now() + TimeDelta::days(1), PurgePace::UNPACED)
                .await
                .unwrap(),
            3,
            "{b}"
        );
        assert_eq!(
            db.batches().journey_stats(&journey).await.unwrap(),
            before,
            "{b}"
        );
        engine.shutdown().await;
    })
    .await;
}
