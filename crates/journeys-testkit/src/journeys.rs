//! Journey builders for tests: steps (send, delay, hold-until), a definition around them, the
//! abandoned checkout most timer tests use, and storing journeys and webhook destinations
//! straight into the store.

use std::time::Duration;

use chrono::Utc;
use journeys_core::model::{
    DelayStep, EntryRule, EntryTrigger, HoldBranch, HoldUntilStep, JourneyDefinition, SendAction,
    SendSpec, SendStep, Step, StepKind,
};
use journeys_store::{DestinationKind, DestinationRecord, JourneyRecord, JourneyState, Store};
use serde_json::Value;

/// A journey `name` entered by `entry_event` under `entry_rule`, starting at the first of
/// `steps`, with no audience, filters or exit rules (set those fields when a test needs them).
#[must_use]
pub fn journey(
    name: &str,
    entry_event: &str,
    entry_rule: EntryRule,
    steps: Vec<Step>,
) -> JourneyDefinition {
    JourneyDefinition {
        name: name.to_owned(),
        description: String::new(),
        entry: EntryTrigger {
            event: entry_event.to_owned(),
            audience_key: None,
            filters: Vec::new(),
        },
        entry_rule,
        start_step: steps.first().map(|s| s.key.clone()).unwrap_or_default(),
        steps,
        exit_rules: Vec::new(),
    }
}

/// Abandoned checkout, one instance per `session_id`: `checkout_started` enters, the hold
/// `hold_key` waits for `purchase_completed` (branch `bought` → send `thanks`) at most
/// `hold_for` (→ send `nudge`). Both sends go to `destination_id`.
#[must_use]
pub fn abandoned_checkout(
    hold_key: &str,
    hold_for: Duration,
    destination_id: &str,
) -> JourneyDefinition {
    journey(
        "Abandoned checkout",
        "checkout_started",
        EntryRule::ReenterEveryTime {
            unique_identifier: "session_id".to_owned(),
        },
        vec![
            hold(
                hold_key,
                vec![branch("bought", "purchase_completed", "thanks")],
                hold_for,
                "nudge",
            ),
            send("thanks", destination_id),
            send("nudge", destination_id),
        ],
    )
}

/// The step `key` (also its name) doing `kind`.
#[must_use]
pub fn step(key: &str, kind: StepKind) -> Step {
    Step {
        key: key.to_owned(),
        name: key.to_owned(),
        kind,
    }
}

/// What a plain send to `destination_id` sends: the event as is, no extra traits or mapping.
#[must_use]
pub fn send_spec(destination_id: &str) -> SendSpec {
    SendSpec {
        destination_id: destination_id.to_owned(),
        action: SendAction::default(),
        event_name: None,
        traits: Vec::new(),
        mapping: None,
    }
}

/// A send step `key` to `destination_id` that ends the journey.
#[must_use]
pub fn send(key: &str, destination_id: &str) -> Step {
    step(
        key,
        StepKind::Send(SendStep {
            spec: send_spec(destination_id),
            next: None,
        }),
    )
}

/// A delay step `key` of `duration`, then `next`.
#[must_use]
pub fn delay(key: &str, duration: Duration, next: &str) -> Step {
    step(
        key,
        StepKind::Delay(DelayStep {
            duration,
            next: Some(next.to_owned()),
        }),
    )
}

/// A hold-until step `key` taking `branches`, or `timeout_next` after `max_duration`.
#[must_use]
pub fn hold(
    key: &str,
    branches: Vec<HoldBranch>,
    max_duration: Duration,
    timeout_next: &str,
) -> Step {
    step(
        key,
        StepKind::HoldUntil(HoldUntilStep {
            branches,
            max_duration,
            timeout_next: Some(timeout_next.to_owned()),
        }),
    )
}

/// A hold branch `name` taken on `event` (no filters), then `next`.
#[must_use]
pub fn branch(name: &str, event: &str, next: &str) -> HoldBranch {
    HoldBranch {
        name: name.to_owned(),
        event: event.to_owned(),
        filters: Vec::new(),
        next: Some(next.to_owned()),
        return_to_start: false,
    }
}

/// Stores `definition` as a draft and publishes it; returns its id.
///
/// # Panics
/// When the store refuses the journey: the test's set-up is wrong.
pub async fn publish(store: &Store, definition: &JourneyDefinition) -> String {
    let now = Utc::now();
    let definition_json = match serde_json::to_value(definition) {
        Ok(json) => json,
        Err(err) => panic!("the journey definition does not serialize: {err}"),
    };
    let draft = JourneyRecord::new_draft(definition.name.clone(), "", definition_json, now);
    let stored = match store.journeys().insert(&draft).await {
        Ok(stored) => stored,
        Err(err) => panic!("cannot insert journey {}: {err}", definition.name),
    };
    if let Err(err) = store
        .journeys()
        .set_state(&stored.id, JourneyState::Published, now)
        .await
    {
        panic!("cannot publish journey {}: {err}", definition.name);
    }
    stored.id
}

/// Stores a webhook destination with `settings` (at least a `url`); returns its id.
///
/// # Panics
/// When the store refuses the destination: the test's set-up is wrong.
pub async fn webhook_destination(store: &Store, settings: Value) -> String {
    let record = DestinationRecord::new(
        format!("sink-{}", journeys_store::new_id()),
        DestinationKind::Webhook,
        settings,
        Utc::now(),
    );
    match store.destinations().insert(&record).await {
        Ok(stored) => stored.id,
        Err(err) => panic!("cannot insert a webhook destination: {err}"),
    }
}
