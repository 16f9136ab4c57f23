//! Unit tests of the state machine, one rule at a time, plus small builders shared with the
//! entry tests.

use std::time::Duration;

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::eval::NoAudiences;
use crate::model::{
    Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, DelayStep, EntryRule,
    EntryTrigger, EventType, ExitRule, FilterMatch, HoldBranch, HoldUntilStep, PropertyFilter,
    RandomBranch, RandomSplitStep, SendAction, SendStep,
};

pub(crate) fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
}

pub(crate) fn event(name: &str, properties: Json) -> Event {
    Event {
        kind: EventType::Track,
        message_id: format!("msg-{name}"),
        user_id: Some("u1".into()),
        anonymous_id: None,
        event: name.into(),
        properties,
        traits: json!({}),
        context: json!({}),
        timestamp: t0(),
        source_id: None,
    }
}

fn with_id(mut e: Event, id: &str) -> Event {
    e.message_id = id.into();
    e
}

fn st(key: &str, kind: StepKind) -> Step {
    Step {
        key: key.into(),
        name: format!("Step {key}"),
        kind,
    }
}

fn nx(key: &str) -> Option<String> {
    Some(key.into())
}

fn spec(dest: &str) -> SendSpec {
    SendSpec {
        destination_id: dest.into(),
        action: SendAction::default(),
        event_name: None,
        traits: Vec::new(),
        mapping: None,
    }
}

fn send(key: &str, next: Option<String>) -> Step {
    st(
        key,
        StepKind::Send(SendStep {
            spec: spec("dest_1"),
            next,
        }),
    )
}

fn hold_branch(name: &str, event: &str, next: Option<String>) -> HoldBranch {
    HoldBranch {
        name: name.into(),
        event: event.into(),
        filters: Vec::new(),
        next,
        return_to_start: false,
    }
}

fn hold(key: &str, branches: Vec<HoldBranch>, secs: u64, timeout: Option<String>) -> Step {
    st(
        key,
        StepKind::HoldUntil(HoldUntilStep {
            branches,
            max_duration: Duration::from_secs(secs),
            timeout_next: timeout,
        }),
    )
}

fn definition(
    rule: EntryRule,
    filters: Vec<PropertyFilter>,
    steps: Vec<Step>,
) -> JourneyDefinition {
    JourneyDefinition {
        name: "Abandoned checkout".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "checkout_started".into(),
            audience_key: None,
            filters,
        },
        entry_rule: rule,
        start_step: steps[0].key.clone(),
        steps,
        exit_rules: Vec::new(),
    }
}

fn meta() -> JourneyMeta {
    JourneyMeta {
        id: "j1".into(),
        version: 3,
        name: "Abandoned checkout".into(),
    }
}

fn session_rule() -> EntryRule {
    EntryRule::ReenterEveryTime {
        unique_identifier: "session_id".into(),
    }
}

/// Abandoned checkout: hold until `purchase_completed` (1 h), timeout → `nudge` send → end.
pub(crate) fn journey_with(rule: EntryRule, filters: Vec<PropertyFilter>) -> Journey {
    Journey::new(
        meta(),
        definition(
            rule,
            filters,
            vec![
                hold(
                    "wait_purchase",
                    vec![hold_branch("Bought", "purchase_completed", None)],
                    3600,
                    nx("nudge"),
                ),
                send("nudge", nx("done")),
                st("done", StepKind::End),
            ],
        ),
    )
}

fn ctx(now: Timestamp) -> StepContext<'static> {
    static TRAITS: std::sync::OnceLock<Json> = std::sync::OnceLock::new();
    StepContext {
        traits: TRAITS.get_or_init(|| json!({"email": "a@example.com", "plan": "pro"})),
        audiences: &NoAudiences,
        now,
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
    }
}

fn enter(journey: &Journey, e: &Event) -> Transition {
    let facts = EntryFacts {
        audiences: &NoAudiences,
        already_entered: false,
        active_unique_values: &[],
        max_unique_value_chars: DEFAULT_MAX_UNIQUE_VALUE_CHARS,
    };
    let admission = decide_entry(journey, e, &facts).expect("admitted");
    let inst = Instance::new(
        journey,
        instance_id(journey.id(), &e.message_id),
        e,
        admission,
        t0(),
    );
    step(journey, &inst, Input::Enter(e), &ctx(t0()))
}

