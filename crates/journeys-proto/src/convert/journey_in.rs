//! `journeys.v1.Journey` → [`JourneyDefinition`], collecting every shape problem with its path.

use journeys_core::Problem;
use journeys_core::model::{
    Condition, ConditionOp, ConditionSubject, DataSplitBranch, DataSplitStep, DelayStep, EntryRule,
    EntryTrigger, ExitRule, FilterMatch, HoldBranch, HoldUntilStep, JourneyDefinition,
    PropertyFilter, RandomBranch, RandomSplitStep, SendAction, SendSpec, SendStep, Step, StepKind,
};

use super::json::{NonFiniteNumber, from_duration, list_to_json, struct_to_json, value_to_json};
use crate::v1 as pb;

/// The JSON of a converted value, or `null` with the problem noted (NaN and infinity have no
/// JSON form).
fn json_or_note(
    converted: Result<serde_json::Value, NonFiniteNumber>,
    problems: &mut Vec<Problem>,
) -> serde_json::Value {
    converted.unwrap_or_else(|e| {
        problems.push(Problem::new(e.field, NonFiniteNumber::DESCRIPTION));
        serde_json::Value::Null
    })
}

/// Converts a definition. The result is `Some` whenever a definition could be built (possibly
/// with placeholder values where a problem was found); the problems are always complete for the
/// shape, and validation adds the semantic ones.
pub fn definition(journey: &pb::Journey, problems: &mut Vec<Problem>) -> JourneyDefinition {
    let entry = match &journey.entry {
        Some(e) => entry(e, problems),
        // Validation reports the empty `entry.event`.
        None => EntryTrigger {
            event: String::new(),
            audience_key: None,
            filters: Vec::new(),
        },
    };
    let rule = pb::EntryRule::try_from(journey.entry_rule).unwrap_or(pb::EntryRule::Unspecified);
    let entry_rule = match rule {
        pb::EntryRule::EnterOnce => {
            if !journey.unique_identifier.is_empty() {
                problems.push(Problem::new(
                    "unique_identifier",
                    "must be empty with ENTER_ONCE (a profile enters at most once)",
                ));
            }
            EntryRule::EnterOnce
        }
        // Validation reports an empty identifier.
        pb::EntryRule::Unspecified | pb::EntryRule::ReenterEveryTime => {
            EntryRule::ReenterEveryTime {
                unique_identifier: journey.unique_identifier.clone(),
            }
        }
    };
    if journey.entry_rule != 0 && pb::EntryRule::try_from(journey.entry_rule).is_err() {
        problems.push(Problem::new("entry_rule", "unknown value"));
    }
    let steps = journey
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| step(s, &format!("steps[{i}]"), problems))
        .collect();
    let exit_rules = journey
        .exit_rules
        .iter()
        .enumerate()
        .map(|(i, r)| exit_rule(r, &format!("exit_rules[{i}]"), problems))
        .collect();
    JourneyDefinition {
        name: journey.name.clone(),
        description: journey.description.clone(),
        entry,
        entry_rule,
        start_step: journey.start_step.clone(),
        steps,
        exit_rules,
    }
}

fn entry(e: &pb::Entry, problems: &mut Vec<Problem>) -> EntryTrigger {
    EntryTrigger {
        event: e.event.clone(),
        audience_key: e.audience_key.clone().filter(|k| !k.is_empty()),
        filters: filters(&e.filters, "entry.filters", problems),
    }
}

fn filters(list: &[pb::Filter], path: &str, problems: &mut Vec<Problem>) -> Vec<PropertyFilter> {
    list.iter()
        .enumerate()
        .map(|(i, f)| {
            let matcher = match &f.r#match {
                Some(pb::filter::Match::Equals(v)) => FilterMatch::Equals(json_or_note(
                    value_to_json(v, &format!("{path}[{i}].equals")),
                    problems,
                )),
                Some(pb::filter::Match::AnyOf(l)) => {
                    match json_or_note(list_to_json(l, &format!("{path}[{i}].any_of")), problems) {
                        serde_json::Value::Array(items) => FilterMatch::AnyOf(items),
                        _ => FilterMatch::AnyOf(Vec::new()),
                    }
                }
                None => {
                    problems.push(Problem::new(
                        format!("{path}[{i}]"),
                        "one of `equals` or `any_of` is required",
                    ));
                    FilterMatch::AnyOf(Vec::new())
                }
            };
            PropertyFilter {
                property: f.property.clone(),
                matcher,
            }
        })
        .collect()
}

