//! `GetJourneyStats`: the store's counts laid over the journey's definition, so every step,
//! send and named branch is listed (with zeros when nothing happened yet). Hold timeouts and a
//! data split's "everyone else" are not named branches: the timeout step's and the else step's
//! `entered` counts show them.

use std::collections::HashMap;

use journeys_core::machine::exit_send_key;
use journeys_core::model::{JourneyDefinition, StepKind};
use journeys_proto::v1 as pb;
use journeys_store::JourneyStats;

/// The `GetJourneyStats` response for `def` with the store's `counts`.
pub fn response(def: &JourneyDefinition, counts: &JourneyStats) -> pb::GetJourneyStatsResponse {
    let steps: HashMap<&str, _> = counts
        .steps
        .iter()
        .map(|s| (s.step_key.as_str(), s))
        .collect();
    let sends: HashMap<&str, _> = counts
        .sends
        .iter()
        .map(|s| (s.step_key.as_str(), s))
        .collect();
    let branches: HashMap<(&str, &str), i64> = counts
        .branches
        .iter()
        .map(|b| ((b.step_key.as_str(), b.branch_name.as_str()), b.taken))
        .collect();

    let mut out = pb::GetJourneyStatsResponse::default();
    let mut send_keys: Vec<String> = Vec::new();
    for step in &def.steps {
        let c = steps.get(step.key.as_str());
        out.steps.push(pb::StepStats {
            step_key: step.key.clone(),
            entered: c.map_or(0, |c| c.entered),
            waiting: c.map_or(0, |c| c.waiting),
            completed: c.map_or(0, |c| c.completed),
            exited: c.map_or(0, |c| c.exited),
        });
        let names: Vec<&str> = match &step.kind {
            StepKind::HoldUntil(h) => h.branches.iter().map(|b| b.name.as_str()).collect(),
            StepKind::DataSplit(d) => d.branches.iter().map(|b| b.name.as_str()).collect(),
            StepKind::RandomSplit(r) => r.branches.iter().map(|b| b.name.as_str()).collect(),
            StepKind::Send(_) => {
                send_keys.push(step.key.clone());
                Vec::new()
            }
            _ => Vec::new(),
        };
        for name in names {
            out.branches.push(pb::BranchStats {
                step_key: step.key.clone(),
                branch_name: name.to_owned(),
                taken: branches
                    .get(&(step.key.as_str(), name))
                    .copied()
                    .unwrap_or(0),
            });
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        if rule.send.is_some() {
            send_keys.push(exit_send_key(i));
        }
    }
    for key in send_keys {
        let c = sends.get(key.as_str());
        out.sends.push(pb::SendStats {
            sent: c.map_or(0, |c| c.sent),
            failed: c.map_or(0, |c| c.failed),
            dead_lettered: c.map_or(0, |c| c.dead_lettered),
            step_key: key,
        });
    }
    out
}