fn kinds(t: &Transition) -> Vec<&'static str> {
    t.effects
        .iter()
        .map(|e| match e {
            Effect::SetTimer(_) => "set_timer",
            Effect::CancelTimer { .. } => "cancel_timer",
            Effect::Send(_) => "send",
            Effect::Completed => "completed",
            Effect::Exited { .. } => "exited",
            Effect::Failed { .. } => "failed",
            Effect::Timeline(entry) => entry.kind.as_str(),
        })
        .collect()
}

fn fire(journey: &Journey, inst: &Instance, at: Timestamp) -> Transition {
    let timer = inst.waiting_timer().expect("waits on a timer").clone();
    step(journey, inst, Input::TimerFired(&timer), &ctx(at))
}

fn secs(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::seconds(n)
}

#[test]
fn entering_waits_in_the_hold_with_one_timer() {
    let j = journey_with(session_rule(), vec![]);
    let t = enter(
        &j,
        &event("checkout_started", json!({"session_id": "s1", "total": 5})),
    );
    assert_eq!(kinds(&t), ["entered", "step", "set_timer"]);
    let inst = &t.instance;
    assert_eq!(inst.state, InstanceState::Active);
    assert_eq!(inst.current_step, "wait_purchase");
    assert_eq!(inst.unique_value.as_deref(), Some("s1"));
    assert_eq!(inst.waiting_events(), ["purchase_completed"]);
    let timer = inst.waiting_timer().unwrap();
    assert_eq!(timer.due_at, t0() + secs(3600));
    assert_eq!(timer.kind, TimerKind::HoldTimeout);
    assert_eq!(
        inst.context["checkout_started"],
        json!({"session_id": "s1", "total": 5})
    );
    assert!(matches!(&t.effects[2], Effect::SetTimer(set) if set == timer));
}

#[test]
fn a_matching_hold_event_takes_its_branch_and_cancels_the_timer() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(&j, &event("checkout_started", json!({"session_id": "s1"})));
    let timer_id = entered.instance.waiting_timer().unwrap().id.clone();
    let bought = event(
        "purchase_completed",
        json!({"session_id": "s1", "order": 9}),
    );
    let t = step(
        &j,
        &entered.instance,
        Input::Event(&bought),
        &ctx(t0() + secs(60)),
    );
    assert_eq!(
        kinds(&t),
        ["branch", "cancel_timer", "completed", "completed"]
    );
    assert!(matches!(&t.effects[1], Effect::CancelTimer { id } if *id == timer_id));
    assert_eq!(t.instance.state, InstanceState::Completed);
    assert_eq!(t.instance.ended_at, Some(t0() + secs(60)));
    assert_eq!(
        t.instance.context["purchase_completed"],
        json!({"session_id": "s1", "order": 9})
    );
    assert!(t.sends().next().is_none());
    // The old timer, should it still fire, changes nothing.
    let late = step(
        &j,
        &t.instance,
        Input::TimerFired(entered.instance.waiting_timer().unwrap()),
        &ctx(t0() + secs(3600)),
    );
    assert!(late.is_noop());
    assert_eq!(late.instance, t.instance);
}

#[test]
fn under_reentry_a_hold_event_needs_the_same_unique_value() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(&j, &event("checkout_started", json!({"session_id": "s1"})));
    for props in [
        json!({"session_id": "s2"}),
        json!({}),
        json!({"session_id": null}),
    ] {
        let other = event("purchase_completed", props);
        let t = step(&j, &entered.instance, Input::Event(&other), &ctx(t0()));
        assert!(t.is_noop());
    }
    // Canonical strings: 1 and 1.0 are the same value.
    let numeric = enter(&j, &event("checkout_started", json!({"session_id": 1})));
    let t = step(
        &j,
        &numeric.instance,
        Input::Event(&event("purchase_completed", json!({"session_id": 1.0}))),
        &ctx(t0()),
    );
    assert_eq!(t.instance.state, InstanceState::Completed);
}

