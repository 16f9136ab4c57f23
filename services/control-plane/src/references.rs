//! Checks that a definition's references resolve: events in the catalog, destinations that
//! exist, audiences that exist and are active. Run by validation and enforced by publishing.
//!
//! Collecting the references (with the path of the field that names each) is pure; only
//! resolving them asks the store.

use std::collections::BTreeMap;

use journeys_core::Problem;
use journeys_core::model::{ConditionSubject, JourneyDefinition, StepKind};
use journeys_store::{Store, StoreError};

/// A name a definition refers to, and the path of the field that holds it.
type Reference<'a> = (String, &'a str);

/// Every unresolved reference, each with the path of the field that names it.
pub async fn check(store: &Store, def: &JourneyDefinition) -> Result<Vec<Problem>, StoreError> {
    let mut problems = check_events(store, def).await?;
    problems.extend(check_destinations(store, def).await?);
    problems.extend(check_audiences(store, def).await?);
    Ok(problems)
}

/// Event names (entry, hold branches, exit rules) by name, each with every path naming it.
fn event_references(def: &JourneyDefinition) -> BTreeMap<&str, Vec<String>> {
    let mut named: Vec<Reference<'_>> = vec![("entry.event".to_owned(), def.entry.event.as_str())];
    for (i, step) in def.steps.iter().enumerate() {
        if let StepKind::HoldUntil(h) = &step.kind {
            for (j, b) in h.branches.iter().enumerate() {
                named.push((
                    format!("steps[{i}].hold_until.branches[{j}].event"),
                    b.event.as_str(),
                ));
            }
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        named.push((format!("exit_rules[{i}].event"), rule.event.as_str()));
    }
    let mut events: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (path, name) in named {
        if !name.is_empty() {
            events.entry(name).or_default().push(path);
        }
    }
    events
}

/// Events missing from the catalog, found with one catalog query.
async fn check_events(store: &Store, def: &JourneyDefinition) -> Result<Vec<Problem>, StoreError> {
    let events = event_references(def);
    let names: Vec<String> = events.keys().map(|&name| name.to_owned()).collect();
    let missing = store.catalog().contains_all(&names).await?;
    Ok(missing_events(&events, &missing))
}

/// One problem per path naming an event of `missing`.
fn missing_events(events: &BTreeMap<&str, Vec<String>>, missing: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for name in missing {
        for path in events.get(name.as_str()).into_iter().flatten() {
            problems.push(Problem::new(
                path.clone(),
                format!(
                    "event '{name}' is not in the event catalog: send it once, or register it \
                     with CatalogService/RegisterEvent"
                ),
            ));
        }
    }
    problems
}

/// Destinations of send steps and exit sends.
fn destination_references(def: &JourneyDefinition) -> Vec<Reference<'_>> {
    let mut sends = Vec::new();
    for (i, step) in def.steps.iter().enumerate() {
        if let StepKind::Send(s) = &step.kind {
            sends.push((
                format!("steps[{i}].send.destination_id"),
                s.spec.destination_id.as_str(),
            ));
        }
    }
    for (i, rule) in def.exit_rules.iter().enumerate() {
        if let Some(s) = &rule.send {
            sends.push((
                format!("exit_rules[{i}].send.destination_id"),
                s.destination_id.as_str(),
            ));
        }
    }
    sends.retain(|(_, id)| !id.is_empty());
    sends
}

async fn check_destinations(
    store: &Store,
    def: &JourneyDefinition,
) -> Result<Vec<Problem>, StoreError> {
    let mut problems = Vec::new();
    for (path, id) in destination_references(def) {
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
    Ok(problems)
}

/// Audiences of the entry filter and of data-split audience conditions.
fn audience_references(def: &JourneyDefinition) -> Vec<Reference<'_>> {
    let mut audiences = Vec::new();
    if let Some(key) = &def.entry.audience_key {
        audiences.push(("entry.audience_key".to_owned(), key.as_str()));
    }
    for (i, step) in def.steps.iter().enumerate() {
        let StepKind::DataSplit(d) = &step.kind else {
            continue;
        };
        for (j, b) in d.branches.iter().enumerate() {
            for (k, c) in b.conditions.iter().enumerate() {
                if let ConditionSubject::Audience(key) = &c.subject {
                    audiences.push((
                        format!("steps[{i}].data_split.branches[{j}].conditions[{k}].path_or_key"),
                        key.as_str(),
                    ));
                }
            }
        }
    }
    audiences.retain(|(_, key)| !key.is_empty());
    audiences
}

