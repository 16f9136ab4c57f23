//! Properties of the state machine over random journeys and random event/timer sequences:
//! determinism (also across a JSON round trip of the instance, as the store persists it), an
//! active instance always waits on exactly one live timer, exit rules end an instance from
//! any state, and randomized splits honour their percentages.

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

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use journeys_core::eval::NoAudiences;
use journeys_core::machine::{
    Admission, DEFAULT_MAX_RETURN_TO_START_PASSES, Effect, Input, Instance, InstanceState, Journey,
    StepContext, Timer, TimerKind, Transition, matching_exit_rule, random_branch, step,
};
use journeys_core::model::{
    Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, DelayStep, EntryRule,
    EntryTrigger, Event, EventType, ExitRule, FilterMatch, HoldBranch, HoldUntilStep,
    JourneyDefinition, JourneyMeta, PropertyFilter, RandomBranch, RandomSplitStep, SendAction,
    SendSpec, SendStep, Step, StepKind, Timestamp,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::json;

const EVENTS: [&str; 4] = ["a", "b", "c", "x"];

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap()
}

fn spec(dest: &str) -> SendSpec {
    SendSpec {
        destination_id: dest.into(),
        action: SendAction::default(),
        event_name: None,
        traits: vec!["t".into()],
        mapping: None,
    }
}

/// Builds step `i` of `n` from random bytes. Every `next` points to a later step or ends, so
/// the graph is acyclic like a validated one.
fn build_step(i: usize, n: usize, b: &[u8; 16]) -> Step {
    let next = |k: usize| -> Option<String> {
        let later = n - i - 1;
        // Ending early is rare (1 in 8) and half the edges go to the very next step, so that
        // paths are long and instances live long enough to be interesting.
        let target = if b[k].is_multiple_of(2) {
            0
        } else {
            usize::from(b[k] / 16) % later.max(1)
        };
        (later > 0 && b[k] % 8 != 1).then(|| format!("s{}", i + 1 + target))
    };
    // Waiting steps are weighted up so that random event sequences find instances waiting.
    let kind = match b[0] % 10 {
        0 | 1 => StepKind::Delay(DelayStep {
            duration: Duration::from_secs(60 * (1 + u64::from(b[1] % 10))),
            next: next(2),
        }),
        2..=4 => {
            let count = 1 + usize::from(b[1] % 3);
            let branches = (0..count)
                .map(|j| HoldBranch {
                    name: format!("branch {j}"),
                    event: EVENTS[usize::from(b[2 + j] % 3)].into(),
                    filters: if b[5 + j].is_multiple_of(2) {
                        vec![PropertyFilter {
                            property: "v".into(),
                            matcher: FilterMatch::Equals(json!((b[5 + j] / 2) % 3)),
                        }]
                    } else {
                        Vec::new()
                    },
                    next: next(11 + j),
                    return_to_start: b[8 + j].is_multiple_of(3),
                })
                .collect();
            StepKind::HoldUntil(HoldUntilStep {
                branches,
                max_duration: Duration::from_secs(60 * (1 + u64::from(b[14] % 10))),
                timeout_next: next(15),
            })
        }
        5 => {
            let count = 1 + usize::from(b[1] % 3);
            let ops = [
                ConditionOp::Equals,
                ConditionOp::Gt,
                ConditionOp::Exists,
                ConditionOp::NotEquals,
            ];
            let branches = (0..count)
                .map(|j| DataSplitBranch {
                    name: format!("branch {j}"),
                    conditions: vec![Condition {
                        subject: if b[2 + j].is_multiple_of(2) {
                            ConditionSubject::Context("start.v".into())
                        } else {
                            ConditionSubject::Trait("t".into())
                        },
                        op: ops[usize::from(b[5 + j] % 4)],
                        value: Some(json!(b[8 + j] % 3)),
                    }],
                    next: next(11 + j),
                })
                .collect();
            StepKind::DataSplit(DataSplitStep {
                branches,
                else_next: next(15),
            })
        }
        6 => {
            let count = 1 + usize::from(b[1] % 4);
            let weights: Vec<u32> = (0..count).map(|j| 1 + u32::from(b[2 + j] % 50)).collect();
            let total: u32 = weights.iter().sum();
            let mut percents: Vec<u32> = weights.iter().map(|w| w * 100 / total).collect();
            let assigned: u32 = percents.iter().sum();
            *percents.last_mut().unwrap() += 100 - assigned;
            StepKind::RandomSplit(RandomSplitStep {
                branches: percents
                    .into_iter()
                    .enumerate()
                    .map(|(j, percent)| RandomBranch {
                        name: format!("branch {j}"),
                        percent,
                        next: next(7 + j),
                    })
                    .collect(),
                same_branch_on_reentry: b[12].is_multiple_of(2),
            })
        }
        7 | 8 => StepKind::Send(SendStep {
            spec: spec("dest"),
            next: next(2),
        }),
        _ if i + 1 == n => StepKind::End,
        _ => StepKind::Delay(DelayStep {
            duration: Duration::from_secs(90),
            next: next(2),
        }),
    };
    Step {
        key: format!("s{i}"),
        name: format!("Step {i}"),
        kind,
    }
}

