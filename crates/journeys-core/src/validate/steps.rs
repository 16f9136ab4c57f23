//! Per-step rules: durations, branch counts and names, and what each step type requires.
//! References between steps are checked in `graph`.

use std::collections::HashMap;

use super::filters::{check_condition, check_filters, validate_hold_branches_exclusive};
use super::{Report, ValidationOptions, check_duration, send::check_send_spec};
use crate::model::{DataSplitStep, HoldUntilStep, RandomSplitStep, Step, StepKind};

pub(super) fn check_step(r: &mut Report, path: &str, step: &Step, opts: &ValidationOptions) {
    let limits = &opts.limits;
    match &step.kind {
        StepKind::Delay(d) => check_duration(
            r,
            &format!("{path}.delay.duration"),
            "delay",
            d.duration,
            (limits.min_delay, limits.max_delay),
            opts,
        ),
        StepKind::HoldUntil(h) => check_hold(r, &format!("{path}.hold_until"), h, opts),
        StepKind::DataSplit(s) => {
            check_data_split(
                r,
                &format!("{path}.data_split"),
                s,
                limits.max_split_branches,
            );
        }
        StepKind::RandomSplit(s) => {
            check_random_split(
                r,
                &format!("{path}.random_split"),
                s,
                limits.max_random_branches,
            );
        }
        StepKind::Send(s) => {
            check_send_spec(r, &format!("{path}.send"), &s.spec, true, limits);
        }
        StepKind::End => {}
    }
}

fn check_branch_count(r: &mut Report, path: &str, count: usize, max: usize) {
    if count == 0 {
        r.push(
            format!("{path}.branches"),
            "at least one branch is required",
        );
    } else if count > max {
        r.push(
            format!("{path}.branches"),
            format!("{count} branches, at most {max} allowed"),
        );
    }
}

/// Branch names: required and unique within their step (stats and context keys use them).
fn check_branch_names<'a>(r: &mut Report, path: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (j, name) in names.enumerate() {
        let name_path = format!("{path}.branches[{j}].name");
        if name.trim().is_empty() {
            r.push(name_path, "branch name is required");
        } else if let Some(first) = seen.get(name) {
            r.push(
                name_path,
                format!("branch name '{name}' is already used by branch {first}"),
            );
        } else {
            seen.insert(name, j);
        }
    }
}

fn check_hold(r: &mut Report, path: &str, h: &HoldUntilStep, opts: &ValidationOptions) {
    let limits = &opts.limits;
    check_branch_count(r, path, h.branches.len(), limits.max_hold_branches);
    check_duration(
        r,
        &format!("{path}.max_duration"),
        "maximum hold",
        h.max_duration,
        (limits.min_hold, limits.max_hold),
        opts,
    );
    check_branch_names(r, path, h.branches.iter().map(|b| b.name.as_str()));
    for (j, b) in h.branches.iter().enumerate() {
        if b.event.trim().is_empty() {
            r.push(
                format!("{path}.branches[{j}].event"),
                "branch event is required",
            );
        }
        check_filters(r, &format!("{path}.branches[{j}].filters"), &b.filters);
    }
    for (i, j) in validate_hold_branches_exclusive(&h.branches) {
        if h.branches[j].event.trim().is_empty() {
            continue; // already reported as missing
        }
        r.push(
            format!("{path}.branches[{j}].filters"),
            format!(
                "branches {i} and {j} both wait for '{}' with overlapping filters; hold branches must be mutually exclusive",
                h.branches[j].event
            ),
        );
    }
}

fn check_data_split(r: &mut Report, path: &str, s: &DataSplitStep, max_branches: usize) {
    check_branch_count(r, path, s.branches.len(), max_branches);
    check_branch_names(r, path, s.branches.iter().map(|b| b.name.as_str()));
    for (j, b) in s.branches.iter().enumerate() {
        let conditions = format!("{path}.branches[{j}].conditions");
        if b.conditions.is_empty() {
            r.push(
                &*conditions,
                "at least one condition is required (profiles that match none take else_next)",
            );
        }
        for (k, c) in b.conditions.iter().enumerate() {
            check_condition(r, &format!("{conditions}[{k}]"), c);
        }
    }
}

