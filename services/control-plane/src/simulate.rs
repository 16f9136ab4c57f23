//! `PreviewPayload` and `SimulateJourney`: the core's pure renderer and simulator behind the
//! control plane. Nothing is stored or sent.

use chrono::{DateTime, Utc};
use journeys_core::Problem;
use journeys_core::machine::Journey;
use journeys_core::machine::SendRequest;
use journeys_core::model::{JourneyDefinition, JourneyMeta};
use journeys_core::payload::{PreviewError, preview_send};
use journeys_core::simulate::{
    ProfileSnapshot, SimulatedEvent, Simulation, SimulationResult, simulate,
};
use journeys_proto::v1 as pb;
use journeys_runtime::error::ApiError;

use crate::convert::event::event;
use crate::convert::json::{from_timestamp, json_to_struct, opt_struct_to_json, timestamp};
use crate::errors;

/// Most events one simulation may replay.
pub const MAX_SIMULATED_EVENTS: usize = 10_000;

/// The profile id a preview uses when the sample event names none.
const PREVIEW_USER: &str = "preview-user";

pub fn core_journey(meta: JourneyMeta, def: JourneyDefinition) -> Journey {
    Journey::new(meta, def)
}

/// Renders send step `step_key` of `journey` for a sample entry event and traits: exactly
/// what would be queued (destination, method, path, payload).
pub fn render_sample(
    journey: &Journey,
    step_key: &str,
    sample: Option<&pb::Event>,
    traits: Option<&prost_types::Struct>,
    now: DateTime<Utc>,
) -> Result<SendRequest, ApiError> {
    if step_key.is_empty() {
        return Err(ApiError::invalid_field("step_key", "required"));
    }
    let mut sample = sample.cloned().unwrap_or_default();
    if sample.user_id.is_empty() && sample.anonymous_id.is_empty() {
        PREVIEW_USER.clone_into(&mut sample.user_id);
    }
    if sample.event.is_empty() && sample.r#type <= pb::EventType::Track as i32 {
        sample.event.clone_from(&journey.definition().entry.event);
    }
    let sample =
        event(&sample, now, "sample_event").map_err(|p| errors::invalid("sample_event", &p))?;
    let traits = opt_struct_to_json(traits);
    preview_send(journey, step_key, &sample, &traits, now).map_err(|e| match e {
        PreviewError::NotASendStep(key) => ApiError::invalid_field(
            "step_key",
            format!("'{key}' is not a send step of this journey"),
        ),
        PreviewError::Payload(e) => {
            ApiError::FailedPrecondition(format!("the payload cannot be rendered: {e}"))
        }
    })
}

fn snapshot(p: &pb::SimulatedProfile) -> ProfileSnapshot {
    ProfileSnapshot {
        traits: opt_struct_to_json(p.traits.as_ref()),
        audiences: p.audiences.iter().cloned().collect(),
    }
}

/// Converts the request's events and profiles, reporting every bad event with its path.
pub fn simulation(
    req: &pb::SimulateJourneyRequest,
    now: DateTime<Utc>,
) -> Result<Simulation, ApiError> {
    if req.events.len() > MAX_SIMULATED_EVENTS {
        return Err(ApiError::invalid_field(
            "events",
            format!("at most {MAX_SIMULATED_EVENTS} events per simulation"),
        ));
    }
    let mut problems: Vec<Problem> = Vec::new();
    let mut events = Vec::with_capacity(req.events.len());
    for (i, e) in req.events.iter().enumerate() {
        let path = format!("events[{i}]");
        let at = e.at.as_ref().and_then(from_timestamp);
        let Some(raw) = &e.event else {
            problems.push(Problem::new(format!("{path}.event"), "required"));
            continue;
        };
        // An event without a timestamp happens at its virtual time (or now).
        match event(raw, at.unwrap_or(now), &format!("{path}.event")) {
            Ok(ev) => events.push(SimulatedEvent { event: ev, at }),
            Err(p) => problems.extend(p),
        }
    }
    let mut profiles = std::collections::BTreeMap::new();
    for (i, p) in req.profiles.iter().enumerate() {
        if p.user_id.is_empty() {
            problems.push(Problem::new(format!("profiles[{i}].user_id"), "required"));
        } else {
            profiles.insert(p.user_id.clone(), snapshot(p));
        }
    }
    errors::check("simulation", &problems)?;
    Ok(Simulation {
        events,
        default_profile: req.profile.as_ref().map(snapshot).unwrap_or_default(),
        profiles,
        until: req.until.as_ref().and_then(from_timestamp),
        ..Simulation::default()
    })
}

pub fn run(journey: &Journey, sim: &Simulation) -> pb::SimulateJourneyResponse {
    response(&simulate(journey, sim))
}

fn response(result: &SimulationResult) -> pb::SimulateJourneyResponse {
    pb::SimulateJourneyResponse {
        instances: result
            .instances
            .iter()
            .map(|i| pb::SimulatedInstance {
                instance_id: i.instance_id.clone(),
                user_id: i.profile_id.clone(),
                unique_value: i.unique_value.clone().unwrap_or_default(),
                path: i
                    .path
                    .iter()
                    .map(|p| pb::PathEntry {
                        step_key: p.step_key.clone(),
                        at: Some(timestamp(p.at)),
                        cause: p.cause.clone(),
                    })
                    .collect(),
                sends: i
                    .sends
                    .iter()
                    .map(|s| pb::SimulatedSend {
                        step_key: s.step_key.clone(),
                        destination_id: s.destination_id.clone(),
                        at: Some(timestamp(s.at)),
                        payload: Some(json_to_struct(&s.payload)),
                        message_id: s.message_id.clone(),
                    })
                    .collect(),
                final_state: i.final_state.as_str().to_owned(),
                final_step: i.final_step.clone(),
            })
            .collect(),
        skipped: result
            .skipped
            .iter()
            .map(|s| pb::SkippedEntry {
                message_id: s.message_id.clone(),
                user_id: s.profile_id.clone(),
                reason: s.reason.as_str().to_owned(),
            })
            .collect(),
    }
}
