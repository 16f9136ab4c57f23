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
    }
}

fn enter(journey: &Journey, e: &Event) -> Transition {
    let facts = EntryFacts {
        audiences: &NoAudiences,
        already_entered: false,
        active_unique_values: &[],
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
    for pass in 1..=MAX_HOLD_PASSES {
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
fn hold_timeout_without_next_completes() {
    let j = two_branch_hold(false);
    let entered = enter(&j, &event("checkout_started", json!({})));
    let t = fire(&j, &entered.instance, t0() + secs(600));
    assert_eq!(kinds(&t), ["timed_out", "completed", "completed"]);
    assert_eq!(t.instance.state, InstanceState::Completed);
}

fn data_split_journey() -> Journey {
    let cond = |subject, op, value: Option<Json>| Condition { subject, op, value };
    Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![
                st(
                    "split",
                    StepKind::DataSplit(DataSplitStep {
                        branches: vec![
                            DataSplitBranch {
                                name: "VIP".into(),
                                conditions: vec![cond(
                                    ConditionSubject::Audience("vip".into()),
                                    ConditionOp::InAudience,
                                    None,
                                )],
                                next: nx("vip_send"),
                            },
                            DataSplitBranch {
                                name: "Big cart".into(),
                                conditions: vec![
                                    cond(
                                        ConditionSubject::Context("checkout_started.total".into()),
                                        ConditionOp::Gte,
                                        Some(json!(100)),
                                    ),
                                    cond(
                                        ConditionSubject::Trait("plan".into()),
                                        ConditionOp::Exists,
                                        None,
                                    ),
                                ],
                                next: nx("big_send"),
                            },
                        ],
                        else_next: None,
                    }),
                ),
                send("vip_send", None),
                send("big_send", None),
            ],
        ),
    )
}

#[test]
fn data_split_first_match_wins_else_everyone_else() {
    let j = data_split_journey();
    let e = event("checkout_started", json!({"total": 150}));
    let inst = Instance::new(
        &j,
        "i1".into(),
        &e,
        Admission {
            profile_id: "u1".into(),
            unique_value: None,
        },
        t0(),
    );
    let traits = json!({"plan": "pro"});
    let vip = vec!["vip".to_owned()];
    let run = |audiences: &dyn AudienceMembership, traits: &Json, e: &Event| {
        step(
            &j,
            &inst,
            Input::Enter(e),
            &StepContext {
                traits,
                audiences,
                now: t0(),
            },
        )
    };
    assert_eq!(run(&vip, &traits, &e).instance.current_step, "vip_send");
    assert_eq!(
        run(&NoAudiences, &traits, &e).instance.current_step,
        "big_send"
    );
    let everyone_else = run(&NoAudiences, &json!({}), &e);
    assert_eq!(everyone_else.instance.current_step, "split");
    assert_eq!(everyone_else.instance.state, InstanceState::Completed);
    assert!(everyone_else.effects.iter().any(|e| matches!(
        e,
        Effect::Timeline(TimelineEntry { kind: TimelineKind::Branch, detail, .. })
            if detail["everyone_else"] == json!(true)
    )));
}

fn random_journey(same_branch_on_reentry: bool) -> Journey {
    Journey::new(
        meta(),
        definition(
            session_rule(),
            vec![],
            vec![
                st(
                    "ab",
                    StepKind::RandomSplit(RandomSplitStep {
                        branches: vec![
                            RandomBranch {
                                name: "A".into(),
                                percent: 30,
                                next: nx("a"),
                            },
                            RandomBranch {
                                name: "B".into(),
                                percent: 70,
                                next: nx("b"),
                            },
                        ],
                        same_branch_on_reentry,
                    }),
                ),
                st("a", StepKind::End),
                st("b", StepKind::End),
            ],
        ),
    )
}

#[test]
fn random_split_is_deterministic_and_weighted() {
    let j = random_journey(false);
    let mut a = 0;
    for n in 0..2000 {
        let e = with_id(
            event("checkout_started", json!({"session_id": n})),
            &format!("m{n}"),
        );
        let first = enter(&j, &e);
        assert_eq!(enter(&j, &e), first);
        if first.instance.current_step == "a" {
            a += 1;
        }
    }
    // 30 % of 2000 = 600; 5 standard deviations is about 100.
    assert!((500..700).contains(&a), "{a}");
}

#[test]
fn same_branch_on_reentry_draws_from_the_profile() {
    let j = random_journey(true);
    let branches: std::collections::HashSet<String> = (0..50)
        .map(|n| {
            let e = with_id(
                event("checkout_started", json!({"session_id": n})),
                &format!("m{n}"),
            );
            enter(&j, &e).instance.current_step
        })
        .collect();
    assert_eq!(branches.len(), 1);
}

fn exit_journey(send_before_exit: bool, match_unique: bool) -> Journey {
    let mut def = definition(
        session_rule(),
        vec![],
        vec![
            st(
                "wait",
                StepKind::Delay(DelayStep {
                    duration: Duration::from_secs(60),
                    next: nx("hold"),
                }),
            ),
            hold(
                "hold",
                vec![hold_branch("Bought", "purchase_completed", None)],
                600,
                None,
            ),
        ],
    );
    let mut exit_spec = spec("dest_exit");
    exit_spec.mapping =
        Some(json!({"reason": {"@path": "$.properties.journey_context.unsubscribed.why"}}));
    def.exit_rules = vec![ExitRule {
        event: "unsubscribed".into(),
        filters: vec![],
        match_unique_identifier: match_unique,
        send: send_before_exit.then_some(exit_spec),
    }];
    Journey::new(meta(), def)
}

#[test]
fn exit_rules_end_the_instance_from_a_delay_and_from_a_hold() {
    let j = exit_journey(false, false);
    let in_delay = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let in_hold = fire(&j, &in_delay, t0() + secs(60)).instance;
    assert_eq!(in_hold.current_step, "hold");
    let unsub = event("unsubscribed", json!({}));
    for inst in [&in_delay, &in_hold] {
        let rule = matching_exit_rule(&j, &unsub, inst).expect("matches");
        let t = step(
            &j,
            inst,
            Input::Exit {
                event: &unsub,
                rule,
            },
            &ctx(t0() + secs(90)),
        );
        assert_eq!(kinds(&t), ["cancel_timer", "exited", "exited"]);
        assert_eq!(t.instance.state, InstanceState::Exited);
        assert!(t.instance.waiting.is_none());
        assert!(t.instance.waiting_events().is_empty());
        assert!(matches!(
            &t.effects[2],
            Effect::Exited {
                reason: ExitReason::ExitRule { index: 0, .. }
            }
        ));
        // Nothing applies to an ended instance.
        assert_eq!(matching_exit_rule(&j, &unsub, &t.instance), None);
        let again = step(
            &j,
            &t.instance,
            Input::Exit {
                event: &unsub,
                rule,
            },
            &ctx(t0()),
        );
        assert!(again.is_noop());
    }
}

#[test]
fn exit_can_require_the_same_unique_value() {
    let j = exit_journey(false, true);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    assert_eq!(
        matching_exit_rule(
            &j,
            &event("unsubscribed", json!({"session_id": "s2"})),
            &inst
        ),
        None
    );
    assert_eq!(
        matching_exit_rule(&j, &event("unsubscribed", json!({})), &inst),
        None
    );
    assert_eq!(
        matching_exit_rule(
            &j,
            &event("unsubscribed", json!({"session_id": "s1"})),
            &inst
        ),
        Some(0)
    );
    // A caller passing a rule that does not match gets no transition.
    let wrong = event("unsubscribed", json!({"session_id": "s2"}));
    assert!(
        step(
            &j,
            &inst,
            Input::Exit {
                event: &wrong,
                rule: 0
            },
            &ctx(t0())
        )
        .is_noop()
    );
}

#[test]
fn send_before_exit_sees_the_exit_event_in_context() {
    let j = exit_journey(true, false);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let unsub = event("unsubscribed", json!({"why": "too many mails"}));
    let t = step(
        &j,
        &inst,
        Input::Exit {
            event: &unsub,
            rule: 0,
        },
        &ctx(t0()),
    );
    assert_eq!(
        kinds(&t),
        ["cancel_timer", "send", "send", "exited", "exited"]
    );
    let send = t.sends().next().unwrap();
    assert_eq!(send.step_key, "exit_rules[0]");
    assert_eq!(send.destination_id, "dest_exit");
    assert_eq!(send.payload, json!({"reason": "too many mails"}));
}

#[test]
fn terminate_ends_any_active_instance() {
    let j = exit_journey(false, false);
    let inst = enter(&j, &event("checkout_started", json!({"session_id": "s1"}))).instance;
    let t = step(
        &j,
        &inst,
        Input::Terminate(ExitReason::JourneyArchived),
        &ctx(t0()),
    );
    assert_eq!(t.instance.state, InstanceState::Exited);
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Exited {
            reason: ExitReason::JourneyArchived
        })
    ));
}

