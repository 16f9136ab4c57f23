//! Timers and operator exits through the engine on every configured backend: delays and hold
//! timeouts fire once, an event racing a timer takes exactly one branch (in one engine and
//! across two), and operator exits end instances.

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

use chrono::{TimeDelta, Utc};
use common::{
    checkout, engine, engine_with, instances, sends, sent_steps, split_engines, timers,
    welcome_once,
};
use journeys_core::machine::ExitReason;
use journeys_engine::{AckStatus, EngineConfig, TerminateOutcome, TimerStatus};
use journeys_store::InstanceState;
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, track};
use serde_json::json;

#[tokio::test]
async fn a_delay_fires_once_and_continues() {
    each_backend(async |db| {
        let journey = publish(db, &welcome_once()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![track("u1", "signed_up", "s1", json!({}))])
            .await;
        let instance = instances(db, &journey, "u1").await.remove(0);
        let due = timers(db, &instance.id).await;
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].kind, "delay");
        assert_eq!(due[0].step_key, "wait");
        let in_an_hour = (due[0].due_at - instance.entered_at).num_seconds();
        assert!((3599..=3601).contains(&in_an_hour), "{in_an_hour}");

        let called = Utc::now();
        let outcomes = engine.apply_timers(due.clone()).await.unwrap();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].timer_id, due[0].id);
        assert_eq!(outcomes[0].status, TimerStatus::Fired);
        // Answered once its commit was done: the scheduler's lateness is measured there.
        assert!(
            (called..=Utc::now()).contains(&outcomes[0].answered_at),
            "{outcomes:?}"
        );
        let done = instances(db, &journey, "u1").await.remove(0);
        assert_eq!(done.state, InstanceState::Completed);
        assert_eq!(sent_steps(db, "u1").await, ["welcome"]);
        assert!(timers(db, &instance.id).await.is_empty());

        // Firing it again (a second scheduler replica with a stale claim) does nothing.
        let again = engine.apply_timers(due).await.unwrap();
        assert_eq!(again[0].status, TimerStatus::Discarded);
        assert_eq!(sends(db).await.len(), 1);
        let stats = engine.stats();
        assert_eq!((stats.timers_fired, stats.timers_discarded), (1, 1));
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_hold_timeout_takes_the_timeout_branch() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![track(
                "u1",
                "checkout_started",
                "c1",
                json!({"session_id": "s1"}),
            )])
            .await;
        let instance = instances(db, &journey, "u1").await.remove(0);
        let due = timers(db, &instance.id).await;
        assert_eq!(due[0].kind, "hold_timeout");
        let outcomes = engine.apply_timers(due).await.unwrap();
        assert_eq!(outcomes[0].status, TimerStatus::Fired);
        assert_eq!(sent_steps(db, "u1").await, ["nudge"]);
        // A purchase after the timeout finds nothing waiting.
        engine
            .submit(vec![track(
                "u1",
                "purchase_completed",
                "p1",
                json!({"session_id": "s1"}),
            )])
            .await;
        assert_eq!(sent_steps(db, "u1").await, ["nudge"]);
        assert_eq!(
            instances(db, &journey, "u1").await[0].state,
            InstanceState::Completed
        );
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_timer_of_a_missing_instance_is_discarded() {
    each_backend(async |db| {
        let engine = engine(db).await;
        let orphan = journeys_store::TimerRecord {
            id: journeys_store::new_id(),
            instance_id: journeys_store::new_id(),
            profile_id: "nobody".into(),
            journey_id: journeys_store::new_id(),
            due_at: chrono::Utc::now(),
            kind: "delay".into(),
            step_key: "wait".into(),
        };
        let outcomes = engine.apply_timers(vec![orphan]).await.unwrap();
        assert_eq!(outcomes[0].status, TimerStatus::Discarded);
        engine.shutdown().await;
    })
    .await;
}

/// Starts `n` sessions for `n` profiles and returns, per profile, the hold timeout timer.
async fn waiting_sessions(
    db: &journeys_store::Store,
    engine: &journeys_engine::Engine,
    journey: &str,
    n: usize,
) -> Vec<journeys_store::TimerRecord> {
    let events = (0..n)
        .map(|i| {
            track(
                &format!("u{i}"),
                "checkout_started",
                &format!("c{i}"),
                json!({"session_id": "s"}),
            )
        })
        .collect();
    let acks = engine.submit(events).await;
    assert!(acks.iter().all(|a| a.status == AckStatus::Accepted));
    let mut due = Vec::new();
    for i in 0..n {
        let instance = instances(db, journey, &format!("u{i}")).await.remove(0);
        due.extend(timers(db, &instance.id).await);
    }
    assert_eq!(due.len(), n);
    due
}

