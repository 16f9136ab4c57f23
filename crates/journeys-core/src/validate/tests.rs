//! Validation tests: every rule, with the path and message of each problem.

use std::collections::BTreeSet;

use serde_json::json;

use super::testkit::{
    WithFilters, any_of, branch, delay, eq, hold, journey, paths, problems, send, send_spec,
};
use super::*;
use crate::model::{
    Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, EntryTrigger,
    RandomBranch, RandomSplitStep, SendSpec, Step, StepKind,
};

#[test]
fn an_oversized_draft_reports_the_step_limit_without_walking_its_graph() {
    // 4,000 steps, each leading back to the first: walked, this reported 4,000 cycles of
    // up to 4,000 keys each (a 110 MB answer).
    let steps = (0..4000)
        .map(|i| send(&format!("s{i}"), Some("s0")))
        .collect();
    let found = problems(&journey(steps));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].path, "steps");
    assert_eq!(found[0].message, "4000 steps, at most 50 allowed");
}

#[test]
fn problems_are_capped_and_the_rest_counted() {
    // Three problems a step: key format, duplicate key (after the first), missing name.
    let steps = (0..50)
        .map(|_| {
            let mut step = send("Bad-Key", None);
            step.name = String::new();
            step
        })
        .collect();
    let found = problems(&journey(steps));
    assert_eq!(found.len(), MAX_PROBLEMS + 1);
    let last = found.last().map(|p| p.message.as_str()).unwrap_or_default();
    assert!(last.ends_with("more problems not listed; fix the ones above and validate again"));
    let total: usize = found.iter().map(|p| p.path.len() + p.message.len()).sum();
    assert!(total < 64 * 1024, "{total} bytes of problems");
}

#[test]
fn a_long_quoted_value_is_cut_in_the_message() {
    let def = journey(vec![send(&"K".repeat(100_000), None)]);
    let found = problems(&def);
    assert!(
        found
            .iter()
            .all(|p| p.message.chars().count() <= MAX_PROBLEM_MESSAGE_CHARS + 1)
    );
    assert!(found[0].message.ends_with('…'));
}

#[test]
fn a_minimal_journey_is_valid() {
    let def = journey(vec![send("notify", None)]);
    assert_eq!(problems(&def), Vec::<Problem>::new());
}

#[test]
fn name_is_required_and_limited_in_characters_not_bytes() {
    let mut def = journey(vec![send("notify", None)]);
    def.name = "  ".into();
    assert_eq!(paths(&def), ["name"]);
    assert_eq!(problems(&def)[0].message, "name is required");

    // 73 two-byte characters are fine; 74 are not.
    def.name = "é".repeat(73);
    assert!(problems(&def).is_empty());
    def.name = "é".repeat(74);
    assert_eq!(
        problems(&def)[0],
        Problem::new("name", "name is 74 characters long, at most 73 allowed")
    );
}

#[test]
fn description_is_limited_to_1000_characters() {
    let mut def = journey(vec![send("notify", None)]);
    def.description = "x".repeat(1000);
    assert!(problems(&def).is_empty());
    def.description.push('x');
    assert_eq!(paths(&def), ["description"]);
}

#[test]
fn entry_event_is_required_and_audience_key_not_blank() {
    let mut def = journey(vec![send("notify", None)]);
    def.entry = EntryTrigger {
        event: String::new(),
        audience_key: Some(String::new()),
        filters: vec![eq("plan", json!("pro"))],
    };
    assert_eq!(paths(&def), ["entry.event", "entry.audience_key"]);
    assert_eq!(problems(&def)[0].message, "entry event is required");
}

#[test]
fn entry_filters_need_valid_paths_and_non_empty_lists() {
    let mut def = journey(vec![send("notify", None)]);
    def.entry.filters = vec![
        eq("cart.total", json!(10)),
        eq("cart..total", json!(10)),
        any_of("plan", vec![]),
        eq("", json!(1)),
    ];
    assert_eq!(
        paths(&def),
        [
            "entry.filters[1].property",
            "entry.filters[2].any_of",
            "entry.filters[3].property"
        ]
    );
}

#[test]
fn unique_identifier_is_required_and_a_valid_path_with_reentry() {
    let mut def = journey(vec![send("notify", None)]);
    def.entry_rule = EntryRule::ReenterEveryTime {
        unique_identifier: String::new(),
    };
    assert_eq!(
        problems(&def),
        [Problem::new(
            "unique_identifier",
            "unique_identifier is required with REENTER_EVERY_TIME"
        )]
    );
    def.entry_rule = EntryRule::ReenterEveryTime {
        unique_identifier: "order[x]".into(),
    };
    assert_eq!(paths(&def), ["unique_identifier"]);
    def.entry_rule = EntryRule::ReenterEveryTime {
        unique_identifier: "order.id".into(),
    };
    assert!(problems(&def).is_empty());
    def.entry_rule = EntryRule::EnterOnce;
    assert!(problems(&def).is_empty());
}

