//! The three seed use cases of SPEC.md, run through `simulate` on a virtual clock: abandoned
//! checkout, real-time forwarding and a personalised follow-up.

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

use std::collections::BTreeMap;

use chrono::{TimeDelta, TimeZone, Utc};
use journeys_core::machine::{InstanceState, Journey, SkipReason, TimelineKind};
use journeys_core::model::{Event, JourneyDefinition, JourneyMeta, Timestamp};
use journeys_core::simulate::{ProfileSnapshot, SimulatedEvent, Simulation, simulate};
use serde_json::{Value, json};

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap()
}

fn mins(n: i64) -> TimeDelta {
    TimeDelta::minutes(n)
}

fn journey(id: &str, definition: Value) -> Journey {
    let definition: JourneyDefinition = serde_json::from_value(definition).expect("definition");
    Journey::new(
        JourneyMeta {
            id: id.into(),
            version: 1,
            name: definition.name.clone(),
        },
        definition,
    )
}

fn track(
    message_id: &str,
    user: &str,
    name: &str,
    properties: Value,
    at: Timestamp,
) -> SimulatedEvent {
    let mut event: Event = serde_json::from_value(json!({
        "type": "track",
        "message_id": message_id,
        "user_id": user,
        "event": name,
        "timestamp": at,
    }))
    .expect("event");
    event.properties = properties;
    SimulatedEvent { event, at: None }
}

fn abandoned_checkout() -> Journey {
    journey(
        "j-abandoned",
        json!({
            "name": "Abandoned checkout",
            "entry": {"event": "checkout_started"},
            "entry_rule": {"rule": "reenter_every_time", "unique_identifier": "session_id"},
            "start_step": "wait_for_purchase",
            "steps": [
                {"key": "wait_for_purchase", "name": "Wait for purchase", "kind": {
                    "type": "hold_until",
                    "branches": [{"name": "Purchased", "event": "purchase_completed", "next": null}],
                    "max_duration": {"secs": 3600, "nanos": 0},
                    "timeout_next": "nudge"
                }},
                {"key": "nudge", "name": "Cart reminder", "kind": {
                    "type": "send", "destination_id": "webhook_crm", "traits": ["email"], "next": "end"
                }},
                {"key": "end", "name": "End", "kind": {"type": "end"}}
            ]
        }),
    )
}

#[test]
fn abandoned_checkout_nudges_only_the_session_that_did_not_buy() {
    let j = abandoned_checkout();
    let mut profiles = BTreeMap::new();
    profiles.insert(
        "u2".to_owned(),
        ProfileSnapshot {
            traits: json!({"email": "u2@example.com"}),
            ..ProfileSnapshot::default()
        },
    );
    let sim = Simulation {
        events: vec![
            track(
                "m1",
                "u1",
                "checkout_started",
                json!({"session_id": "s1", "total": 40}),
                t0(),
            ),
            track(
                "m2",
                "u2",
                "checkout_started",
                json!({"session_id": "s2", "total": 99}),
                t0() + mins(5),
            ),
            // Same session again while its instance is active: not a second instance.
            track(
                "m3",
                "u1",
                "checkout_started",
                json!({"session_id": "s1"}),
                t0() + mins(10),
            ),
            // A purchase of another session does not complete s1.
            track(
                "m4",
                "u1",
                "purchase_completed",
                json!({"session_id": "other"}),
                t0() + mins(15),
            ),
            track(
                "m5",
                "u1",
                "purchase_completed",
                json!({"session_id": "s1"}),
                t0() + mins(20),
            ),
        ],
        profiles,
        ..Simulation::default()
    };
    let result = simulate(&j, &sim);

    assert_eq!(result.instances.len(), 2);
    assert_eq!(result.skipped.len(), 1);
    assert_eq!(result.skipped[0].message_id, "m3");
    assert_eq!(result.skipped[0].reason, SkipReason::DuplicateEntry);

    let bought = &result.instances[0];
    assert_eq!(bought.profile_id, "u1");
    assert_eq!(bought.unique_value.as_deref(), Some("s1"));
    assert_eq!(bought.final_state, InstanceState::Completed);
    assert!(bought.sends.is_empty(), "a buyer gets no nudge");
    let branch = bought
        .path
        .iter()
        .find(|p| p.kind == TimelineKind::Branch)
        .expect("took the purchase branch");
    assert_eq!(branch.cause, "m5");
    assert_eq!(branch.at, t0() + mins(20));
    assert_eq!(branch.detail["branch"], "Purchased");

    let abandoned = &result.instances[1];
    assert_eq!(abandoned.profile_id, "u2");
    assert_eq!(abandoned.final_state, InstanceState::Completed);
    assert_eq!(abandoned.final_step, "end");
    let timed_out = abandoned
        .path
        .iter()
        .find(|p| p.kind == TimelineKind::TimedOut)
        .expect("timed out");
    assert_eq!(timed_out.at, t0() + mins(5) + mins(60));
    assert_eq!(timed_out.cause, "timer");
    assert_eq!(abandoned.sends.len(), 1, "exactly one nudge");
    let nudge = &abandoned.sends[0];
    assert_eq!(nudge.at, t0() + mins(65));
    assert_eq!(nudge.destination_id, "webhook_crm");
    assert_eq!(nudge.payload["event"], "Cart reminder");
    assert_eq!(nudge.payload["userId"], "u2");
    assert_eq!(nudge.payload["properties"]["email"], "u2@example.com");
    assert_eq!(
        nudge.payload["properties"]["journey_context"],
        json!({"checkout_started": {"session_id": "s2", "total": 99}})
    );
    let steps: Vec<&str> = abandoned
        .path
        .iter()
        .filter(|p| p.kind == TimelineKind::Step)
        .map(|p| p.step_key.as_str())
        .collect();
    assert_eq!(steps, ["wait_for_purchase", "nudge", "end"]);
}

