//! Checks that a definition's references resolve: events in the catalog, destinations that
//! exist, audiences that exist and are active. Run by `ValidateJourney` and `PublishJourney`.

use std::collections::BTreeMap;

use journeys_core::Problem;
use journeys_core::model::{ConditionSubject, JourneyDefinition, StepKind};
use journeys_store::{Store, StoreError};

/// Every unresolved reference, each with the path of the field that names it.
pub async fn check(store: &Store, def: &JourneyDefinition) -> Result<Vec<Problem>, StoreError> {
    let mut problems = Vec::new();

    // Events: entry, hold branches, exit rules. One catalog query for all of them.
    let mut events: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut note = |name: &str, path: String| {
        if !name.is_empty() {
            events.entry(name.to_owned()).or_default().push(path);
        }
    };
    note(&def.entry.event, "entry.event".to_owned());
    for (i, step) in def.steps.iter().enumerate() {
        if let StepKind::HoldUntil(h) = &step.kind {
            for (j, b) in h.branches.iter().enumerate() {
                note(
                    &b.event,
                    format!("steps[{i}].hold_until.branches[{j}].event"),
                );
            }
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        note(&rule.event, format!("exit_rules[{i}].event"));
    }
    let names: Vec<String> = events.keys().cloned().collect();
    for missing in store.catalog().contains_all(&names).await? {
        for path in events.get(missing.as_str()).into_iter().flatten() {
            problems.push(Problem::new(
                path.clone(),
                format!(
                    "event '{missing}' is not in the event catalog: send it once, or register it \
                     with CatalogService/RegisterEvent"
                ),
            ));
        }
    }

    // Destinations of send steps and exit sends.
    let mut sends: Vec<(String, &str)> = Vec::new();
    for (i, step) in def.steps.iter().enumerate() {
        if let StepKind::Send(s) = &step.kind {
            sends.push((
                format!("steps[{i}].send.destination_id"),
                &s.spec.destination_id,
            ));
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        if let Some(s) = &rule.send {
            sends.push((
                format!("exit_rules[{i}].send.destination_id"),
                &s.destination_id,
            ));
        }
    }
    for (path, id) in sends {
        if id.is_empty() {
            continue;
        }
        match store.destinations().get(id).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                problems.push(Problem::new(
                    path,
                    format!("destination '{id}' does not exist"),
                ));
            }
            Err(e) => return Err(e),
        }
    }

    // Audiences: the entry filter and data-split audience conditions.
    let mut audiences: Vec<(String, &str)> = Vec::new();
    if let Some(key) = &def.entry.audience_key {
        audiences.push(("entry.audience_key".to_owned(), key));
    }
    for (i, step) in def.steps.iter().enumerate() {
        if let StepKind::DataSplit(d) = &step.kind {
            for (j, b) in d.branches.iter().enumerate() {
                for (k, c) in b.conditions.iter().enumerate() {
                    if let ConditionSubject::Audience(key) = &c.subject {
                        audiences.push((
                            format!(
                                "steps[{i}].data_split.branches[{j}].conditions[{k}].path_or_key"
                            ),
                            key,
                        ));
                    }
                }
            }
        }
    }
    for (path, key) in audiences {
        if key.is_empty() {
            continue;
        }
        match store.audiences().get(key).await {
            Ok(a) if a.active => {}
            Ok(_) => problems.push(Problem::new(path, format!("audience '{key}' is archived"))),
            Err(StoreError::NotFound { .. }) => {
                problems.push(Problem::new(
                    path,
                    format!("audience '{key}' does not exist"),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(problems)
}

/// Whether `def` sends to destination `id` (a step or an exit send).
pub fn uses_destination(def: &JourneyDefinition, id: &str) -> bool {
    def.steps.iter().any(|s| match &s.kind {
        StepKind::Send(send) => send.spec.destination_id == id,
        _ => false,
    }) || def
        .exit_rules
        .iter()
        .any(|r| r.send.as_ref().is_some_and(|s| s.destination_id == id))
}
