//! Shared fixtures of the engine tests: journeys, events, publishing, and reads of what the
//! engine committed.

#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::model::{
    EntryRule, ExitRule, FilterMatch, JourneyDefinition, Json, PropertyFilter, SendStep, Step,
    StepKind,
};
use journeys_engine::{Engine, EngineConfig, OnCommit, OwnerConfig};
use journeys_store::{InstanceFilter, InstanceRecord, OutboxRecord, Store, TimerRecord};
use journeys_testkit::journeys::{abandoned_checkout, delay, journey, send_spec, step};
use serde_json::json;

/// An engine for tests: two lanes, and a cache loaded before it returns.
pub async fn engine(store: &Store) -> Engine {
    engine_with(
        store,
        EngineConfig {
            lanes: 2,
            ..EngineConfig::default()
        },
    )
    .await
}

pub async fn engine_with(store: &Store, config: EngineConfig) -> Engine {
    start(store, config, None).await
}

/// Like [`engine`], calling `on_commit` after each commit that queued sends.
pub async fn engine_waking(store: &Store, on_commit: OnCommit) -> Engine {
    start(
        store,
        EngineConfig {
            lanes: 2,
            ..EngineConfig::default()
        },
        Some(on_commit),
    )
    .await
}

/// Engines under test are partition owners, as in production (`journeys dev`, `journeys
/// serve`), unless the config says otherwise: the owner path (fence, profiles in memory) is
/// the one every test exercises. Returns once the engine holds its partitions.
async fn start(store: &Store, mut config: EngineConfig, on_commit: Option<OnCommit>) -> Engine {
    if config.owner.is_none() {
        config.owner = Some(owner("test-node"));
    }
    start_as_configured(store, config, on_commit).await
}

/// The engines of a split deployment on one store: a data plane (an owner that reads profiles
/// from the store every batch, as `journeys-data-plane` beside other writers) and a scheduler
/// or control plane process (no owner; the store's version checks arbitrate).
pub async fn split_engines(store: &Store) -> (Engine, Engine) {
    let data_plane = start_as_configured(
        store,
        EngineConfig {
            lanes: 2,
            owner: Some(OwnerConfig {
                profile_cache: 0,
                ..owner("data-plane")
            }),
            ..EngineConfig::default()
        },
        None,
    )
    .await;
    let other = start_as_configured(
        store,
        EngineConfig {
            lanes: 2,
            ..EngineConfig::default()
        },
        None,
    )
    .await;
    (data_plane, other)
}

async fn start_as_configured(
    store: &Store,
    config: EngineConfig,
    on_commit: Option<OnCommit>,
) -> Engine {
    let engine = Engine::start(store.clone(), config, on_commit);
    engine.refresh_now().await.unwrap();
    engine.ownership_ready().await;
    engine
}

/// Owner settings for node `node_id` with a short lease (tests that take partitions over).
pub fn owner(node_id: &str) -> OwnerConfig {
    OwnerConfig {
        node_id: node_id.to_owned(),
        lease_ttl: Duration::from_secs(1),
        ..OwnerConfig::default()
    }
}

/// A send to `dest_1` naming the event after the step, with `traits` and `mapping`.
fn send(key: &str, traits: &[&str], mapping: Option<Json>) -> Step {
    let mut spec = send_spec("dest_1");
    spec.event_name = Some(key.into());
    spec.traits = traits.iter().map(|t| (*t).to_owned()).collect();
    spec.mapping = mapping;
    step(key, StepKind::Send(SendStep { spec, next: None }))
}

/// Real-time forwarding: `order_completed` of `vip` members with plan `pro` or `enterprise`,
/// mapped into `{order, total, customer}`.
pub fn forwarding() -> JourneyDefinition {
    let mut definition = journey(
        "Forward orders",
        "order_completed",
        EntryRule::ReenterEveryTime {
            unique_identifier: "order_id".into(),
        },
        vec![send(
            "forward",
            &["name"],
            Some(json!({
                "order": {"@path": "$.properties.journey_context.order_completed.order_id"},
                "total": {"@path": "$.properties.journey_context.order_completed.total"},
                "customer": {"@path": "$.properties.name"},
                "event": {"@path": "$.event"},
            })),
        )],
    );
    definition.entry.audience_key = Some("vip".into());
    definition.entry.filters = vec![PropertyFilter {
        property: "plan".into(),
        matcher: FilterMatch::AnyOf(vec![json!("pro"), json!("enterprise")]),
    }];
    definition
}

/// Abandoned checkout with re-entry per `session_id`: hold for `purchase_completed` (→ send
/// `thanks`) at most an hour (→ send `nudge`); `session_cancelled` of the same session and
/// `account_deleted` exit. Sends name the event after their step.
pub fn checkout() -> JourneyDefinition {
    let mut definition = abandoned_checkout("wait_purchase", Duration::from_secs(3600), "dest_1");
    for step in &mut definition.steps {
        if let StepKind::Send(send) = &mut step.kind {
            send.spec.event_name = Some(step.key.clone());
        }
    }
    definition.exit_rules = vec![
        ExitRule {
            event: "session_cancelled".into(),
            filters: Vec::new(),
            match_unique_identifier: true,
            send: None,
        },
        ExitRule {
            event: "account_deleted".into(),
            filters: Vec::new(),
            match_unique_identifier: false,
            send: None,
        },
    ];
    definition
}

/// Welcome once: `signed_up` enters at most once; a one-hour delay, then `welcome`.
pub fn welcome_once() -> JourneyDefinition {
    journey(
        "Welcome",
        "signed_up",
        EntryRule::EnterOnce,
        vec![
            delay("wait", Duration::from_secs(3600), "welcome"),
            send("welcome", &[], None),
        ],
    )
}

/// Every pending outbox row (read without holding a claim).
pub async fn sends(store: &Store) -> Vec<OutboxRecord> {
    let now = Utc::now();
    let mut rows = store
        .outbox()
        .claim_due(now + TimeDelta::days(1), 1000, now - TimeDelta::seconds(1))
        .await
        .unwrap();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// Step keys of the pending sends of `profile`, sorted.
pub async fn sent_steps(store: &Store, profile: &str) -> Vec<String> {
    let mut steps: Vec<String> = sends(store)
        .await
        .into_iter()
        .filter(|s| s.profile_id == profile)
        .map(|s| s.step_key)
        .collect();
    steps.sort();
    steps
}

/// Instances of `journey` for `profile`, in id order.
pub async fn instances(store: &Store, journey: &str, profile: &str) -> Vec<InstanceRecord> {
    store
        .instances()
        .list(
            &InstanceFilter {
                journey_id: Some(journey.into()),
                profile_id: Some(profile.into()),
                state: None,
            },
            1000,
            None,
        )
        .await
        .unwrap()
        .items
}

/// The timers of `instance`.
pub async fn timers(store: &Store, instance: &str) -> Vec<TimerRecord> {
    store.timers().list_for_instance(instance).await.unwrap()
}

/// An instance's unique value as stored.
pub fn unique(instance: &InstanceRecord) -> &str {
    instance.unique_value.as_deref().unwrap_or_default()
}

/// Now plus `secs` seconds.
pub fn in_secs(secs: i64) -> DateTime<Utc> {
    Utc::now() + TimeDelta::seconds(secs)
}