#[test]
fn step_count_is_between_one_and_the_limit() {
    let mut def = journey(vec![]);
    def.start_step = String::new();
    assert!(paths(&def).contains(&"steps".to_owned()));

    let steps: Vec<Step> = (0..51)
        .map(|i| {
            let next = (i < 50).then(|| format!("s{}", i + 1));
            send(&format!("s{i}"), next.as_deref())
        })
        .collect();
    let mut def = journey(steps);
    assert_eq!(
        problems(&def),
        [Problem::new("steps", "51 steps, at most 50 allowed")]
    );
    // Operators can raise the limit.
    let mut opts = ValidationOptions::default();
    opts.limits.max_steps = 60;
    assert!(validate(&def, &opts).is_empty());
    def.steps.truncate(50);
    def.steps[49] = send("s49", None);
    assert!(problems(&def).is_empty());
}

#[test]
fn exit_rules_are_limited_and_checked() {
    let mut def = journey(vec![send("notify", None)]);
    def.exit_rules = (0..11)
        .map(|i| ExitRule {
            event: format!("cancelled_{i}"),
            filters: Vec::new(),
            match_unique_identifier: true,
            send: None,
        })
        .collect();
    assert_eq!(
        problems(&def),
        [Problem::new(
            "exit_rules",
            "11 exit rules, at most 10 allowed"
        )]
    );

    def.exit_rules.truncate(1);
    def.exit_rules[0].event = String::new();
    def.exit_rules[0].filters = vec![eq("a.", json!(1))];
    def.exit_rules[0].send = Some(send_spec(""));
    def.entry_rule = EntryRule::EnterOnce;
    assert_eq!(
        paths(&def),
        [
            "exit_rules[0].event",
            "exit_rules[0].filters[0].property",
            "exit_rules[0].match_unique_identifier",
            "exit_rules[0].send.destination_id",
        ]
    );
}

#[test]
fn step_keys_are_lowercase_words_of_at_most_64_bytes() {
    for good in ["a", "nudge", "step_2", &"x".repeat(64)] {
        assert!(is_valid_step_key(good), "{good}");
    }
    for bad in ["", "Nudge", "step-2", "step 2", "é", &"x".repeat(65)] {
        assert!(!is_valid_step_key(bad), "{bad}");
    }
}

#[test]
fn durations_are_written_like_users_write_them() {
    assert_eq!(human_duration(Duration::from_secs(0)), "0s");
    assert_eq!(human_duration(Duration::from_secs(90)), "1m 30s");
    assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
    assert_eq!(human_duration(Duration::from_secs(183 * DAY)), "183d");
    assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
}