#[test]
fn a_payload_over_32_kb_fails_the_instance() {
    let j = Journey::new(
        meta(),
        definition(EntryRule::EnterOnce, vec![], vec![send("big", None)]),
    );
    let t = enter(
        &j,
        &event("checkout_started", json!({"blob": "x".repeat(33 * 1024)})),
    );
    assert_eq!(t.instance.state, InstanceState::Failed);
    assert!(t.sends().next().is_none());
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed {
            reason: FailReason::PayloadTooLarge { limit: 32768, .. }
        })
    ));
    let fits = enter(
        &j,
        &event("checkout_started", json!({"blob": "x".repeat(30 * 1024)})),
    );
    assert_eq!(fits.instance.state, InstanceState::Completed);
}

#[test]
fn a_mapping_replaces_the_body_and_fills_the_action_path() {
    let mut s = spec("dest_1");
    s.traits = vec!["email".into(), "missing".into()];
    s.action = SendAction {
        method: "PUT".into(),
        path: "/carts/{{cart}}".into(),
    };
    s.mapping = Some(json!({
        "cart": {"@path": "$.properties.journey_context.checkout_started.cart_id"},
        "email": {"@path": "$.properties.email"},
        "gone": {"@path": "$.properties.missing"},
    }));
    let j = Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![st(
                "s",
                StepKind::Send(SendStep {
                    spec: s,
                    next: None,
                }),
            )],
        ),
    );
    let t = enter(&j, &event("checkout_started", json!({"cart_id": "c/1 2"})));
    let send = t.sends().next().unwrap();
    assert_eq!(
        send.payload,
        json!({"cart": "c/1 2", "email": "a@example.com"})
    );
    assert_eq!(send.method, "PUT");
    assert_eq!(send.path, "/carts/c%2F1%202");
}

