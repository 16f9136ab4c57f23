//! The step graph: keys, the start step, references between steps, reachability and cycles.
//!
//! With duplicate keys the graph is ambiguous; like [`JourneyDefinition::step`], a reference
//! resolves to the first step with that key, and the later duplicates are reported once (as
//! duplicates) rather than again as unreachable.

use std::collections::HashMap;

use super::{Limits, Report, check_text, is_valid_step_key_within};
use crate::model::{JourneyDefinition, Step, StepKind};

/// Key format and uniqueness, display names, and the start step.
pub(super) fn check_keys_and_start(r: &mut Report, def: &JourneyDefinition, limits: &Limits) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in def.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        if step.key.is_empty() {
            r.push(format!("{path}.key"), "key is required");
        } else if !is_valid_step_key_within(&step.key, limits.max_step_key_len) {
            r.push(
                format!("{path}.key"),
                format!(
                    "key '{}' must be 1 to {} characters of a-z, 0-9 and _",
                    step.key, limits.max_step_key_len
                ),
            );
        }
        if let Some(first) = first_index.get(step.key.as_str()) {
            if !step.key.is_empty() {
                r.push(
                    format!("{path}.key"),
                    format!(
                        "key '{}' is already used by steps[{first}]; step keys must be unique",
                        step.key
                    ),
                );
            }
        } else {
            first_index.insert(&step.key, i);
        }
        check_text(
            r,
            &format!("{path}.name"),
            "name",
            &step.name,
            limits.max_name_chars,
        );
    }

    if def.start_step.is_empty() {
        if !def.steps.is_empty() {
            r.push("start_step", "start_step is required");
        }
    } else if !first_index.contains_key(def.start_step.as_str()) {
        r.push(
            "start_step",
            format!("start step '{}' does not exist", def.start_step),
        );
    }
}

/// Every `next`-like field of a step, with its path relative to the step.
fn next_fields(kind: &StepKind) -> Vec<(String, &Option<String>)> {
    match kind {
        StepKind::Delay(d) => vec![("delay.next".to_owned(), &d.next)],
        StepKind::HoldUntil(h) => h
            .branches
            .iter()
            .enumerate()
            .map(|(j, b)| (format!("hold_until.branches[{j}].next"), &b.next))
            .chain([("hold_until.timeout_next".to_owned(), &h.timeout_next)])
            .collect(),
        StepKind::DataSplit(s) => s
            .branches
            .iter()
            .enumerate()
            .map(|(j, b)| (format!("data_split.branches[{j}].next"), &b.next))
            .chain([("data_split.else_next".to_owned(), &s.else_next)])
            .collect(),
        StepKind::RandomSplit(s) => s
            .branches
            .iter()
            .enumerate()
            .map(|(j, b)| (format!("random_split.branches[{j}].next"), &b.next))
            .collect(),
        StepKind::Send(s) => vec![("send.next".to_owned(), &s.next)],
        StepKind::End => Vec::new(),
    }
}

/// An edge of the graph: the field it comes from and the index of the step it leads to.
struct Edge {
    field: String,
    to: usize,
}

/// Dangling references, steps not reachable from the start step, and cycles.
pub(super) fn check_graph(r: &mut Report, def: &JourneyDefinition) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in def.steps.iter().enumerate() {
        index.entry(step.key.as_str()).or_insert(i);
    }

    let mut edges: Vec<Vec<Edge>> = Vec::with_capacity(def.steps.len());
    for (i, step) in def.steps.iter().enumerate() {
        let mut out = Vec::new();
        for (field, next) in next_fields(&step.kind) {
            let Some(key) = next else { continue };
            match index.get(key.as_str()) {
                Some(&to) => out.push(Edge { field, to }),
                None if key.is_empty() => r.push(
                    format!("steps[{i}].{field}"),
                    "next step key is empty; leave it unset to end the instance",
                ),
                None => r.push(
                    format!("steps[{i}].{field}"),
                    format!("next step '{key}' does not exist"),
                ),
            }
        }
        edges.push(out);
    }

    let start = index.get(def.start_step.as_str()).copied();
    if let Some(start) = start {
        let mut seen = vec![false; def.steps.len()];
        let mut todo = vec![start];
        seen[start] = true;
        while let Some(i) = todo.pop() {
            for e in &edges[i] {
                if !seen[e.to] {
                    seen[e.to] = true;
                    todo.push(e.to);
                }
            }
        }
        for (i, step) in def.steps.iter().enumerate() {
            let duplicate = index.get(step.key.as_str()) != Some(&i);
            if !seen[i] && !duplicate {
                r.push(
                    format!("steps[{i}]"),
                    format!(
                        "step '{}' is not reachable from the start step '{}'",
                        step.key, def.start_step
                    ),
                );
            }
        }
    }

    report_cycles(r, &def.steps, &edges, start);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnStack,
    Done,
}