/// A definition with many independent faults reports each of them, at its own path.
#[test]
#[allow(clippy::too_many_lines)] // one definition with every fault, checked at once
fn reports_every_problem_of_a_broken_definition() {
    let mut def = journey(vec![
        // 0: hold with a dangling timeout, a nameless branch and overlapping branches.
        hold(
            "wait",
            vec![
                branch("bought", "purchase_completed", Some("thanks")),
                branch("", "purchase_completed", Some("thanks"))
                    .with_filters(vec![eq("plan", json!("pro"))]),
            ],
            Duration::from_secs(60),
            Some("nudge"),
        ),
        // 1: fine.
        send("thanks", None),
        // 2: bad key, empty display name, unreachable.
        Step {
            key: "Bad-Key".into(),
            name: String::new(),
            kind: StepKind::End,
        },
        // 3: random split that does not add up; unreachable.
        Step {
            key: "split".into(),
            name: "Split".into(),
            kind: StepKind::RandomSplit(RandomSplitStep {
                branches: vec![
                    RandomBranch {
                        name: "a".into(),
                        percent: 50,
                        next: None,
                    },
                    RandomBranch {
                        name: "b".into(),
                        percent: 40,
                        next: None,
                    },
                ],
                same_branch_on_reentry: false,
            }),
        },
        // 4: data split with an audience condition using a trait operator; unreachable.
        Step {
            key: "segment".into(),
            name: "Segment".into(),
            kind: StepKind::DataSplit(DataSplitStep {
                branches: vec![DataSplitBranch {
                    name: "vip".into(),
                    conditions: vec![Condition {
                        subject: ConditionSubject::Audience("vip".into()),
                        op: ConditionOp::Equals,
                        value: Some(json!(true)),
                    }],
                    next: None,
                }],
                else_next: None,
            }),
        },
        // 5: a delay that is too short and a send with a bad method, in a cycle.
        delay("loop_a", 10, Some("loop_b")),
        send("loop_b", Some("loop_a")),
    ]);
    def.name = String::new();
    def.entry.event = String::new();
    if let StepKind::Send(s) = &mut def.steps[6].kind {
        s.spec.action.method = "FETCH".into();
        s.spec.mapping = Some(json!(["not", "an", "object"]));
    }
    def.exit_rules = vec![ExitRule {
        event: "unsubscribed".into(),
        filters: vec![any_of("reason", vec![])],
        match_unique_identifier: false,
        send: Some(SendSpec {
            mapping: Some(json!({"properties": {"total": {"@path": 42}}})),
            ..send_spec("webhook_1")
        }),
    }];

    let got: BTreeSet<String> = paths(&def).into_iter().collect();
    let want: BTreeSet<String> = [
        "name",
        "entry.event",
        "steps[0].hold_until.max_duration",
        "steps[0].hold_until.branches[1].name",
        "steps[0].hold_until.branches[1].filters",
        "steps[0].hold_until.timeout_next",
        "steps[2].key",
        "steps[2].name",
        "steps[2]",
        "steps[3].random_split.branches",
        "steps[3]",
        "steps[4].data_split.branches[0].conditions[0].op",
        "steps[4]",
        "steps[5].delay.duration",
        "steps[5]",
        "steps[6].send.action.method",
        "steps[6].send.mapping",
        "steps[6]",
        "steps[6].send.next",
        "exit_rules[0].filters[0].any_of",
        "exit_rules[0].send.mapping.properties.total.@path",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(got, want, "{:#?}", problems(&def));
}

/// The three use cases of the product description, written as definitions.
mod use_cases {
    use super::*;

    #[test]
    fn real_time_forwarding_of_form_submissions() {
        let mut def = journey(vec![send("forward", None)]);
        def.name = "Forward form submissions".into();
        def.entry.event = "form_submitted".into();
        def.entry_rule = EntryRule::ReenterEveryTime {
            unique_identifier: "form_id".into(),
        };
        assert_eq!(problems(&def), Vec::<Problem>::new());
    }

    #[test]
    fn abandoned_checkout() {
        let mut nudge = send("nudge", None);
        if let StepKind::Send(s) = &mut nudge.kind {
            s.spec.event_name = Some("Checkout Abandoned".into());
            s.spec.traits = vec!["email".into(), "first_name".into()];
            s.spec.mapping = None;
        }
        let mut def = journey(vec![
            hold(
                "wait_for_purchase",
                vec![branch("purchased", "purchase_completed", None)],
                Duration::from_secs(3600),
                Some("nudge"),
            ),
            nudge,
        ]);
        def.name = "Abandoned checkout".into();
        def.entry.event = "checkout_started".into();
        def.entry_rule = EntryRule::ReenterEveryTime {
            unique_identifier: "session_id".into(),
        };
        def.exit_rules = vec![ExitRule {
            event: "order_cancelled".into(),
            filters: Vec::new(),
            match_unique_identifier: true,
            send: None,
        }];
        assert_eq!(problems(&def), Vec::<Problem>::new());
    }

    #[test]
    fn follow_up_after_a_download() {
        let mut def = journey(vec![
            delay("wait_a_day", DAY, Some("check_interest")),
            Step {
                key: "check_interest".into(),
                name: "Pricing visitor?".into(),
                kind: StepKind::DataSplit(DataSplitStep {
                    branches: vec![DataSplitBranch {
                        name: "saw pricing".into(),
                        conditions: vec![Condition {
                            subject: ConditionSubject::Trait("visited_pricing".into()),
                            op: ConditionOp::Equals,
                            value: Some(json!(true)),
                        }],
                        next: Some("sales_follow_up".into()),
                    }],
                    else_next: Some("nurture".into()),
                }),
            },
            send("sales_follow_up", None),
            send("nurture", None),
        ]);
        def.name = "Content download follow-up".into();
        def.entry.event = "content_downloaded".into();
        def.entry.filters = vec![any_of("format", vec![json!("pdf"), json!("ebook")])];
        def.entry_rule = EntryRule::EnterOnce;
        assert_eq!(problems(&def), Vec::<Problem>::new());
    }
}