#[test]
fn a_purchase_at_the_deadline_is_in_time_and_until_stops_the_clock() {
    let j = abandoned_checkout();
    let at_deadline = Simulation {
        events: vec![
            track(
                "m1",
                "u1",
                "checkout_started",
                json!({"session_id": "s1"}),
                t0(),
            ),
            track(
                "m2",
                "u1",
                "purchase_completed",
                json!({"session_id": "s1"}),
                t0() + mins(60),
            ),
        ],
        ..Simulation::default()
    };
    let result = simulate(&j, &at_deadline);
    assert!(result.instances[0].sends.is_empty());
    assert_eq!(result.instances[0].final_state, InstanceState::Completed);

    let stopped = Simulation {
        events: vec![track(
            "m1",
            "u1",
            "checkout_started",
            json!({"session_id": "s1"}),
            t0(),
        )],
        until: Some(t0() + mins(59)),
        ..Simulation::default()
    };
    let result = simulate(&j, &stopped);
    let inst = &result.instances[0];
    assert_eq!(inst.final_state, InstanceState::Active);
    assert_eq!(inst.final_step, "wait_for_purchase");
    assert!(inst.sends.is_empty());
    assert_eq!(inst.instance.waiting_events(), ["purchase_completed"]);
}

#[test]
fn real_time_forwarding_sends_every_order_at_once() {
    let j = journey(
        "j-forward",
        json!({
            "name": "Forward orders",
            "entry": {"event": "order_completed", "filters": [{"property": "total", "any_of": [10, 20]}]},
            "entry_rule": {"rule": "reenter_every_time", "unique_identifier": "order_id"},
            "start_step": "forward",
            "steps": [
                {"key": "forward", "name": "Forward", "kind": {
                    "type": "send", "destination_id": "warehouse",
                    "action": {"method": "POST", "path": "/orders/{{properties.journey_context.order_completed.order_id}}"},
                    "event_name": "Order Forwarded", "next": null
                }}
            ]
        }),
    );
    let sim = Simulation {
        events: vec![
            track(
                "m1",
                "u1",
                "order_completed",
                json!({"order_id": "o1", "total": 10}),
                t0(),
            ),
            track(
                "m2",
                "u2",
                "order_completed",
                json!({"order_id": "o2", "total": 20.0}),
                t0() + mins(1),
            ),
            track(
                "m3",
                "u1",
                "order_completed",
                json!({"order_id": "o3", "total": "10"}),
                t0() + mins(2),
            ),
            track(
                "m4",
                "u1",
                "order_completed",
                json!({"total": 10}),
                t0() + mins(3),
            ),
        ],
        ..Simulation::default()
    };
    let result = simulate(&j, &sim);
    assert_eq!(result.instances.len(), 2);
    let reasons: Vec<(&str, SkipReason)> = result
        .skipped
        .iter()
        .map(|s| (s.message_id.as_str(), s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            ("m3", SkipReason::FiltersNotMatched),
            ("m4", SkipReason::MissingUniqueIdentifier)
        ]
    );
    let mut message_ids = Vec::new();
    for (inst, (order, at)) in result
        .instances
        .iter()
        .zip([("o1", t0()), ("o2", t0() + mins(1))])
    {
        assert_eq!(inst.final_state, InstanceState::Completed);
        assert_eq!(inst.sends.len(), 1);
        let send = &inst.sends[0];
        assert_eq!(send.at, at, "forwarded at once");
        assert_eq!(send.path, format!("/orders/{order}"));
        assert_eq!(send.payload["event"], "Order Forwarded");
        assert_eq!(
            send.payload["properties"]["journey_context"]["order_completed"]["order_id"],
            order
        );
        message_ids.push(send.message_id.clone());
    }
    assert_ne!(message_ids[0], message_ids[1]);
    // The same simulation again gives the same ids and payloads.
    assert_eq!(simulate(&j, &sim), result);
}

