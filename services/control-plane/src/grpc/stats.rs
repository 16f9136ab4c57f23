//! `GetJourneyStats`: the store's counts laid over the journey's definition, so every step,
//! send, branch (a hold-until's timeout and a data split's "everyone else" included) and exit
//! rule is listed, with zeros when nothing happened yet. Hourly buckets list only what has
//! counts. `GetDestinationStats`: a destination's deliveries by the hour.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use journeys_core::machine::exit_send_key;
use journeys_core::model::{JourneyDefinition, StepKind};
use journeys_proto::v1 as pb;
use journeys_store::{DeliveryHour, JourneyStats};

use journeys_proto::convert::json::timestamp;

use crate::error::ServiceError;

/// The `GetJourneyStats` response for `def` with the store's `counts`.
pub fn response(def: &JourneyDefinition, counts: &JourneyStats) -> pb::GetJourneyStatsResponse {
    let laid = lay_over(def, counts, true);
    pb::GetJourneyStatsResponse {
        steps: laid.steps,
        sends: laid.sends,
        branches: laid.branches,
        entries: counts.entries,
        skipped: laid.skipped,
        exits: laid.exits,
        hours: counts
            .hours
            .iter()
            .map(|hour| {
                let laid = lay_over(def, &hour.stats, false);
                pb::HourlyJourneyStats {
                    start_time: Some(timestamp(hour.start)),
                    entries: hour.stats.entries,
                    steps: laid.steps,
                    sends: laid.sends,
                    branches: laid.branches,
                    skipped: laid.skipped,
                    exits: laid.exits,
                }
            })
            .collect(),
    }
}

/// The `GetDestinationStats` response for the store's hourly delivery counts.
pub fn destination_response(hours: &[DeliveryHour]) -> pb::GetDestinationStatsResponse {
    let mut out = pb::GetDestinationStatsResponse::default();
    for hour in hours {
        out.sent += hour.sent;
        out.failed += hour.failed;
        out.dead_lettered += hour.dead_lettered;
        out.hours.push(pb::DeliveryHourStats {
            start_time: Some(timestamp(hour.start)),
            sent: hour.sent,
            failed: hour.failed,
            dead_lettered: hour.dead_lettered,
        });
    }
    out
}

/// The counts of `counts` as response lists.
struct Laid {
    steps: Vec<pb::StepStats>,
    sends: Vec<pb::SendStats>,
    branches: Vec<pb::BranchStats>,
    skipped: Vec<pb::SkipStats>,
    exits: Vec<pb::ExitStats>,
}

