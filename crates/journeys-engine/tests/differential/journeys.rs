//! Random small journeys for the differential test: entries with filters and an audience,
//! enter-once or re-entry, delays, hold-untils with timeouts, data splits on traits and
//! audiences, random splits, sends and exit rules. Steps only point forward, so every
//! generated graph is acyclic.

use std::time::Duration;

use journeys_core::model::{
    Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, DelayStep, EntryRule,
    EntryTrigger, ExitRule, FilterMatch, HoldBranch, HoldUntilStep, JourneyDefinition,
    PropertyFilter, RandomBranch, RandomSplitStep, SendAction, SendSpec, SendStep, Step, StepKind,
};
use proptest::prelude::*;
use serde_json::json;

/// The active audience a boolean trait sets.
pub const AUDIENCE: &str = "vip";

#[derive(Clone, Debug)]
enum StepSpec {
    Delay {
        mins: u64,
    },
    Hold {
        mins: u64,
        filtered: bool,
        return_to_start: bool,
    },
    DataSplit {
        on_audience: bool,
    },
    Random {
        percent: u32,
        same_on_reentry: bool,
    },
    Send {
        with_trait: bool,
    },
    End,
}

#[derive(Clone, Debug)]
pub struct JourneySpec {
    reenter: bool,
    entry_filter: bool,
    entry_audience: bool,
    /// `(send before exit, match unique identifier)`.
    exit: Option<(bool, bool)>,
    steps: Vec<StepSpec>,
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    prop_oneof![
        2 => (1u64..=30).prop_map(|mins| StepSpec::Delay { mins }),
        3 => (5u64..=60, any::<bool>(), any::<bool>()).prop_map(|(mins, filtered, return_to_start)| {
            StepSpec::Hold {
                mins,
                filtered,
                return_to_start,
            }
        }),
        1 => any::<bool>().prop_map(|on_audience| StepSpec::DataSplit { on_audience }),
        1 => (1u32..=99, any::<bool>()).prop_map(|(percent, same_on_reentry)| StepSpec::Random {
            percent,
            same_on_reentry
        }),
        4 => any::<bool>().prop_map(|with_trait| StepSpec::Send { with_trait }),
        1 => Just(StepSpec::End),
    ]
}

pub fn journey_spec() -> impl Strategy<Value = JourneySpec> {
    (
        prop::bool::weighted(0.7),
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.15),
        prop::option::of((any::<bool>(), any::<bool>())),
        prop::collection::vec(step_spec(), 2..=6),
    )
        .prop_map(
            |(reenter, entry_filter, entry_audience, exit, steps)| JourneySpec {
                reenter,
                entry_filter,
                entry_audience,
                exit,
                steps,
            },
        )
}

fn key(i: usize) -> String {
    format!("s{i}")
}

/// The key of step `i` if the journey has it: steps only point forward, so the graph is
/// acyclic.
fn next(i: usize, len: usize) -> Option<String> {
    (i < len).then(|| key(i))
}

fn send_spec(destination: &str, with_trait: bool) -> SendSpec {
    SendSpec {
        destination_id: destination.into(),
        action: SendAction::default(),
        event_name: None,
        traits: if with_trait {
            vec!["plan".into()]
        } else {
            Vec::new()
        },
        mapping: None,
    }
}

/// A hold-until: `buy` (filtered on `amount` or not) continues at `bought`, `cancel` ends
/// or returns to the start, the timeout continues at `timeout`.
fn hold(
    mins: u64,
    filtered: bool,
    return_to_start: bool,
    timeout: Option<String>,
    bought: Option<String>,
) -> StepKind {
    let filters = if filtered {
        vec![PropertyFilter {
            property: "amount".into(),
            matcher: FilterMatch::Equals(json!(1)),
        }]
    } else {
        Vec::new()
    };
    StepKind::HoldUntil(HoldUntilStep {
        branches: vec![
            HoldBranch {
                name: "Bought".into(),
                event: "buy".into(),
                filters,
                next: bought,
                return_to_start: false,
            },
            HoldBranch {
                name: "Cancelled".into(),
                event: "cancel".into(),
                filters: Vec::new(),
                next: None,
                return_to_start,
            },
        ],
        max_duration: Duration::from_secs(mins * 60),
        timeout_next: timeout,
    })
}

fn step_kind(spec: &StepSpec, i: usize, len: usize) -> StepKind {
    let (one, two) = (next(i + 1, len), next(i + 2, len));
    match spec {
        StepSpec::Delay { mins } => StepKind::Delay(DelayStep {
            duration: Duration::from_secs(mins * 60),
            next: one,
        }),
        StepSpec::Hold {
            mins,
            filtered,
            return_to_start,
        } => hold(*mins, *filtered, *return_to_start, one, two),
        StepSpec::DataSplit { on_audience } => {
            let condition = if *on_audience {
                Condition {
                    subject: ConditionSubject::Audience(AUDIENCE.into()),
                    op: ConditionOp::InAudience,
                    value: None,
                }
            } else {
                Condition {
                    subject: ConditionSubject::Trait("plan".into()),
                    op: ConditionOp::Equals,
                    value: Some(json!("pro")),
                }
            };
            StepKind::DataSplit(DataSplitStep {
                branches: vec![DataSplitBranch {
                    name: "Pro".into(),
                    conditions: vec![condition],
                    next: one,
                }],
                else_next: two,
            })
        }
        StepSpec::Random {
            percent,
            same_on_reentry,
        } => StepKind::RandomSplit(RandomSplitStep {
            branches: vec![
                RandomBranch {
                    name: "A".into(),
                    percent: *percent,
                    next: one,
                },
                RandomBranch {
                    name: "B".into(),
                    percent: 100 - percent,
                    next: two,
                },
            ],
            same_branch_on_reentry: *same_on_reentry,
        }),
        StepSpec::Send { with_trait } => StepKind::Send(SendStep {
            spec: send_spec("dest_1", *with_trait),
            next: one,
        }),
        StepSpec::End => StepKind::End,
    }
}

pub fn definition(spec: &JourneySpec) -> JourneyDefinition {
    let len = spec.steps.len();
    let steps = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| Step {
            key: key(i),
            name: format!("Step {i}"),
            kind: step_kind(s, i, len),
        })
        .collect();
    JourneyDefinition {
        name: "Differential".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "start".into(),
            audience_key: spec.entry_audience.then(|| AUDIENCE.to_owned()),
            filters: if spec.entry_filter {
                vec![PropertyFilter {
                    property: "tier".into(),
                    matcher: FilterMatch::AnyOf(vec![json!("gold"), json!("silver")]),
                }]
            } else {
                Vec::new()
            },
        },
        entry_rule: if spec.reenter {
            EntryRule::ReenterEveryTime {
                unique_identifier: "sid".into(),
            }
        } else {
            EntryRule::EnterOnce
        },
        start_step: key(0),
        steps,
        exit_rules: spec
            .exit
            .map(|(send, match_unique)| ExitRule {
                event: "quit".into(),
                filters: Vec::new(),
                match_unique_identifier: match_unique,
                send: send.then(|| send_spec("dest_exit", true)),
            })
            .into_iter()
            .collect(),
    }
}