async fn check_audiences(
    store: &Store,
    def: &JourneyDefinition,
) -> Result<Vec<Problem>, StoreError> {
    let mut problems = Vec::new();
    for (path, key) in audience_references(def) {
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
    destination_references(def)
        .iter()
        .any(|(_, used)| *used == id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use journeys_core::model::{
        EntryRule, EntryTrigger, ExitRule, HoldBranch, HoldUntilStep, SendAction, SendSpec,
        SendStep, Step,
    };

    use super::*;

    fn spec(destination_id: &str) -> SendSpec {
        SendSpec {
            destination_id: destination_id.to_owned(),
            action: SendAction::default(),
            event_name: None,
            traits: Vec::new(),
            mapping: None,
        }
    }

    fn branch(name: &str, event: &str) -> HoldBranch {
        HoldBranch {
            name: name.to_owned(),
            event: event.to_owned(),
            filters: Vec::new(),
            next: None,
            return_to_start: false,
        }
    }

    /// A journey entered on `Signed Up`, holding for `Order Completed` (or `Signed Up` again),
    /// sending to `crm`, exiting on `Unsubscribed` with a send to `audit`.
    fn definition() -> JourneyDefinition {
        JourneyDefinition {
            name: "Welcome".to_owned(),
            description: String::new(),
            entry: EntryTrigger {
                event: "Signed Up".to_owned(),
                audience_key: Some("vip".to_owned()),
                filters: Vec::new(),
            },
            entry_rule: EntryRule::EnterOnce,
            start_step: "wait".to_owned(),
            steps: vec![
                Step {
                    key: "wait".to_owned(),
                    name: String::new(),
                    kind: StepKind::HoldUntil(HoldUntilStep {
                        branches: vec![
                            branch("bought", "Order Completed"),
                            branch("again", "Signed Up"),
                        ],
                        max_duration: Duration::from_secs(3600),
                        timeout_next: None,
                    }),
                },
                Step {
                    key: "send".to_owned(),
                    name: String::new(),
                    kind: StepKind::Send(SendStep {
                        spec: spec("crm"),
                        next: None,
                    }),
                },
            ],
            exit_rules: vec![ExitRule {
                event: "Unsubscribed".to_owned(),
                filters: Vec::new(),
                match_unique_identifier: false,
                send: Some(spec("audit")),
            }],
        }
    }

    #[test]
    fn catalog_check_names_every_field_using_a_missing_event() {
        let def = definition();
        let events = event_references(&def);
        assert_eq!(
            events.keys().copied().collect::<Vec<_>>(),
            ["Order Completed", "Signed Up", "Unsubscribed"]
        );
        let problems = missing_events(&events, &["Signed Up".to_owned()]);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["entry.event", "steps[0].hold_until.branches[1].event"]
        );
        assert!(
            problems[0]
                .message
                .starts_with("event 'Signed Up' is not in the event catalog")
        );
        assert!(missing_events(&events, &[]).is_empty());
    }

    #[test]
    fn destinations_and_audiences_are_collected_with_paths() {
        let def = definition();
        assert_eq!(
            destination_references(&def),
            [
                ("steps[1].send.destination_id".to_owned(), "crm"),
                ("exit_rules[0].send.destination_id".to_owned(), "audit"),
            ]
        );
        assert!(uses_destination(&def, "audit"));
        assert!(!uses_destination(&def, "other"));
        assert_eq!(
            audience_references(&def),
            [("entry.audience_key".to_owned(), "vip")]
        );
    }
}