#[test]
fn broken_graphs_fail_instead_of_looping_or_sticking() {
    let looping = Journey::new(
        meta(),
        definition(
            EntryRule::EnterOnce,
            vec![],
            vec![send("a", nx("b")), send("b", nx("a"))],
        ),
    );
    let t = enter(&looping, &event("checkout_started", json!({})));
    assert_eq!(t.instance.state, InstanceState::Failed);
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed {
            reason: FailReason::TooManySteps { .. }
        })
    ));
    let dangling = Journey::new(
        meta(),
        definition(EntryRule::EnterOnce, vec![], vec![send("a", nx("nowhere"))]),
    );
    let t = enter(&dangling, &event("checkout_started", json!({})));
    assert!(matches!(
        t.effects.last(),
        Some(Effect::Failed { reason: FailReason::UnknownStep { step_key } }) if step_key == "nowhere"
    ));
}

#[test]
fn instances_round_trip_through_json() {
    let j = two_branch_hold(true);
    let inst = enter(&j, &event("checkout_started", json!({"a": 1}))).instance;
    let e = event("order_completed", json!({"total": 1}));
    let inst = step(&j, &inst, Input::Event(&e), &ctx(t0())).instance;
    let stored = serde_json::to_value(&inst).unwrap();
    assert_eq!(stored["state"], "ACTIVE");
    assert_eq!(stored["waiting"]["type"], "hold");
    assert_eq!(stored["waiting"]["timer"]["kind"], "hold_timeout");
    let back: Instance = serde_json::from_value(stored).unwrap();
    assert_eq!(back, inst);
}

#[test]
fn every_transition_is_stamped_with_now_and_its_cause() {
    let j = journey_with(session_rule(), vec![]);
    let entered = enter(&j, &event("checkout_started", json!({"session_id": "s1"})));
    let t = fire(&j, &entered.instance, t0() + secs(3600));
    assert_eq!(t.instance.updated_at, t0() + secs(3600));
    for effect in &t.effects {
        if let Effect::Timeline(entry) = effect {
            assert_eq!(entry.at, t0() + secs(3600));
            assert_eq!(entry.cause.label(), "timer");
        }
    }
    for effect in &entered.effects {
        if let Effect::Timeline(entry) = effect {
            assert_eq!(entry.cause.label(), "msg-checkout_started");
        }
    }
}

#[test]
fn instance_ids_are_deterministic_uuid_shaped() {
    let id = instance_id("j1", "m1");
    assert_eq!(id, instance_id("j1", "m1"));
    assert_ne!(id, instance_id("j2", "m1"));
    assert_ne!(id, instance_id("j1", "m2"));
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12]);
    assert!(
        id.chars()
            .all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
}