/// Each profile ended with exactly one of the two branches.
async fn exactly_one_branch_each(
    db: &journeys_store::Store,
    journey: &str,
    n: usize,
) -> (usize, usize) {
    let (mut thanks, mut nudges) = (0, 0);
    for i in 0..n {
        let profile = format!("u{i}");
        let steps = sent_steps(db, &profile).await;
        assert_eq!(steps.len(), 1, "{profile}: {steps:?}");
        match steps[0].as_str() {
            "thanks" => thanks += 1,
            "nudge" => nudges += 1,
            other => panic!("unexpected send {other}"),
        }
        let all = instances(db, journey, &profile).await;
        assert_eq!(all[0].state, InstanceState::Completed);
        assert!(timers(db, &all[0].id).await.is_empty());
    }
    (thanks, nudges)
}

#[tokio::test]
async fn an_event_racing_a_timer_takes_exactly_one_branch() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        let n = 16;
        let due = waiting_sessions(db, &engine, &journey, n).await;
        let purchases = (0..n)
            .map(|i| {
                track(
                    &format!("u{i}"),
                    "purchase_completed",
                    &format!("p{i}"),
                    json!({"session_id": "s"}),
                )
            })
            .collect();
        let (acks, outcomes) = tokio::join!(engine.submit(purchases), engine.apply_timers(due));
        assert!(acks.iter().all(|a| a.status == AckStatus::Accepted));
        let outcomes = outcomes.unwrap();
        let (thanks, nudges) = exactly_one_branch_each(db, &journey, n).await;
        let fired = outcomes
            .iter()
            .filter(|o| o.status == TimerStatus::Fired)
            .count();
        assert_eq!(fired, nudges);
        assert_eq!(thanks + nudges, n);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_event_racing_a_timer_in_another_engine_takes_exactly_one_branch() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        // Two engines on one database stand for a data plane and a scheduler process: only
        // the instance version keeps them from both advancing an instance.
        let (events_engine, timers_engine) = split_engines(db).await;
        let n = 16;
        let due = waiting_sessions(db, &events_engine, &journey, n).await;
        let purchases = (0..n)
            .map(|i| {
                track(
                    &format!("u{i}"),
                    "purchase_completed",
                    &format!("p{i}"),
                    json!({"session_id": "s"}),
                )
            })
            .collect();
        let (acks, outcomes) = tokio::join!(
            events_engine.submit(purchases),
            timers_engine.apply_timers(due)
        );
        assert!(
            acks.iter().all(|a| a.status == AckStatus::Accepted),
            "{acks:?}"
        );
        let outcomes = outcomes.unwrap();
        let (_, nudges) = exactly_one_branch_each(db, &journey, n).await;
        let fired = outcomes
            .iter()
            .filter(|o| o.status == TimerStatus::Fired)
            .count();
        assert_eq!(fired, nudges);
        events_engine.shutdown().await;
        timers_engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn operators_end_one_instance_or_all_of_a_journey() {
    each_backend(async |db| {
        let journey = publish(db, &checkout()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![
                track("u1", "checkout_started", "c1", json!({"session_id": "s1"})),
                track("u2", "checkout_started", "c2", json!({"session_id": "s1"})),
                track("u3", "checkout_started", "c3", json!({"session_id": "s1"})),
            ])
            .await;
        let one = instances(db, &journey, "u1").await.remove(0);
        assert_eq!(
            engine
                .terminate_instance(&one.id, ExitReason::Operator)
                .await
                .unwrap(),
            TerminateOutcome::Exited
        );
        assert_eq!(
            engine
                .terminate_instance(&one.id, ExitReason::Operator)
                .await
                .unwrap(),
            TerminateOutcome::NotActive
        );
        assert_eq!(
            engine
                .terminate_instance("no-such-instance", ExitReason::Operator)
                .await
                .unwrap(),
            TerminateOutcome::NotFound
        );
        let ended = instances(db, &journey, "u1").await.remove(0);
        assert_eq!(ended.state, InstanceState::Exited);
        assert!(timers(db, &ended.id).await.is_empty());
        let detail = db.instances().get(&ended.id).await.unwrap();
        let last = detail.timeline.last().unwrap();
        assert_eq!(
            (last.kind.as_str(), last.cause.as_str()),
            ("exited", "operator")
        );

        db.journeys()
            .set_state(
                &journey,
                journeys_store::JourneyState::Archived,
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        assert_eq!(
            engine.terminate_journey_instances(&journey).await.unwrap(),
            2
        );
        for user in ["u2", "u3"] {
            assert_eq!(
                instances(db, &journey, user).await[0].state,
                InstanceState::Exited
            );
        }
        assert_eq!(engine.stats().terminations, 3);
        assert!(sends(db).await.is_empty());
        engine.shutdown().await;
    })
    .await;
}

/// An engine whose long batch delay keeps each event queued (uncommitted) for 400 ms.
async fn slow_batches(store: &journeys_store::Store) -> journeys_engine::Engine {
    engine_with(
        store,
        EngineConfig {
            max_batch_delay: Duration::from_millis(400),
            ..EngineConfig::default()
        },
    )
    .await
}

#[tokio::test]
async fn the_watermark_holds_at_the_oldest_uncommitted_event() {
    each_backend(async |db| {
        let engine = slow_batches(db).await;
        let received = Utc::now();
        let pending = engine.submit(vec![track("u1", "page_viewed", "w1", json!({}))]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let held = engine.watermark();
        assert!(held >= received, "{held} < {received}");
        assert!(
            held <= Utc::now() - TimeDelta::milliseconds(100),
            "the watermark moved on while the event was uncommitted"
        );
        let acks = pending.await;
        assert_eq!(acks[0].status, AckStatus::Accepted);
        let idle = engine.watermark();
        assert!(
            idle >= Utc::now() - TimeDelta::milliseconds(50),
            "idle watermark is now"
        );
        engine.shutdown().await;
    })
    .await;
}

/// The scheduler of the same process waits only until the events received before a deadline
/// are queued in their lanes (a lane applies its queue in order, so a timer handed to it later
/// comes after them), not until they committed. Once ids are linked, an event may be handed
/// on to another lane after its first one evaluated it: then it counts until it committed.
#[tokio::test]
async fn the_placed_watermark_passes_a_queued_event_unless_ids_are_linked() {
    each_backend(async |db| {
        let engine = slow_batches(db).await;
        // The first batch also lets the engine read that the store holds no link.
        let acks = engine
            .submit(vec![track("u0", "page_viewed", "w0", json!({}))])
            .await;
        assert_eq!(acks[0].status, AckStatus::Accepted);

        let received = Utc::now();
        let pending = engine.submit(vec![track("u1", "page_viewed", "w1", json!({}))]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let committed = engine.watermark();
        let placed = engine.placed_watermark();
        assert!(
            committed <= Utc::now() - TimeDelta::milliseconds(100),
            "the commit watermark moved on while the event was uncommitted"
        );
        assert!(
            placed >= received + TimeDelta::milliseconds(100),
            "the placed watermark {placed} waited for the queued event received at {received}"
        );
        assert_eq!(pending.await[0].status, AckStatus::Accepted);

        // An event linking an anonymous id to its user: from now on events may be handed on.
        let mut linking = track("u2", "page_viewed", "w2", json!({}));
        linking.anonymous_id = Some("anon-2".to_owned());
        let received = Utc::now();
        let pending = engine.submit(vec![linking]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let placed = engine.placed_watermark();
        assert!(
            placed <= received + TimeDelta::milliseconds(50),
            "the placed watermark {placed} passed a linking event received at {received}"
        );
        assert_eq!(pending.await[0].status, AckStatus::Accepted);
        let mut anonymous = track("anon-2", "page_viewed", "w3", json!({}));
        anonymous.user_id = None;
        anonymous.anonymous_id = Some("anon-2".to_owned());
        let received = Utc::now();
        let pending = engine.submit(vec![anonymous]);
        tokio::time::sleep(Duration::from_millis(150)).await;
        let placed = engine.placed_watermark();
        assert!(
            placed <= received + TimeDelta::milliseconds(50),
            "the placed watermark {placed} passed an event of a linked id received at {received}"
        );
        assert_eq!(pending.await[0].status, AckStatus::Accepted);
        let idle = engine.placed_watermark();
        assert!(
            idle >= Utc::now() - TimeDelta::milliseconds(50),
            "idle: now"
        );
        engine.shutdown().await;
    })
    .await;
}

/// Firing a timer of a profile that is not in memory reads only the timer's instance (and the
/// traits and audiences its steps may read). That partial state must never stand in for the
/// profile: its other instances and enter-once records still count for the next events.
#[tokio::test]
async fn a_timer_fired_on_a_cold_profile_leaves_the_rest_of_the_profile_intact() {
    each_backend(async |db| {
        let b = db.backend();
        let welcome = publish(db, &welcome_once()).await;
        publish(db, &checkout()).await;
        let engine = engine(db).await;
        engine
            .submit(vec![
                track("u1", "signed_up", "e1", json!({})),
                track("u1", "checkout_started", "c1", json!({"session_id": "s1"})),
            ])
            .await;
        let delayed = instances(db, &welcome, "u1").await.remove(0);
        let due = timers(db, &delayed.id).await;

        // The profile leaves memory (as past the cache bound); its delay fires.
        engine.forget_profiles(&["u1".to_owned()]).await;
        let outcomes = engine.apply_timers(due).await.unwrap();
        assert_eq!(outcomes[0].status, TimerStatus::Fired, "{b}");

        // The hold of the other journey still takes the purchase, and enter-once still holds.
        let acks = engine
            .submit(vec![track(
                "u1",
                "purchase_completed",
                "p1",
                json!({"session_id": "s1"}),
            )])
            .await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");
        assert_eq!(sent_steps(db, "u1").await, ["thanks", "welcome"], "{b}");
        let acks = engine
            .submit(vec![track("u1", "signed_up", "e2", json!({}))])
            .await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");
        assert_eq!(instances(db, &welcome, "u1").await.len(), 1, "{b}");
        assert_eq!(
            engine.stats().conflicts,
            0,
            "{b}: the state in memory was whole"
        );
        engine.shutdown().await;
    })
    .await;
}
