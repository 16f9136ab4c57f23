//! Shared fixtures of the engine tests: journeys, events, publishing, and reads of what the
//! engine committed.

#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_core::model::{
    DelayStep, EntryRule, EntryTrigger, Event, EventType, ExitRule, FilterMatch, HoldBranch,
    HoldUntilStep, JourneyDefinition, Json, PropertyFilter, SendAction, SendSpec, SendStep, Step,
    StepKind,
};
use journeys_engine::{Engine, EngineConfig, OnCommit};
use journeys_store::{
    InstanceFilter, InstanceRecord, JourneyRecord, JourneyState, OutboxRecord, Store, TimerRecord,
};
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

async fn start(store: &Store, config: EngineConfig, on_commit: Option<OnCommit>) -> Engine {
    let engine = Engine::start(store.clone(), config, on_commit);
    engine.refresh_now().await.unwrap();
    engine
}

/// Stores `definition` as a draft and publishes it; returns its id.
pub async fn publish(store: &Store, definition: &JourneyDefinition) -> String {
    let now = Utc::now();
    let draft = JourneyRecord::new_draft(
        definition.name.clone(),
        "",
        serde_json::to_value(definition).unwrap(),
        now,
    );
    let stored = store.journeys().insert(&draft).await.unwrap();
    store
        .journeys()
        .set_state(&stored.id, JourneyState::Published, now)
        .await
        .unwrap();
    stored.id
}

pub fn track(user: &str, name: &str, message_id: &str, properties: Json) -> Event {
    Event {
        kind: EventType::Track,
        message_id: message_id.into(),
        user_id: Some(user.into()),
        anonymous_id: None,
        event: name.into(),
        properties,
        traits: json!({}),
        context: json!({}),
        timestamp: Utc::now(),
    }
}

pub fn identify(user: &str, message_id: &str, traits: Json) -> Event {
    Event {
        kind: EventType::Identify,
        message_id: message_id.into(),
        user_id: Some(user.into()),
        anonymous_id: None,
        event: "identify".into(),
        properties: json!({}),
        traits,
        context: json!({}),
        timestamp: Utc::now(),
    }
}

fn step(key: &str, kind: StepKind) -> Step {
    Step {
        key: key.into(),
        name: format!("Step {key}"),
        kind,
    }
}

fn send(key: &str, traits: &[&str], mapping: Option<Json>, next: Option<&str>) -> Step {
    step(
        key,
        StepKind::Send(SendStep {
            spec: SendSpec {
                destination_id: "dest_1".into(),
                action: SendAction::default(),
                event_name: Some(key.into()),
                traits: traits.iter().map(|t| (*t).to_owned()).collect(),
                mapping,
            },
            next: next.map(str::to_owned),
        }),
    )
}

fn session_rule() -> EntryRule {
    EntryRule::ReenterEveryTime {
        unique_identifier: "session_id".into(),
    }
}

/// Real-time forwarding: `order_completed` of `vip` members with plan `pro` or `enterprise`,
/// mapped into `{order, total, customer}`.
pub fn forwarding() -> JourneyDefinition {
    JourneyDefinition {
        name: "Forward orders".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "order_completed".into(),
            audience_key: Some("vip".into()),
            filters: vec![PropertyFilter {
                property: "plan".into(),
                matcher: FilterMatch::AnyOf(vec![json!("pro"), json!("enterprise")]),
            }],
        },
        entry_rule: EntryRule::ReenterEveryTime {
            unique_identifier: "order_id".into(),
        },
        start_step: "forward".into(),
        steps: vec![send(
            "forward",
            &["name"],
            Some(json!({
                "order": {"@path": "$.properties.journey_context.order_completed.order_id"},
                "total": {"@path": "$.properties.journey_context.order_completed.total"},
                "customer": {"@path": "$.properties.name"},
                "event": {"@path": "$.event"},
            })),
            None,
        )],
        exit_rules: Vec::new(),
    }
}

/// Abandoned checkout with re-entry per `session_id`: hold for `purchase_completed` (→ send
/// `thanks`) at most an hour (→ send `nudge`); `session_cancelled` of the same session and
/// `account_deleted` exit.
pub fn checkout() -> JourneyDefinition {
    JourneyDefinition {
        name: "Abandoned checkout".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "checkout_started".into(),
            audience_key: None,
            filters: Vec::new(),
        },
        entry_rule: session_rule(),
        start_step: "wait_purchase".into(),
        steps: vec![
            step(
                "wait_purchase",
                StepKind::HoldUntil(HoldUntilStep {
                    branches: vec![HoldBranch {
                        name: "bought".into(),
                        event: "purchase_completed".into(),
                        filters: Vec::new(),
                        next: Some("thanks".into()),
                        return_to_start: false,
                    }],
                    max_duration: Duration::from_secs(3600),
                    timeout_next: Some("nudge".into()),
                }),
            ),
            send("thanks", &[], None, None),
            send("nudge", &[], None, None),
        ],
        exit_rules: vec![
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
        ],
    }
}

/// Welcome once: `signed_up` enters at most once; a one-hour delay, then `welcome`.
pub fn welcome_once() -> JourneyDefinition {
    JourneyDefinition {
        name: "Welcome".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "signed_up".into(),
            audience_key: None,
            filters: Vec::new(),
        },
        entry_rule: EntryRule::EnterOnce,
        start_step: "wait".into(),
        steps: vec![
            step(
                "wait",
                StepKind::Delay(DelayStep {
                    duration: Duration::from_secs(3600),
                    next: Some("welcome".into()),
                }),
            ),
            send("welcome", &[], None, None),
        ],
        exit_rules: Vec::new(),
    }
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