#[test]
fn follow_up_maps_the_content_title_into_the_payload() {
    let j = journey(
        "j-follow-up",
        json!({
            "name": "Content follow-up",
            "entry": {"event": "article_viewed", "audience_key": "subscribers"},
            "entry_rule": {"rule": "enter_once"},
            "start_step": "wait_a_day",
            "steps": [
                {"key": "wait_a_day", "name": "Wait a day", "kind": {
                    "type": "delay", "duration": {"secs": 86400, "nanos": 0}, "next": "follow_up"
                }},
                {"key": "follow_up", "name": "Follow-up mail", "kind": {
                    "type": "send", "destination_id": "mailer", "traits": ["first_name"],
                    "mapping": {
                        "to": {"@path": "$.userId"},
                        "subject": {"@template": "{{properties.first_name}}, more like {{properties.journey_context.article_viewed.title}}"},
                        "title": {"@path": "$.properties.journey_context.article_viewed.title"},
                        "idempotency": {"@path": "$.messageId"}
                    },
                    "next": null
                }}
            ],
            "exit_rules": [{"event": "unsubscribed"}]
        }),
    );
    let mut profiles = BTreeMap::new();
    profiles.insert(
        "u1".to_owned(),
        ProfileSnapshot {
            traits: json!({}),
            audiences: ["subscribers".to_owned()].into(),
        },
    );
    profiles.insert(
        "u3".to_owned(),
        ProfileSnapshot {
            traits: json!({"first_name": "Cleo"}),
            audiences: ["subscribers".to_owned()].into(),
        },
    );
    let mut identify = track("m0", "u1", "identify", json!({}), t0());
    identify.event.kind = journeys_core::model::EventType::Identify;
    identify.event.traits = json!({"first_name": "Ada"});
    let sim = Simulation {
        events: vec![
            identify,
            track(
                "m1",
                "u1",
                "article_viewed",
                json!({"title": "Rust in production"}),
                t0(),
            ),
            track(
                "m2",
                "u1",
                "article_viewed",
                json!({"title": "Second read"}),
                t0() + mins(1),
            ),
            track(
                "m3",
                "u2",
                "article_viewed",
                json!({"title": "Not a subscriber"}),
                t0(),
            ),
            track(
                "m4",
                "u3",
                "article_viewed",
                json!({"title": "Unsubscribes"}),
                t0(),
            ),
            track("m5", "u3", "unsubscribed", json!({}), t0() + mins(30)),
        ],
        profiles,
        ..Simulation::default()
    };
    let result = simulate(&j, &sim);
    let reasons: Vec<SkipReason> = result.skipped.iter().map(|s| s.reason).collect();
    // In time order: m3 (at t0) before m2 (one minute later).
    assert_eq!(
        reasons,
        [SkipReason::NotInAudience, SkipReason::AlreadyEntered]
    );

    let ada = &result.instances[0];
    assert_eq!(ada.final_state, InstanceState::Completed);
    assert_eq!(ada.sends.len(), 1);
    let send = &ada.sends[0];
    assert_eq!(send.at, t0() + TimeDelta::days(1));
    assert_eq!(
        send.payload,
        json!({
            "to": "u1",
            "subject": "Ada, more like Rust in production",
            "title": "Rust in production",
            "idempotency": send.message_id,
        })
    );

    let cleo = &result.instances[1];
    assert_eq!(cleo.final_state, InstanceState::Exited);
    assert!(cleo.sends.is_empty());
    assert_eq!(cleo.path.last().unwrap().kind, TimelineKind::Exited);
    assert_eq!(cleo.path.last().unwrap().at, t0() + mins(30));
}
