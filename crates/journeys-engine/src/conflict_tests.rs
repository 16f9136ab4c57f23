//! Conflict handling against a real store, on every configured backend: another writer changes
//! an instance between a batch's reads and its commit (through a test-only hook), and the lane
//! must re-evaluate on fresh state without losing the event.

use std::time::Duration;

use chrono::Utc;
use journeys_core::model::{EntryRule, JourneyDefinition};
use journeys_store::{Changes, InstanceFilter, InstanceRecord, InstanceState, Store};
use journeys_testkit::journeys::{abandoned_checkout, publish};
use journeys_testkit::{each_backend, track};
use serde_json::json;

use crate::{AckStatus, Engine, EngineConfig};

/// Hold for `purchase_completed` (→ `thanks`) at most an hour (→ `nudge`), entered once.
fn checkout() -> JourneyDefinition {
    let mut definition = abandoned_checkout("wait", Duration::from_secs(3600), "dest_1");
    definition.name = "Checkout".into();
    definition.entry_rule = EntryRule::EnterOnce;
    definition
}

/// Publishes the journey, starts an engine and enters `u1`; returns the engine and instance.
async fn waiting_instance(store: &Store) -> (Engine, InstanceRecord) {
    publish(store, &checkout()).await;
    let engine = Engine::start(store.clone(), EngineConfig::default(), None);
    engine.refresh_now().await.unwrap();
    let acks = engine
        .submit(vec![track("u1", "checkout_started", "c1", json!({}))])
        .await;
    assert_eq!(acks[0].status, AckStatus::Accepted);
    let instance = only_instance(store).await;
    assert_eq!(instance.state, InstanceState::Active);
    (engine, instance)
}

async fn only_instance(store: &Store) -> InstanceRecord {
    let mut page = store
        .instances()
        .list(&InstanceFilter::default(), 10, None)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    page.items.remove(0)
}

async fn sent_steps(store: &Store) -> Vec<String> {
    let now = Utc::now();
    store
        .outbox()
        .claim_due(now + chrono::TimeDelta::days(1), 100, now)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.step_key)
        .collect()
}

#[tokio::test]
async fn a_version_bumped_by_another_writer_is_retried_without_losing_the_event() {
    each_backend(async |db| {
        let (engine, instance) = waiting_instance(db).await;
        engine.before_next_commit(Box::new(move |store: Store| {
            Box::pin(async move {
                // A writer that rewrites the instance unchanged but bumps its version.
                let mut current = store
                    .batches()
                    .instances_by_ids(std::slice::from_ref(&instance.id))
                    .await
                    .unwrap()
                    .remove(0);
                let expected = current.version;
                current.version += 1;
                let changes = Changes {
                    instances_updated: vec![(current, expected)],
                    ..Changes::default()
                };
                store.batches().commit(&changes).await.unwrap();
            })
        }));
        let acks = engine
            .submit(vec![track("u1", "purchase_completed", "p1", json!({}))])
            .await;
        assert_eq!(acks[0].status, AckStatus::Accepted);
        let after = only_instance(db).await;
        assert_eq!(after.state, InstanceState::Completed);
        assert_eq!(after.version, 3, "entered at 1, bumped to 2, advanced to 3");
        assert_eq!(sent_steps(db).await, ["thanks"]);
        let stats = engine.stats();
        assert_eq!(stats.conflicts, 1);
        assert_eq!(stats.hold_matches, 1);
        assert_eq!(stats.events_accepted, 2);
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_timeout_fired_elsewhere_first_wins_and_the_event_finds_nothing_to_take() {
    each_backend(async |db| {
        let (engine, instance) = waiting_instance(db).await;
        let timer = db
            .timers()
            .list_for_instance(&instance.id)
            .await
            .unwrap()
            .remove(0);
        // The scheduler, in another process, fires the hold timeout between the event batch's
        // reads and its commit.
        let scheduler = Engine::start((*db).clone(), EngineConfig::default(), None);
        let elsewhere = scheduler.clone();
        engine.before_next_commit(Box::new(move |_store: Store| {
            Box::pin(async move {
                let outcomes = elsewhere.apply_timers(vec![timer]).await.unwrap();
                assert_eq!(outcomes[0].status, crate::TimerStatus::Fired);
            })
        }));
        let acks = engine
            .submit(vec![track("u1", "purchase_completed", "p1", json!({}))])
            .await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "the event is not lost");
        assert_eq!(only_instance(db).await.state, InstanceState::Completed);
        assert_eq!(sent_steps(db).await, ["nudge"], "exactly one branch");
        assert_eq!(engine.stats().conflicts, 1);
        assert_eq!(engine.stats().hold_matches, 0);
        scheduler.shutdown().await;
        engine.shutdown().await;
    })
    .await;
}