#[test]
fn the_timeout_branch_sends_the_nudge_with_the_entry_event_in_context() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(
        &j,
        &event(
            "checkout_started",
            json!({"session_id": "s1", "cart": ["a"]}),
        ),
    );
    let t = fire(&j, &entered.instance, t0() + secs(3600));
    assert_eq!(
        kinds(&t),
        [
            "timed_out",
            "step",
            "send",
            "send",
            "step",
            "completed",
            "completed"
        ]
    );
    let sends: Vec<_> = t.sends().collect();
    assert_eq!(sends.len(), 1);
    let send = sends[0];
    assert_eq!(send.destination_id, "dest_1");
    assert_eq!(send.step_key, "nudge");
    assert_eq!(send.method, "POST");
    let p = &send.payload;
    assert_eq!(p["type"], "track");
    assert_eq!(p["event"], "Step nudge");
    assert_eq!(p["userId"], "u1");
    assert_eq!(p["messageId"], json!(send.message_id));
    assert_eq!(p["timestamp"], "2025-03-01T13:00:00.000Z");
    assert_eq!(
        p["properties"]["journey_context"]["checkout_started"],
        json!({"session_id": "s1", "cart": ["a"]})
    );
    assert_eq!(p["properties"]["journey_metadata"]["journey_id"], "j1");
    assert_eq!(p["properties"]["journey_metadata"]["journey_version"], 3);
    assert_eq!(
        p["properties"]["journey_metadata"]["instance_id"],
        json!(t.instance.id)
    );
    assert_eq!(p["context"]["journeys"]["step_key"], json!(send.send_key));
    assert!(send.send_key.starts_with("abandoned_checkout__nudge__"));
    // Deterministic: the same transition again gives the same message id.
    assert_eq!(fire(&j, &entered.instance, t0() + secs(3600)), t);
}

#[test]
fn a_stale_or_unknown_timer_is_ignored() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(&j, &event("checkout_started", json!({"session_id": "s1"})));
    let mut stale = entered.instance.waiting_timer().unwrap().clone();
    stale.id.push_str("-old");
    let t = step(
        &j,
        &entered.instance,
        Input::TimerFired(&stale),
        &ctx(t0() + secs(7200)),
    );
    assert!(t.is_noop());
    assert_eq!(t.instance, entered.instance);
}

#[test]
fn enter_applies_only_to_a_fresh_instance() {
    let j = journey_with(session_rule(), vec![]);
    let e = event("checkout_started", json!({"session_id": "s1"}));
    let entered = enter(&j, &e);
    assert!(step(&j, &entered.instance, Input::Enter(&e), &ctx(t0())).is_noop());
}

#[test]
fn delay_waits_then_continues() {
    let j = Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![
                st(
                    "wait_a_day",
                    StepKind::Delay(DelayStep {
                        duration: Duration::from_secs(86_400),
                        next: nx("follow_up"),
                    }),
                ),
                send("follow_up", None),
            ],
        ),
    );
    let entered = enter(&j, &event("checkout_started", json!({})));
    let timer = entered.instance.waiting_timer().unwrap();
    assert_eq!(timer.kind, TimerKind::Delay);
    assert_eq!(timer.due_at, t0() + secs(86_400));
    assert!(entered.instance.waiting_events().is_empty());
    // Events do not move a delay.
    let other = event("purchase_completed", json!({}));
    assert!(step(&j, &entered.instance, Input::Event(&other), &ctx(t0())).is_noop());
    let t = fire(&j, &entered.instance, t0() + secs(86_400));
    assert_eq!(
        kinds(&t),
        ["step", "send", "send", "completed", "completed"]
    );
    assert_eq!(t.instance.current_step, "follow_up");
}

fn two_branch_hold(return_to_start: bool) -> Journey {
    let mut small = hold_branch("Small", "order_completed", nx("small_send"));
    small.filters = vec![PropertyFilter {
        property: "total".into(),
        matcher: FilterMatch::AnyOf(vec![json!(1), json!(2)]),
    }];
    small.return_to_start = return_to_start;
    let mut big = hold_branch("Big", "order_completed", nx("big_send"));
    big.filters = vec![PropertyFilter {
        property: "total".into(),
        matcher: FilterMatch::Equals(json!(100)),
    }];
    Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![
                hold(
                    "wait",
                    vec![small, big, hold_branch("Left", "left", None)],
                    600,
                    None,
                ),
                send("small_send", None),
                send("big_send", None),
            ],
        ),
    )
}

