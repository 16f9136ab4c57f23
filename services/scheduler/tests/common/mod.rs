//! Fixtures shared by the scheduler's tests: published journeys with second-scale delays and
//! holds, entry and branch events, an engine with a scheduler on the same store, and counting
//! queries over the outbox and timeline.

#![allow(dead_code)] // Each test binary uses a different part.

use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_core::machine::instance_id;
use journeys_core::model::{EntryRule, Event, JourneyDefinition};
use journeys_engine::{AckStatus, Engine, EngineConfig};
use journeys_scheduler::{HousekeepingConfig, Scheduler, SchedulerConfig, WatermarkSource};
use journeys_store::Store;
use journeys_testkit::journeys::{abandoned_checkout, delay, journey, send, webhook_destination};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::json;

/// The send step after a delay.
pub const DELAY_SEND: &str = "after_delay";
/// The send step of a hold's timeout branch.
pub const NUDGE: &str = "nudge";
/// The send step of a hold's event branch.
pub const THANKS: &str = "thanks";
/// Entry event of the delay journey.
pub const SIGNED_UP: &str = "signed_up";
/// Entry and branch events of the hold journey.
pub const CHECKOUT_STARTED: &str = "checkout_started";
pub const PURCHASE_COMPLETED: &str = "purchase_completed";

/// Scheduler settings for tests: short horizon and lease so that tests about lapsed claims take
/// seconds, frequent claim rounds, and no cron schedule (tests run the jobs directly).
pub fn test_config() -> SchedulerConfig {
    SchedulerConfig {
        horizon: Duration::from_secs(1),
        lease: Duration::from_secs(3),
        claim_interval: Duration::from_millis(50),
        housekeeping: HousekeepingConfig {
            schedule: String::new(),
            ..HousekeepingConfig::default()
        },
        ..SchedulerConfig::default()
    }
}

/// A webhook destination nobody delivers to in these tests (no dispatcher runs).
pub async fn destination(store: &Store) -> String {
    webhook_destination(store, json!({"url": "http://127.0.0.1:9/unused"})).await
}

/// `signed_up` → wait `delay` → send [`DELAY_SEND`]. One instance per profile.
pub fn delay_journey(destination_id: &str, delay_for: Duration) -> JourneyDefinition {
    journey(
        &format!("delay {}", journeys_store::new_id()),
        SIGNED_UP,
        EntryRule::EnterOnce,
        vec![
            delay("wait", delay_for, DELAY_SEND),
            send(DELAY_SEND, destination_id),
        ],
    )
}

/// Abandoned checkout: `checkout_started` (one instance per `session_id`) → hold until
/// `purchase_completed` of the same session ([`THANKS`]) or `hold` passes ([`NUDGE`]).
pub fn hold_journey(destination_id: &str, hold_for: Duration) -> JourneyDefinition {
    let mut definition = abandoned_checkout("hold", hold_for, destination_id);
    definition.name = format!("hold {}", journeys_store::new_id());
    definition
}

/// The id of the instance an entry event with `message_id` creates in `journey_id`.
pub fn instance_of(journey_id: &str, message_id: &str) -> String {
    instance_id(journey_id, message_id)
}

/// An engine on `store` whose journey cache is loaded.
pub async fn engine(store: &Store) -> Engine {
    let engine = Engine::start(store.clone(), EngineConfig::default(), None);
    engine.refresh_now().await.expect("load journeys");
    engine
}

/// Submits `events` in chunks and asserts that each was accepted.
pub async fn submit_all(engine: &Engine, events: Vec<Event>) {
    let mut events = events;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(500));
        let acks = engine.submit(events).await;
        for ack in &acks {
            assert_eq!(ack.status, AckStatus::Accepted, "event {}", ack.message_id);
        }
        events = rest;
    }
}

/// A scheduler over `store` and `engine` with `config`, reading `watermark`.
pub async fn scheduler(
    store: &Store,
    engine: &Engine,
    watermark: impl WatermarkSource,
    config: SchedulerConfig,
) -> Scheduler {
    Scheduler::start(store.clone(), engine.clone(), watermark, config)
        .await
        .expect("start scheduler")
}

/// A plain connection to the test database, for counting rows the store API does not count.
pub async fn raw(url: &str) -> DatabaseConnection {
    // The store rewrites `mariadb:` for sqlx; the test URLs are `sqlite:` or `mysql:`.
    Database::connect(url).await.expect("connect for counting")
}

/// One integer from `sql` with `?` placeholders bound to `values`.
pub async fn count(db: &DatabaseConnection, sql: &str, values: &[&str]) -> i64 {
    let statement = Statement::from_sql_and_values(
        db.get_database_backend(),
        sql,
        values.iter().map(|v| (*v).into()),
    );
    let row = db
        .query_one_raw(statement)
        .await
        .expect("count query")
        .expect("one row");
    row.try_get_by_index::<i64>(0).expect("integer count")
}

/// Outbox rows of `journey_id` at send step `step_key`.
pub async fn sends(db: &DatabaseConnection, journey_id: &str, step_key: &str) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM outbox WHERE journey_id = ? AND step_key = ?",
        &[journey_id, step_key],
    )
    .await
}

/// Outbox rows of one instance at `step_key`.
pub async fn sends_of(db: &DatabaseConnection, instance_id: &str, step_key: &str) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM outbox WHERE instance_id = ? AND step_key = ?",
        &[instance_id, step_key],
    )
    .await
}

/// Timers still stored for `journey_id`.
pub async fn timers_left(db: &DatabaseConnection, journey_id: &str) -> i64 {
    count(
        db,
        "SELECT COUNT(*) FROM timers WHERE journey_id = ?",
        &[journey_id],
    )
    .await
}

/// When the outbox row of `instance_id` at `step_key` was created.
pub async fn send_time(store: &Store, instance_id: &str) -> Option<DateTime<Utc>> {
    let detail = store.instances().get(instance_id).await.ok()?;
    detail
        .timeline
        .iter()
        .find(|t| t.kind == "send")
        .map(|t| t.at)
}