fn next(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn required_duration(
    d: Option<&prost_types::Duration>,
    path: String,
    problems: &mut Vec<Problem>,
) -> std::time::Duration {
    match d.map(from_duration) {
        Some(Ok(d)) => d,
        Some(Err(why)) => {
            problems.push(Problem::new(path, why));
            std::time::Duration::ZERO
        }
        None => {
            problems.push(Problem::new(path, "required"));
            std::time::Duration::ZERO
        }
    }
}

fn step(s: &pb::Step, path: &str, problems: &mut Vec<Problem>) -> Step {
    use pb::step::Kind;
    let kind = match &s.kind {
        Some(Kind::Delay(d)) => StepKind::Delay(DelayStep {
            duration: required_duration(
                d.duration.as_ref(),
                format!("{path}.delay.duration"),
                problems,
            ),
            next: next(&d.next),
        }),
        Some(Kind::HoldUntil(h)) => {
            let p = format!("{path}.hold_until");
            StepKind::HoldUntil(HoldUntilStep {
                branches: h
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| HoldBranch {
                        name: b.name.clone(),
                        event: b.event.clone(),
                        filters: filters(
                            &b.filters,
                            &format!("{p}.branches[{i}].filters"),
                            problems,
                        ),
                        next: next(&b.next),
                        return_to_start: b.return_to_start,
                    })
                    .collect(),
                max_duration: required_duration(
                    h.max_duration.as_ref(),
                    format!("{p}.max_duration"),
                    problems,
                ),
                timeout_next: next(&h.timeout_next),
            })
        }
        Some(Kind::DataSplit(d)) => {
            let p = format!("{path}.data_split");
            StepKind::DataSplit(DataSplitStep {
                branches: d
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(i, b)| DataSplitBranch {
                        name: b.name.clone(),
                        conditions: b
                            .conditions
                            .iter()
                            .enumerate()
                            .map(|(j, c)| {
                                condition(
                                    c,
                                    &format!("{p}.branches[{i}].conditions[{j}]"),
                                    problems,
                                )
                            })
                            .collect(),
                        next: next(&b.next),
                    })
                    .collect(),
                else_next: next(&d.else_next),
            })
        }
        Some(Kind::RandomSplit(r)) => StepKind::RandomSplit(RandomSplitStep {
            branches: r
                .branches
                .iter()
                .map(|b| RandomBranch {
                    name: b.name.clone(),
                    percent: b.percent,
                    next: next(&b.next),
                })
                .collect(),
            same_branch_on_reentry: r.same_branch_on_reentry,
        }),
        Some(Kind::Send(send)) => StepKind::Send(SendStep {
            spec: send_spec(
                &send.destination_id,
                send.action.as_ref(),
                &send.event_name,
                &send.traits,
                send.mapping.as_ref(),
                (&format!("{path}.send.mapping"), problems),
            ),
            next: next(&send.next),
        }),
        Some(Kind::End(_)) => StepKind::End,
        None => {
            problems.push(Problem::new(
                path,
                "exactly one of delay, hold_until, data_split, random_split, send or end is required",
            ));
            StepKind::End
        }
    };
    Step {
        key: s.key.clone(),
        name: s.name.clone(),
        kind,
    }
}

fn send_spec(
    destination_id: &str,
    action: Option<&pb::SendAction>,
    event_name: &str,
    traits: &[String],
    mapping: Option<&prost_types::Struct>,
    (mapping_path, problems): (&str, &mut Vec<Problem>),
) -> SendSpec {
    SendSpec {
        destination_id: destination_id.to_owned(),
        action: action.map_or_else(SendAction::default, |a| SendAction {
            method: if a.method.is_empty() {
                "POST".to_owned()
            } else {
                a.method.to_ascii_uppercase()
            },
            path: a.path.clone(),
        }),
        event_name: next(event_name),
        traits: traits.to_vec(),
        mapping: mapping.map(|m| json_or_note(struct_to_json(m, mapping_path), problems)),
    }
}

fn condition(c: &pb::Condition, path: &str, problems: &mut Vec<Problem>) -> Condition {
    let key = c.path_or_key.clone();
    let subject = match pb::ConditionKind::try_from(c.kind) {
        Ok(pb::ConditionKind::Trait) => ConditionSubject::Trait(key),
        Ok(pb::ConditionKind::Audience) => ConditionSubject::Audience(key),
        Ok(pb::ConditionKind::Context) => ConditionSubject::Context(key),
        Ok(pb::ConditionKind::Unspecified) | Err(_) => {
            problems.push(Problem::new(
                format!("{path}.kind"),
                "required: TRAIT, AUDIENCE or CONTEXT",
            ));
            ConditionSubject::Trait(key)
        }
    };
    let op = match pb::ConditionOp::try_from(c.op) {
        Ok(op) => match op {
            pb::ConditionOp::Equals => Some(ConditionOp::Equals),
            pb::ConditionOp::NotEquals => Some(ConditionOp::NotEquals),
            pb::ConditionOp::AnyOf => Some(ConditionOp::AnyOf),
            pb::ConditionOp::Exists => Some(ConditionOp::Exists),
            pb::ConditionOp::NotExists => Some(ConditionOp::NotExists),
            pb::ConditionOp::Gt => Some(ConditionOp::Gt),
            pb::ConditionOp::Gte => Some(ConditionOp::Gte),
            pb::ConditionOp::Lt => Some(ConditionOp::Lt),
            pb::ConditionOp::Lte => Some(ConditionOp::Lte),
            pb::ConditionOp::Contains => Some(ConditionOp::Contains),
            pb::ConditionOp::InAudience => Some(ConditionOp::InAudience),
            pb::ConditionOp::NotInAudience => Some(ConditionOp::NotInAudience),
            pb::ConditionOp::Unspecified => None,
        },
        Err(_) => None,
    };
    let op = op.unwrap_or_else(|| {
        problems.push(Problem::new(format!("{path}.op"), "required"));
        ConditionOp::Exists
    });
    Condition {
        subject,
        op,
        value: c
            .value
            .as_ref()
            .map(|v| json_or_note(value_to_json(v, &format!("{path}.value")), problems)),
    }
}

fn exit_rule(r: &pb::ExitRule, path: &str, problems: &mut Vec<Problem>) -> ExitRule {
    ExitRule {
        event: r.event.clone(),
        filters: filters(&r.filters, &format!("{path}.filters"), problems),
        match_unique_identifier: r.match_unique_identifier,
        send: r.send.as_ref().map(|s| {
            send_spec(
                &s.destination_id,
                s.action.as_ref(),
                &s.event_name,
                &s.traits,
                s.mapping.as_ref(),
                (&format!("{path}.send.mapping"), problems),
            )
        }),
    }
}