fn check_random_split(r: &mut Report, path: &str, s: &RandomSplitStep, max_branches: usize) {
    check_branch_count(r, path, s.branches.len(), max_branches);
    check_branch_names(r, path, s.branches.iter().map(|b| b.name.as_str()));
    for (j, b) in s.branches.iter().enumerate() {
        if !(1..=100).contains(&b.percent) {
            r.push(
                format!("{path}.branches[{j}].percent"),
                format!("percent is {}, must be between 1 and 100", b.percent),
            );
        }
    }
    let total: u64 = s.branches.iter().map(|b| u64::from(b.percent)).sum();
    if !s.branches.is_empty() && total != 100 {
        r.push(
            format!("{path}.branches"),
            format!("percentages total {total}, must total exactly 100"),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::model::{
        Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, RandomBranch,
        RandomSplitStep, Step, StepKind,
    };
    use crate::problem::Problem;
    use crate::validate::testkit::{
        WithFilters, branch, delay, eq, hold, journey, paths, problems, send,
    };
    use crate::validate::{ValidationOptions, validate};

    const DAY: u64 = 24 * 3600;

    fn delay_journey(secs: u64) -> crate::model::JourneyDefinition {
        journey(vec![delay("wait", secs, None)])
    }

    fn hold_journey(max: Duration) -> crate::model::JourneyDefinition {
        journey(vec![hold(
            "wait",
            vec![branch("bought", "purchase_completed", None)],
            max,
            None,
        )])
    }

    fn short() -> ValidationOptions {
        ValidationOptions {
            allow_short_durations: true,
            ..ValidationOptions::default()
        }
    }

    #[test]
    fn delays_last_from_a_minute_to_182_days() {
        assert!(problems(&delay_journey(60)).is_empty());
        assert!(problems(&delay_journey(182 * DAY)).is_empty());
        assert_eq!(
            problems(&delay_journey(30)),
            [Problem::new(
                "steps[0].delay.duration",
                "delay of 30s is shorter than the minimum of 1m (shorter durations need the allow-short-durations setting)"
            )]
        );
        assert_eq!(
            problems(&delay_journey(182 * DAY + 1)),
            [Problem::new(
                "steps[0].delay.duration",
                "delay of 182d 1s is longer than the maximum of 182d"
            )]
        );
    }

    #[test]
    fn short_durations_allow_seconds_but_not_zero() {
        assert!(validate(&delay_journey(1), &short()).is_empty());
        assert!(validate(&hold_journey(Duration::from_secs(2)), &short()).is_empty());
        assert_eq!(
            validate(&delay_journey(0), &short()),
            [Problem::new(
                "steps[0].delay.duration",
                "delay of 0s is shorter than the minimum of 1s"
            )]
        );
        let def = delay_journey(183 * DAY);
        assert_eq!(
            validate(&def, &short())
                .into_iter()
                .map(|p| p.path)
                .collect::<Vec<_>>(),
            ["steps[0].delay.duration"]
        );
    }

    #[test]
    fn holds_last_from_five_minutes_to_182_days() {
        assert!(problems(&hold_journey(Duration::from_secs(300))).is_empty());
        assert!(problems(&hold_journey(Duration::from_secs(182 * DAY))).is_empty());
        assert_eq!(
            paths(&hold_journey(Duration::from_secs(299))),
            ["steps[0].hold_until.max_duration"]
        );
        assert_eq!(
            problems(&hold_journey(Duration::from_secs(183 * DAY)))[0].message,
            "maximum hold of 183d is longer than the maximum of 182d"
        );
    }

    #[test]
    fn configured_bounds_replace_the_defaults() {
        let tight = ValidationOptions {
            limits: crate::validate::Limits {
                min_delay: Duration::from_secs(600),
                max_delay: Duration::from_secs(2 * 3600),
                min_hold: Duration::from_secs(900),
                max_hold: Duration::from_secs(DAY),
                ..crate::validate::Limits::default()
            },
            ..ValidationOptions::default()
        };
        assert!(validate(&delay_journey(2 * 3600), &tight).is_empty());
        assert_eq!(
            validate(&delay_journey(3 * 3600), &tight),
            [Problem::new(
                "steps[0].delay.duration",
                "delay of 3h is longer than the maximum of 2h"
            )]
        );
        assert_eq!(
            validate(&delay_journey(300), &tight)[0].message,
            "delay of 5m is shorter than the minimum of 10m (shorter durations need the allow-short-durations setting)"
        );
        assert!(
            problems(&delay_journey(300)).is_empty(),
            "within the defaults"
        );
        assert_eq!(
            validate(&hold_journey(Duration::from_secs(2 * DAY)), &tight)[0].message,
            "maximum hold of 2d is longer than the maximum of 1d"
        );
        assert_eq!(
            validate(&hold_journey(Duration::from_secs(600)), &tight)[0].message,
            "maximum hold of 10m is shorter than the minimum of 15m (shorter durations need the allow-short-durations setting)"
        );
    }

    #[test]
    fn holds_have_one_to_nine_branches() {
        let mut def = hold_journey(Duration::from_secs(3600));
        let StepKind::HoldUntil(h) = &mut def.steps[0].kind else {
            unreachable!()
        };
        h.branches.clear();
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[0].hold_until.branches",
                "at least one branch is required"
            )]
        );
        let StepKind::HoldUntil(h) = &mut def.steps[0].kind else {
            unreachable!()
        };
        h.branches = (0..10)
            .map(|i| branch(&format!("b{i}"), &format!("event_{i}"), None))
            .collect();
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[0].hold_until.branches",
                "10 branches, at most 9 allowed"
            )]
        );
    }

    #[test]
    fn hold_branches_need_unique_names_events_and_valid_filters() {
        let def = journey(vec![hold(
            "wait",
            vec![
                branch("bought", "purchase_completed", None),
                branch("bought", "cart_emptied", None),
                branch("", "", None).with_filters(vec![eq("a..b", json!(1))]),
            ],
            Duration::from_secs(3600),
            None,
        )]);
        assert_eq!(
            problems(&def),
            [
                Problem::new(
                    "steps[0].hold_until.branches[1].name",
                    "branch name 'bought' is already used by branch 0"
                ),
                Problem::new(
                    "steps[0].hold_until.branches[2].name",
                    "branch name is required"
                ),
                Problem::new(
                    "steps[0].hold_until.branches[2].event",
                    "branch event is required"
                ),
                Problem::new(
                    "steps[0].hold_until.branches[2].filters[0].property",
                    "'a..b' is not a valid property path (expected dot-separated keys with optional [n] indexes, e.g. 'cart.items[0].sku')"
                ),
            ]
        );
    }

    #[test]
    fn hold_branches_on_the_same_event_must_not_overlap() {
        let def = journey(vec![hold(
            "wait",
            vec![
                branch("pro", "purchase_completed", None)
                    .with_filters(vec![eq("plan", json!("pro"))]),
                branch("free", "purchase_completed", None)
                    .with_filters(vec![eq("plan", json!("free"))]),
                branch("any", "purchase_completed", None),
                branch("emptied", "cart_emptied", None),
            ],
            Duration::from_secs(3600),
            None,
        )]);
        assert_eq!(
            problems(&def),
            [
                Problem::new(
                    "steps[0].hold_until.branches[2].filters",
                    "branches 0 and 2 both wait for 'purchase_completed' with overlapping filters; hold branches must be mutually exclusive"
                ),
                Problem::new(
                    "steps[0].hold_until.branches[2].filters",
                    "branches 1 and 2 both wait for 'purchase_completed' with overlapping filters; hold branches must be mutually exclusive"
                ),
            ]
        );
    }

    fn data_split(branches: Vec<DataSplitBranch>) -> Step {
        Step {
            key: "split".into(),
            name: "Split".into(),
            kind: StepKind::DataSplit(DataSplitStep {
                branches,
                else_next: None,
            }),
        }
    }

    fn data_branch(name: &str, conditions: Vec<Condition>) -> DataSplitBranch {
        DataSplitBranch {
            name: name.into(),
            conditions,
            next: None,
        }
    }

    fn has_trait(path: &str) -> Condition {
        Condition {
            subject: ConditionSubject::Trait(path.into()),
            op: ConditionOp::Exists,
            value: None,
        }
    }

    #[test]
    fn data_splits_need_named_branches_with_conditions() {
        let def = journey(vec![data_split(vec![
            data_branch("vip", vec![has_trait("vip")]),
            data_branch("vip", vec![has_trait("plan")]),
            data_branch("none", vec![]),
            data_branch("bad", vec![has_trait("a."), has_trait("ok")]),
        ])]);
        assert_eq!(
            paths(&def),
            [
                "steps[0].data_split.branches[1].name",
                "steps[0].data_split.branches[2].conditions",
                "steps[0].data_split.branches[3].conditions[0].path_or_key",
            ]
        );

        let def = journey(vec![data_split(vec![])]);
        assert_eq!(paths(&def), ["steps[0].data_split.branches"]);
        let many = (0..10)
            .map(|i| data_branch(&format!("b{i}"), vec![has_trait("x")]))
            .collect();
        let def = journey(vec![data_split(many)]);
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[0].data_split.branches",
                "10 branches, at most 9 allowed"
            )]
        );
    }

    fn random_split(percents: &[u32]) -> crate::model::JourneyDefinition {
        journey(vec![Step {
            key: "ab".into(),
            name: "A/B".into(),
            kind: StepKind::RandomSplit(RandomSplitStep {
                branches: percents
                    .iter()
                    .enumerate()
                    .map(|(i, &percent)| RandomBranch {
                        name: format!("b{i}"),
                        percent,
                        next: None,
                    })
                    .collect(),
                same_branch_on_reentry: false,
            }),
        }])
    }

    #[test]
    fn random_split_percentages_total_exactly_100() {
        assert!(problems(&random_split(&[50, 50])).is_empty());
        assert!(problems(&random_split(&[100])).is_empty());
        assert_eq!(
            problems(&random_split(&[50, 40])),
            [Problem::new(
                "steps[0].random_split.branches",
                "percentages total 90, must total exactly 100"
            )]
        );
        assert_eq!(
            paths(&random_split(&[0, 100])),
            ["steps[0].random_split.branches[0].percent"]
        );
        assert_eq!(
            paths(&random_split(&[101, u32::MAX])),
            [
                "steps[0].random_split.branches[0].percent",
                "steps[0].random_split.branches[1].percent",
                "steps[0].random_split.branches",
            ]
        );
    }

    #[test]
    fn random_splits_have_one_to_five_uniquely_named_branches() {
        assert_eq!(
            problems(&random_split(&[20; 6]))[0],
            Problem::new(
                "steps[0].random_split.branches",
                "6 branches, at most 5 allowed"
            )
        );
        assert_eq!(
            paths(&random_split(&[])),
            ["steps[0].random_split.branches"]
        );
        let mut def = random_split(&[50, 50]);
        let StepKind::RandomSplit(s) = &mut def.steps[0].kind else {
            unreachable!()
        };
        s.branches[1].name = "b0".into();
        assert_eq!(paths(&def), ["steps[0].random_split.branches[1].name"]);
    }

    #[test]
    fn send_steps_are_checked_at_their_path() {
        let mut def = journey(vec![send("notify", None)]);
        let StepKind::Send(s) = &mut def.steps[0].kind else {
            unreachable!()
        };
        s.spec.destination_id = String::new();
        assert_eq!(paths(&def), ["steps[0].send.destination_id"]);
    }
}
