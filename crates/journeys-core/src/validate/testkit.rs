//! Concise builders for valid journeys, shared by the validation tests.

use std::time::Duration;

use crate::model::{
    DelayStep, EntryRule, EntryTrigger, FilterMatch, HoldBranch, HoldUntilStep, JourneyDefinition,
    Json, PropertyFilter, SendAction, SendSpec, SendStep, Step, StepKind,
};
use crate::problem::Problem;

use super::{ValidationOptions, validate};

/// A valid journey around `steps`, starting at the first one: entered on `signed_up`, once per
/// `signup_id`.
pub fn journey(steps: Vec<Step>) -> JourneyDefinition {
    JourneyDefinition {
        name: "Test journey".into(),
        description: String::new(),
        entry: EntryTrigger {
            event: "signed_up".into(),
            audience_key: None,
            filters: Vec::new(),
        },
        entry_rule: EntryRule::ReenterEveryTime {
            unique_identifier: "signup_id".into(),
        },
        start_step: steps.first().map(|s| s.key.clone()).unwrap_or_default(),
        steps,
        exit_rules: Vec::new(),
    }
}

fn step(key: &str, kind: StepKind) -> Step {
    Step {
        key: key.into(),
        name: format!("Step {key}"),
        kind,
    }
}

fn next(key: Option<&str>) -> Option<String> {
    key.map(str::to_owned)
}

pub fn send_spec(destination_id: &str) -> SendSpec {
    SendSpec {
        destination_id: destination_id.into(),
        action: SendAction::default(),
        event_name: None,
        traits: Vec::new(),
        mapping: None,
    }
}

pub fn send(key: &str, to: Option<&str>) -> Step {
    step(
        key,
        StepKind::Send(SendStep {
            spec: send_spec("webhook_1"),
            next: next(to),
        }),
    )
}

pub fn delay(key: &str, secs: u64, to: Option<&str>) -> Step {
    step(
        key,
        StepKind::Delay(DelayStep {
            duration: Duration::from_secs(secs),
            next: next(to),
        }),
    )
}

pub fn hold(key: &str, branches: Vec<HoldBranch>, max: Duration, timeout: Option<&str>) -> Step {
    step(
        key,
        StepKind::HoldUntil(HoldUntilStep {
            branches,
            max_duration: max,
            timeout_next: next(timeout),
        }),
    )
}

pub fn branch(name: &str, event: &str, to: Option<&str>) -> HoldBranch {
    HoldBranch {
        name: name.into(),
        event: event.into(),
        filters: Vec::new(),
        next: next(to),
        return_to_start: false,
    }
}

pub trait WithFilters {
    fn with_filters(self, filters: Vec<PropertyFilter>) -> Self;
}

impl WithFilters for HoldBranch {
    fn with_filters(mut self, filters: Vec<PropertyFilter>) -> Self {
        self.filters = filters;
        self
    }
}

pub fn eq(property: &str, value: Json) -> PropertyFilter {
    PropertyFilter {
        property: property.into(),
        matcher: FilterMatch::Equals(value),
    }
}

pub fn any_of(property: &str, values: Vec<Json>) -> PropertyFilter {
    PropertyFilter {
        property: property.into(),
        matcher: FilterMatch::AnyOf(values),
    }
}

/// Problems under the default options.
pub fn problems(def: &JourneyDefinition) -> Vec<Problem> {
    validate(def, &ValidationOptions::default())
}

/// Paths of the problems under the default options, in report order.
pub fn paths(def: &JourneyDefinition) -> Vec<String> {
    problems(def).into_iter().map(|p| p.path).collect()
}