/// Lays `counts` over the definition: with `all`, every step, send, branch and exit rule of
/// `def` is listed (zeros where nothing was counted); without, only those with counts (an
/// hourly bucket).
fn lay_over(def: &JourneyDefinition, counts: &JourneyStats, all: bool) -> Laid {
    let steps: HashMap<&str, _> = counts
        .steps
        .iter()
        .map(|s| (s.step_key.as_str(), s))
        .collect();
    let branches: HashMap<(&str, &str, bool), i64> = counts
        .branches
        .iter()
        .map(|b| {
            (
                (b.step_key.as_str(), b.branch_name.as_str(), b.timed_out),
                b.taken,
            )
        })
        .collect();

    let mut out = Laid {
        steps: Vec::new(),
        sends: Vec::new(),
        branches: Vec::new(),
        skipped: counts
            .entries_skipped
            .iter()
            .map(|(reason, n)| pb::SkipStats {
                reason: reason.clone(),
                count: *n,
            })
            .collect(),
        exits: Vec::new(),
    };
    let mut send_keys: Vec<String> = Vec::new();
    for step in &def.steps {
        if let Some(c) = steps.get(step.key.as_str()) {
            out.steps.push(pb::StepStats {
                step_key: step.key.clone(),
                entered: c.entered,
                waiting: c.waiting,
                completed: c.completed,
                exited: c.exited,
                failed: c.failed,
            });
        } else if all {
            out.steps.push(pb::StepStats {
                step_key: step.key.clone(),
                ..pb::StepStats::default()
            });
        }
        if matches!(step.kind, StepKind::Send(_)) {
            send_keys.push(step.key.clone());
        }
        let names = branches_of(&step.kind);
        for (name, everyone_else, timed_out) in names {
            let taken = branches.get(&(step.key.as_str(), name, timed_out)).copied();
            if taken.is_some() || all {
                out.branches.push(pb::BranchStats {
                    step_key: step.key.clone(),
                    branch_name: name.to_owned(),
                    taken: taken.unwrap_or(0),
                    everyone_else,
                    timed_out,
                });
            }
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        if rule.send.is_some() {
            send_keys.push(exit_send_key(i));
        }
    }
    out.exits = exits(def, counts, all);
    out.sends = sends(send_keys, counts, all);
    out
}

/// Delivery counts of each send in `keys` (all of them with `all`, else those with counts).
fn sends(keys: Vec<String>, counts: &JourneyStats, all: bool) -> Vec<pb::SendStats> {
    let sends: HashMap<&str, _> = counts
        .sends
        .iter()
        .map(|s| (s.step_key.as_str(), s))
        .collect();
    keys.into_iter()
        .filter_map(|key| match sends.get(key.as_str()) {
            Some(c) => Some(pb::SendStats {
                sent: c.sent,
                failed: c.failed,
                dead_lettered: c.dead_lettered,
                step_key: key,
            }),
            None => all.then(|| pb::SendStats {
                step_key: key,
                ..pb::SendStats::default()
            }),
        })
        .collect()
}

/// `(name, everyone else, timed out)` of each branch a step has: its named branches, a
/// hold-until's timeout and a data split's "everyone else".
fn branches_of(kind: &StepKind) -> Vec<(&str, bool, bool)> {
    let (names, extra): (Vec<&str>, Option<(&str, bool, bool)>) = match kind {
        StepKind::HoldUntil(h) => (
            h.branches.iter().map(|b| b.name.as_str()).collect(),
            Some(("", false, true)),
        ),
        StepKind::DataSplit(d) => (
            d.branches.iter().map(|b| b.name.as_str()).collect(),
            Some(("", true, false)),
        ),
        StepKind::RandomSplit(r) => (r.branches.iter().map(|b| b.name.as_str()).collect(), None),
        _ => (Vec::new(), None),
    };
    names
        .into_iter()
        .map(|name| (name, false, false))
        .chain(extra)
        .collect()
}

/// Exits per exit rule of `def` (all of them with `all`, else those with counts), then per
/// other reason counted.
fn exits(def: &JourneyDefinition, counts: &JourneyStats, all: bool) -> Vec<pb::ExitStats> {
    let mut out = Vec::new();
    for (i, rule) in def.exit_rules.iter().enumerate() {
        let count = counts.exits.get(&format!("exit_rule:{i}")).copied();
        if count.is_some() || all {
            out.push(pb::ExitStats {
                reason: "exit_rule".into(),
                exit_rule_index: i32::try_from(i).unwrap_or(i32::MAX),
                event: rule.event.clone(),
                count: count.unwrap_or(0),
            });
        }
    }
    for (reason, n) in &counts.exits {
        if !reason.starts_with("exit_rule:") {
            out.push(pb::ExitStats {
                reason: reason.clone(),
                count: *n,
                ..pb::ExitStats::default()
            });
        }
    }
    out
}

/// The store range of a request's optional bounds.
///
/// # Errors
/// INVALID_ARGUMENT naming `from` or `to` when one is not a valid timestamp, or
/// the end is not after the start.
pub fn range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<journeys_store::StatsRange, ServiceError> {
    let at = |t: &prost_types::Timestamp, field: &str| {
        u32::try_from(t.nanos)
            .ok()
            .and_then(|nanos| DateTime::<Utc>::from_timestamp(t.seconds, nanos))
            .ok_or_else(|| ServiceError::invalid_field(field, "not a valid timestamp"))
    };
    let start = start.map(|t| at(t, "from")).transpose()?;
    let end = end.map(|t| at(t, "to")).transpose()?;
    if let (Some(s), Some(e)) = (start, end)
        && e <= s
    {
        return Err(ServiceError::invalid_field("to", "must be after from"));
    }
    Ok(journeys_store::StatsRange { start, end })
}