/// Depth-first search from the start step, then from every other step in order; each back
/// edge closes one cycle, reported at that edge's field. Iterative, so that an oversized draft
/// cannot exhaust the stack.
fn report_cycles(r: &mut Report, steps: &[Step], edges: &[Vec<Edge>], start: Option<usize>) {
    let mut mark = vec![Mark::New; steps.len()];
    let roots = start.into_iter().chain(0..steps.len());
    for root in roots {
        if mark[root] != Mark::New {
            continue;
        }
        // (step, index of the next edge to follow)
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::OnStack;
        while let Some(top) = stack.last_mut() {
            let (node, next_edge) = *top;
            let Some(edge) = edges[node].get(next_edge) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            top.1 += 1;
            match mark[edge.to] {
                Mark::New => {
                    mark[edge.to] = Mark::OnStack;
                    stack.push((edge.to, 0));
                }
                Mark::OnStack => {
                    let from = stack.iter().position(|&(n, _)| n == edge.to).unwrap_or(0);
                    let cycle: Vec<&str> = stack[from..]
                        .iter()
                        .map(|&(n, _)| steps[n].key.as_str())
                        .chain([steps[edge.to].key.as_str()])
                        .collect();
                    let message = if edge.to == node {
                        format!("step '{}' leads back to itself", steps[node].key)
                    } else {
                        format!(
                            "step '{}' leads back to '{}', closing the cycle {}",
                            steps[node].key,
                            steps[edge.to].key,
                            cycle.join(" → ")
                        )
                    };
                    r.push(
                        format!("steps[{node}].{}", edge.field),
                        format!(
                            "{message}; steps must not form cycles (to wait again for an event, use return_to_start on a hold branch)"
                        ),
                    );
                }
                Mark::Done => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{
        Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, RandomBranch,
        RandomSplitStep, Step, StepKind,
    };
    use crate::problem::Problem;
    use crate::validate::testkit::{branch, delay, hold, journey, paths, problems, send};

    #[test]
    fn keys_must_be_well_formed() {
        let def = journey(vec![send("Start", Some("b-2")), send("b-2", None)]);
        assert_eq!(
            problems(&def)[0],
            Problem::new(
                "steps[0].key",
                "key 'Start' must be 1 to 64 characters of a-z, 0-9 and _"
            )
        );
        assert_eq!(paths(&def), ["steps[0].key", "steps[1].key"]);

        let def = journey(vec![send(&"k".repeat(65), None)]);
        assert_eq!(paths(&def), ["steps[0].key"]);
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second_occurrence() {
        let def = journey(vec![
            send("a", Some("b")),
            send("b", Some("c")),
            send("b", None),
            send("c", None),
        ]);
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[2].key",
                "key 'b' is already used by steps[1]; step keys must be unique"
            )]
        );
    }

    #[test]
    fn display_names_are_required_and_limited() {
        let mut def = journey(vec![send("a", Some("b")), send("b", None)]);
        def.steps[0].name = String::new();
        def.steps[1].name = "n".repeat(74);
        assert_eq!(paths(&def), ["steps[0].name", "steps[1].name"]);
        assert_eq!(problems(&def)[0].message, "name is required");
    }

    #[test]
    fn start_step_must_exist() {
        let mut def = journey(vec![send("a", None)]);
        def.start_step = "welcome".into();
        assert_eq!(
            problems(&def),
            [Problem::new(
                "start_step",
                "start step 'welcome' does not exist"
            )]
        );
        def.start_step = String::new();
        assert_eq!(
            problems(&def),
            [Problem::new("start_step", "start_step is required")]
        );
    }

    #[test]
    fn every_next_must_name_an_existing_step() {
        let def = journey(vec![
            hold(
                "wait",
                vec![
                    branch("bought", "purchase_completed", Some("thanks")),
                    branch("left", "cart_emptied", Some("gone")),
                ],
                std::time::Duration::from_secs(3600),
                Some("nudge"),
            ),
            send("thanks", None),
        ]);
        assert_eq!(
            problems(&def),
            [
                Problem::new(
                    "steps[0].hold_until.branches[1].next",
                    "next step 'gone' does not exist"
                ),
                Problem::new(
                    "steps[0].hold_until.timeout_next",
                    "next step 'nudge' does not exist"
                ),
            ]
        );
    }

    #[test]
    fn next_fields_of_every_step_type_are_checked() {
        let def = journey(vec![
            delay("d", 60, Some("x1")),
            Step {
                key: "ds".into(),
                name: "Split".into(),
                kind: StepKind::DataSplit(DataSplitStep {
                    branches: vec![DataSplitBranch {
                        name: "b".into(),
                        conditions: vec![Condition {
                            subject: ConditionSubject::Trait("plan".into()),
                            op: ConditionOp::Exists,
                            value: None,
                        }],
                        next: Some("x2".into()),
                    }],
                    else_next: Some("x3".into()),
                }),
            },
            Step {
                key: "rs".into(),
                name: "Random".into(),
                kind: StepKind::RandomSplit(RandomSplitStep {
                    branches: vec![RandomBranch {
                        name: "all".into(),
                        percent: 100,
                        next: Some("x4".into()),
                    }],
                    same_branch_on_reentry: false,
                }),
            },
            send("s", Some("")),
        ]);
        let got: Vec<String> = problems(&def)
            .into_iter()
            .filter(|p| p.message.contains("does not exist") || p.message.contains("empty"))
            .map(|p| p.path)
            .collect();
        assert_eq!(
            got,
            [
                "steps[0].delay.next",
                "steps[1].data_split.branches[0].next",
                "steps[1].data_split.else_next",
                "steps[2].random_split.branches[0].next",
                "steps[3].send.next",
            ]
        );
    }

    #[test]
    fn unreachable_steps_are_reported_at_the_step() {
        let def = journey(vec![
            send("a", Some("c")),
            send("orphan", Some("c")),
            send("c", None),
        ]);
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[1]",
                "step 'orphan' is not reachable from the start step 'a'"
            )]
        );
    }

    #[test]
    fn a_cycle_is_reported_once_with_its_keys() {
        let def = journey(vec![
            send("a", Some("b")),
            delay("b", 60, Some("c")),
            send("c", Some("a")),
        ]);
        assert_eq!(
            problems(&def),
            [Problem::new(
                "steps[2].send.next",
                "step 'c' leads back to 'a', closing the cycle a → b → c → a; steps must not \
                 form cycles (to wait again for an event, use return_to_start on a hold branch)"
            )]
        );
    }

    #[test]
    fn self_loops_and_unreachable_cycles_are_found() {
        let def = journey(vec![
            send("a", None),
            send("x", Some("y")),
            send("y", Some("x")),
            delay("z", 60, Some("z")),
        ]);
        let cycles: Vec<Problem> = problems(&def)
            .into_iter()
            .filter(|p| p.message.contains("cycle"))
            .collect();
        assert_eq!(cycles.len(), 2, "{cycles:#?}");
        assert_eq!(cycles[0].path, "steps[2].send.next");
        assert!(cycles[0].message.contains("x → y → x"));
        assert_eq!(cycles[1].path, "steps[3].delay.next");
        assert!(
            cycles[1]
                .message
                .starts_with("step 'z' leads back to itself")
        );
    }

    #[test]
    fn diamonds_are_not_cycles() {
        let def = journey(vec![
            hold(
                "wait",
                vec![branch("bought", "purchase_completed", Some("join"))],
                std::time::Duration::from_secs(3600),
                Some("join"),
            ),
            send("join", None),
        ]);
        assert!(problems(&def).is_empty(), "{:#?}", problems(&def));
    }
}
