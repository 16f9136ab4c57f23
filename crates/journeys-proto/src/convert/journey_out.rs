//! [`JourneyDefinition`] → `journeys.v1.Journey` (the authored part; the control plane adds
//! the stored id, state, revision and times).

use journeys_core::model::{
    Condition, ConditionOp, ConditionSubject, EntryRule, ExitRule, FilterMatch, JourneyDefinition,
    PropertyFilter, SendSpec, Step, StepKind,
};

use super::json::{duration, json_to_struct, json_to_value};
use crate::v1 as pb;

/// The authored part only (no id, state or timestamps).
#[must_use]
pub fn definition(def: &JourneyDefinition) -> pb::Journey {
    let (entry_rule, unique_identifier) = match &def.entry_rule {
        EntryRule::ReenterEveryTime { unique_identifier } => {
            (pb::EntryRule::ReenterEveryTime, unique_identifier.clone())
        }
        EntryRule::EnterOnce => (pb::EntryRule::EnterOnce, String::new()),
    };
    pb::Journey {
        name: def.name.clone(),
        description: def.description.clone(),
        entry: Some(pb::Entry {
            event: def.entry.event.clone(),
            audience_key: def.entry.audience_key.clone(),
            filters: filters(&def.entry.filters),
        }),
        entry_rule: entry_rule as i32,
        unique_identifier,
        start_step: def.start_step.clone(),
        steps: def.steps.iter().map(step).collect(),
        exit_rules: def.exit_rules.iter().map(exit_rule).collect(),
        ..Default::default()
    }
}

fn filters(list: &[PropertyFilter]) -> Vec<pb::Filter> {
    list.iter()
        .map(|f| pb::Filter {
            property: f.property.clone(),
            r#match: Some(match &f.matcher {
                FilterMatch::Equals(v) => pb::filter::Match::Equals(json_to_value(v)),
                FilterMatch::AnyOf(items) => pb::filter::Match::AnyOf(prost_types::ListValue {
                    values: items.iter().map(json_to_value).collect(),
                }),
            }),
        })
        .collect()
}

fn next(n: Option<&String>) -> String {
    n.cloned().unwrap_or_default()
}

fn step(s: &Step) -> pb::Step {
    use pb::step::Kind;
    let kind = match &s.kind {
        StepKind::Delay(d) => Kind::Delay(pb::DelayStep {
            duration: Some(duration(d.duration)),
            next: next(d.next.as_ref()),
        }),
        StepKind::HoldUntil(h) => Kind::HoldUntil(pb::HoldUntilStep {
            branches: h
                .branches
                .iter()
                .map(|b| pb::HoldBranch {
                    name: b.name.clone(),
                    event: b.event.clone(),
                    filters: filters(&b.filters),
                    next: next(b.next.as_ref()),
                    return_to_start: b.return_to_start,
                })
                .collect(),
            max_duration: Some(duration(h.max_duration)),
            timeout_next: next(h.timeout_next.as_ref()),
        }),
        StepKind::DataSplit(d) => Kind::DataSplit(pb::DataSplitStep {
            branches: d
                .branches
                .iter()
                .map(|b| pb::DataSplitBranch {
                    name: b.name.clone(),
                    conditions: b.conditions.iter().map(condition).collect(),
                    next: next(b.next.as_ref()),
                })
                .collect(),
            else_next: next(d.else_next.as_ref()),
        }),
        StepKind::RandomSplit(r) => Kind::RandomSplit(pb::RandomSplitStep {
            branches: r
                .branches
                .iter()
                .map(|b| pb::RandomBranch {
                    name: b.name.clone(),
                    percent: b.percent,
                    next: next(b.next.as_ref()),
                })
                .collect(),
            same_branch_on_reentry: r.same_branch_on_reentry,
        }),
        StepKind::Send(send) => {
            let spec = send_parts(&send.spec);
            Kind::Send(pb::SendStep {
                destination_id: spec.destination_id,
                action: spec.action,
                event_name: spec.event_name,
                traits: spec.traits,
                mapping: spec.mapping,
                next: next(send.next.as_ref()),
            })
        }
        StepKind::End => Kind::End(pb::EndStep {}),
    };
    pb::Step {
        key: s.key.clone(),
        name: s.name.clone(),
        kind: Some(kind),
    }
}

/// A send spec in the exit-send shape (the send step adds `next`).
fn send_parts(spec: &SendSpec) -> pb::ExitSend {
    pb::ExitSend {
        destination_id: spec.destination_id.clone(),
        action: Some(pb::SendAction {
            method: spec.action.method.clone(),
            path: spec.action.path.clone(),
        }),
        event_name: spec.event_name.clone().unwrap_or_default(),
        traits: spec.traits.clone(),
        mapping: spec.mapping.as_ref().map(json_to_struct),
    }
}

fn condition(c: &Condition) -> pb::Condition {
    let (kind, key) = match &c.subject {
        ConditionSubject::Trait(k) => (pb::ConditionKind::Trait, k),
        ConditionSubject::Audience(k) => (pb::ConditionKind::Audience, k),
        ConditionSubject::Context(k) => (pb::ConditionKind::Context, k),
    };
    let op = match c.op {
        ConditionOp::Equals => pb::ConditionOp::Equals,
        ConditionOp::NotEquals => pb::ConditionOp::NotEquals,
        ConditionOp::AnyOf => pb::ConditionOp::AnyOf,
        ConditionOp::Exists => pb::ConditionOp::Exists,
        ConditionOp::NotExists => pb::ConditionOp::NotExists,
        ConditionOp::Gt => pb::ConditionOp::Gt,
        ConditionOp::Gte => pb::ConditionOp::Gte,
        ConditionOp::Lt => pb::ConditionOp::Lt,
        ConditionOp::Lte => pb::ConditionOp::Lte,
        ConditionOp::Contains => pb::ConditionOp::Contains,
        ConditionOp::InAudience => pb::ConditionOp::InAudience,
        ConditionOp::NotInAudience => pb::ConditionOp::NotInAudience,
    };
    pb::Condition {
        kind: kind as i32,
        path_or_key: key.clone(),
        op: op as i32,
        value: c.value.as_ref().map(json_to_value),
    }
}

fn exit_rule(r: &ExitRule) -> pb::ExitRule {
    pb::ExitRule {
        event: r.event.clone(),
        filters: filters(&r.filters),
        match_unique_identifier: r.match_unique_identifier,
        send: r.send.as_ref().map(send_parts),
    }
}