#[derive(Clone, Debug)]
struct Case {
    definition: JourneyDefinition,
    /// Each op: 0–3 an event (`EVENTS[op]`) with `v = arg % 3` and a unique value chosen by
    /// `arg`; 4 the waiting timer fires; 5 a stale timer fires.
    ops: Vec<(u8, u8)>,
}

fn journey_strategy() -> impl Strategy<Value = JourneyDefinition> {
    (
        prop::collection::vec(any::<[u8; 16]>(), 2..10),
        any::<bool>(),
        prop::collection::vec((0u8..2, any::<bool>(), any::<bool>()), 0..3),
    )
        .prop_map(|(seeds, reenter, exits)| {
            let n = seeds.len();
            let steps: Vec<Step> = seeds
                .iter()
                .enumerate()
                .map(|(i, b)| build_step(i, n, b))
                .collect();
            JourneyDefinition {
                name: "Random journey".into(),
                description: String::new(),
                entry: EntryTrigger {
                    event: "start".into(),
                    audience_key: None,
                    filters: Vec::new(),
                },
                entry_rule: if reenter {
                    EntryRule::ReenterEveryTime {
                        unique_identifier: "sid".into(),
                    }
                } else {
                    EntryRule::EnterOnce
                },
                start_step: "s0".into(),
                steps,
                exit_rules: exits
                    .into_iter()
                    .map(|(event, match_unique, send)| ExitRule {
                        event: ["x", "a"][usize::from(event)].into(),
                        filters: Vec::new(),
                        match_unique_identifier: match_unique,
                        send: send.then(|| spec("exit_dest")),
                    })
                    .collect(),
            }
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        journey_strategy(),
        prop::collection::vec((0u8..6, any::<u8>()), 0..24),
    )
        .prop_map(|(definition, ops)| Case { definition, ops })
}

fn journey(definition: JourneyDefinition) -> Journey {
    Journey::new(
        JourneyMeta {
            id: "j-prop".into(),
            version: 1,
            name: definition.name.clone(),
        },
        definition,
    )
}

fn event(message_id: String, name: &str, v: u8, sid: &str, at: Timestamp) -> Event {
    Event {
        kind: EventType::Track,
        message_id,
        user_id: Some("u1".into()),
        anonymous_id: None,
        event: name.into(),
        properties: json!({"v": v % 3, "sid": sid}),
        traits: json!({}),
        context: json!({}),
        timestamp: at,
        source_id: None,
    }
}

/// Live timers as the runtime would keep them from the effects.
fn apply_timers(live: &mut HashSet<String>, input_timer: Option<&str>, t: &Transition) {
    if let (false, Some(fired)) = (t.is_noop(), input_timer) {
        live.remove(fired);
    }
    for effect in &t.effects {
        match effect {
            Effect::SetTimer(timer) => {
                assert!(
                    live.insert(timer.id.clone()),
                    "timer set twice: {}",
                    timer.id
                );
            }
            Effect::CancelTimer { id } => {
                assert!(live.remove(id), "cancelled a timer that is not live: {id}");
            }
            _ => {}
        }
    }
}

fn check_invariants(before: &Instance, t: &Transition, live: &HashSet<String>) {
    let inst = &t.instance;
    if t.is_noop() {
        assert_eq!(inst, before, "a no-op changed the instance");
    }
    if inst.state == InstanceState::Active {
        let timer = inst
            .waiting_timer()
            .expect("an active instance waits on a timer");
        assert_eq!(live.len(), 1, "live timers: {live:?}");
        assert!(live.contains(&timer.id));
    } else {
        assert!(inst.waiting.is_none());
        assert!(inst.waiting_events().is_empty());
        assert!(live.is_empty(), "a finished instance left timers: {live:?}");
        assert!(inst.ended_at.is_some());
    }
}

/// Runs a case like the runtime would (exit rules, then hold-until), checking the invariants
/// after every transition. With `round_trip`, the instance goes through JSON between steps.
fn drive(case: &Case, round_trip: bool) -> Vec<Transition> {
    let j = journey(case.definition.clone());
    let traits = json!({"t": 1});
    let mut now = t0();
    let entry = event("m-entry".into(), "start", 1, "s1", now);
    let admission = Admission {
        profile_id: "u1".into(),
        unique_value: j.definition().unique_identifier().map(|_| "s1".to_owned()),
    };
    let mut inst = Instance::new(&j, "i-1".into(), &entry, admission, now);
    let mut live = HashSet::new();
    let mut out = Vec::new();
    let ctx = |now| StepContext {
        traits: &traits,
        audiences: &NoAudiences,
        now,
        max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES,
    };
    let t = step(&j, &inst, Input::Enter(&entry), &ctx(now));
    apply_timers(&mut live, None, &t);
    check_invariants(&inst, &t, &live);
    inst = t.instance.clone();
    out.push(t);
    for (n, &(op, arg)) in case.ops.iter().enumerate() {
        if round_trip {
            inst = serde_json::from_value(serde_json::to_value(&inst).unwrap()).unwrap();
        }
        now += TimeDelta::seconds(30);
        let (t, fired) = match op {
            0..=3 => {
                let sid = if arg % 4 == 0 { "s2" } else { "s1" };
                let e = event(format!("m{n}"), EVENTS[usize::from(op)], arg, sid, now);
                match matching_exit_rule(&j, &e, &inst) {
                    Some(rule) => (
                        step(&j, &inst, Input::Exit { event: &e, rule }, &ctx(now)),
                        None,
                    ),
                    None => (step(&j, &inst, Input::Event(&e), &ctx(now)), None),
                }
            }
            4 => match inst.waiting_timer().cloned() {
                Some(timer) => {
                    now = now.max(timer.due_at);
                    let t = step(&j, &inst, Input::TimerFired(&timer), &ctx(now));
                    (t, Some(timer.id))
                }
                None => continue,
            },
            _ => {
                let stale = Timer {
                    id: format!("i-1:stale:{arg}"),
                    due_at: now,
                    kind: TimerKind::Delay,
                    step_key: inst.current_step.clone(),
                };
                let t = step(&j, &inst, Input::TimerFired(&stale), &ctx(now));
                assert!(t.is_noop(), "a stale timer had effects");
                (t, None)
            }
        };
        apply_timers(&mut live, fired.as_deref(), &t);
        check_invariants(&inst, &t, &live);
        inst = t.instance.clone();
        out.push(t);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn same_inputs_give_the_same_transitions(case in case_strategy()) {
        let first = drive(&case, false);
        prop_assert_eq!(&first, &drive(&case, false));
        // The store persists instances as JSON; stepping the stored form changes nothing.
        prop_assert_eq!(&first, &drive(&case, true));
    }

    #[test]
    fn an_exit_rule_ends_the_instance_from_any_state(
        mut case in case_strategy(),
        with_send in any::<bool>(),
    ) {
        case.definition.exit_rules.insert(0, ExitRule {
            event: "quit".into(),
            filters: Vec::new(),
            match_unique_identifier: true,
            send: with_send.then(|| spec("exit_dest")),
        });
        let j = journey(case.definition.clone());
        // Exit from every state the instance passes through, not just the last one.
        for transition in drive(&case, false) {
            let inst = &transition.instance;
            let now = inst.updated_at + TimeDelta::seconds(1);
            let quit = event("m-quit".into(), "quit", 0, "s1", now);
            let ctx = StepContext { traits: &json!({}), audiences: &NoAudiences, now, max_return_to_start_passes: DEFAULT_MAX_RETURN_TO_START_PASSES };
            let rule = matching_exit_rule(&j, &quit, inst);
            if inst.state != InstanceState::Active {
                prop_assert_eq!(rule, None);
                continue;
            }
            prop_assert_eq!(rule, Some(0));
            let t = step(&j, inst, Input::Exit { event: &quit, rule: 0 }, &ctx);
            prop_assert_eq!(t.instance.state, InstanceState::Exited);
            prop_assert!(t.instance.waiting.is_none());
            prop_assert_eq!(t.sends().count(), usize::from(with_send));
            let cancelled: Vec<&str> = t.effects.iter().filter_map(|e| match e {
                Effect::CancelTimer { id } => Some(id.as_str()),
                _ => None,
            }).collect();
            prop_assert_eq!(cancelled, vec![inst.waiting_timer().unwrap().id.as_str()]);
            if with_send {
                let send = t.sends().next().unwrap();
                prop_assert!(send.payload["properties"]["journey_context"].get("quit").is_some());
            }
            // Another value of the unique identifier leaves a re-entry instance alone.
            if j.definition().unique_identifier().is_some() {
                let other = event("m-quit-2".into(), "quit", 0, "s2", now);
                prop_assert_eq!(matching_exit_rule(&j, &other, inst), None);
            }
        }
    }
}

fn percents_strategy() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(1u32..100, 2..=5).prop_map(|weights| {
        let total: u32 = weights.iter().sum();
        let mut percents: Vec<u32> = weights.iter().map(|w| w * 100 / total).collect();
        let assigned: u32 = percents.iter().sum();
        *percents.last_mut().unwrap() += 100 - assigned;
        percents
    })
}

proptest! {
    // A fixed seed: the shares are a statistical property (2 points is about 4 standard
    // deviations at 10,000 draws), so the cases must not change from run to run.
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: RngSeed::Fixed(0x6a6f_7572_6e65_7973),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_split_shares_stay_within_two_points(
        percents in percents_strategy(),
        journey_id in "[a-z0-9-]{1,36}",
        same_branch_on_reentry in any::<bool>(),
    ) {
        let split = RandomSplitStep {
            branches: percents
                .iter()
                .enumerate()
                .map(|(i, &percent)| RandomBranch { name: format!("b{i}"), percent, next: None })
                .collect(),
            same_branch_on_reentry,
        };
        let def = JourneyDefinition {
            name: "Split".into(),
            description: String::new(),
            entry: EntryTrigger { event: "start".into(), audience_key: None, filters: Vec::new() },
            entry_rule: EntryRule::EnterOnce,
            start_step: "ab".into(),
            steps: vec![Step { key: "ab".into(), name: "AB".into(), kind: StepKind::RandomSplit(split.clone()) }],
            exit_rules: Vec::new(),
        };
        let j = Journey::new(JourneyMeta { id: journey_id, version: 1, name: "Split".into() }, def);
        let entry = event("m".into(), "start", 0, "s", t0());
        let mut counts = vec![0u32; percents.len()];
        const DRAWS: u32 = 10_000;
        for n in 0..DRAWS {
            // Vary the subject the split draws from: the instance, or the profile.
            let admission = Admission { profile_id: format!("user-{n}"), unique_value: None };
            let inst = Instance::new(&j, format!("instance-{n}"), &entry, admission, t0());
            let branch = random_branch(j.id(), &inst, "ab", &split).unwrap();
            counts[branch] += 1;
        }
        for (i, &percent) in percents.iter().enumerate() {
            let share = f64::from(counts[i]) * 100.0 / f64::from(DRAWS);
            prop_assert!(
                (share - f64::from(percent)).abs() <= 2.0,
                "branch {} expected {}% got {:.2}%", i, percent, share
            );
        }
    }
}