#[test]
fn branches_sharing_an_event_use_aliased_context_keys() {
    let j = two_branch_hold(false);
    let entered = enter(&j, &event("checkout_started", json!({})));
    assert_eq!(
        entered.instance.waiting_events(),
        ["order_completed", "left"]
    );
    let miss = event("order_completed", json!({"total": 50}));
    assert!(step(&j, &entered.instance, Input::Event(&miss), &ctx(t0())).is_noop());
    let big = event("order_completed", json!({"total": 100.0}));
    let t = step(&j, &entered.instance, Input::Event(&big), &ctx(t0()));
    assert_eq!(t.instance.current_step, "big_send");
    assert_eq!(
        t.instance.context["order_completed - Big"],
        json!({"total": 100.0})
    );
    assert!(!t.instance.context.contains_key("order_completed"));
    let left = step(
        &j,
        &entered.instance,
        Input::Event(&event("left", json!({"why": 1}))),
        &ctx(t0()),
    );
    assert_eq!(left.instance.context["left"], json!({"why": 1}));
    assert_eq!(left.instance.state, InstanceState::Completed);
}

#[test]
fn return_to_start_restarts_the_hold_then_continues_after_100_passes() {
    let j = two_branch_hold(true);
    let mut inst = enter(&j, &event("checkout_started", json!({}))).instance;
    let first_timer = inst.waiting_timer().unwrap().clone();
    let mut now = t0();
    for pass in 1..=DEFAULT_MAX_RETURN_TO_START_PASSES {
        now += secs(10);
        let e = with_id(
            event("order_completed", json!({"total": pass % 2 + 1})),
            &format!("m{pass}"),
        );
        let t = step(&j, &inst, Input::Event(&e), &ctx(now));
        assert_eq!(
            kinds(&t),
            ["branch", "cancel_timer", "returned_to_start", "set_timer"],
            "pass {pass}"
        );
        inst = t.instance;
        assert_eq!(inst.passes["wait"], pass);
        assert_eq!(inst.current_step, "wait");
        // The newest event replaces the older one under the same key.
        assert_eq!(
            inst.context["order_completed - Small"],
            json!({"total": pass % 2 + 1})
        );
        assert_eq!(inst.waiting_timer().unwrap().due_at, now + secs(600));
    }
    // The first pass's timer is stale now.
    assert!(step(&j, &inst, Input::TimerFired(&first_timer), &ctx(now)).is_noop());
    let e = event("order_completed", json!({"total": 1}));
    let t = step(&j, &inst, Input::Event(&e), &ctx(now));
    assert_eq!(t.instance.current_step, "small_send");
    assert_eq!(t.instance.state, InstanceState::Completed);
    assert_eq!(t.sends().count(), 1);
}

#[test]
fn return_to_start_continues_after_the_configured_passes() {
    let j = two_branch_hold(true);
    let mut inst = enter(&j, &event("checkout_started", json!({}))).instance;
    let two = StepContext {
        max_return_to_start_passes: 2,
        ..ctx(t0())
    };
    for pass in 1..=2 {
        let e = with_id(
            event("order_completed", json!({"total": 1})),
            &format!("m{pass}"),
        );
        let t = step(&j, &inst, Input::Event(&e), &two);
        assert_eq!(t.instance.current_step, "wait", "pass {pass}");
        inst = t.instance;
    }
    let e = with_id(event("order_completed", json!({"total": 1})), "m3");
    let t = step(&j, &inst, Input::Event(&e), &two);
    assert_eq!(t.instance.current_step, "small_send");
    assert_eq!(t.instance.state, InstanceState::Completed);
    // Under the default (100) the same third match would have returned to the start.
    assert_eq!(
        step(&j, &inst, Input::Event(&e), &ctx(t0()))
            .instance
            .current_step,
        "wait"
    );
}

#[test]
fn hold_timeout_without_next_completes() {
    let j = two_branch_hold(false);
    let entered = enter(&j, &event("checkout_started", json!({})));
    let t = fire(&j, &entered.instance, t0() + secs(600));
    assert_eq!(kinds(&t), ["timed_out", "completed", "completed"]);
    assert_eq!(t.instance.state, InstanceState::Completed);
}

mod splits_and_exits;
