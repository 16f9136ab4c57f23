//! Requests of `PreviewPayload`, `SendTestEvent` and `SimulateJourney` → core inputs, and
//! simulation results → responses.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use journeys_core::Problem;
use journeys_core::machine::Journey;
use journeys_core::model::{Event, Json};
use journeys_core::simulate::{ProfileSnapshot, SimulatedEvent, Simulation, SimulationResult};
use journeys_proto::convert::event::event;
use journeys_proto::convert::json::{
    NonFiniteNumber, from_timestamp, json_to_struct, opt_struct_to_json, timestamp,
};
use journeys_proto::v1 as pb;

use crate::api::simulate::{MAX_SIMULATED_EVENTS, PREVIEW_USER, too_many_events};
use crate::error::{Result, ServiceError};

/// The sample entry event and traits of a preview: a missing profile is [`PREVIEW_USER`], a
/// missing track name is the journey's entry event.
pub fn sample(
    journey: &Journey,
    sample: Option<&pb::Event>,
    traits: Option<&prost_types::Struct>,
    now: DateTime<Utc>,
) -> Result<(Event, Json)> {
    let mut sample = sample.cloned().unwrap_or_default();
    if sample.user_id.is_empty() && sample.anonymous_id.is_empty() {
        PREVIEW_USER.clone_into(&mut sample.user_id);
    }
    if sample.event.is_empty() && sample.r#type <= pb::EventType::Track as i32 {
        sample.event.clone_from(&journey.definition().entry.event);
    }
    let sample = event(&sample, now, "sample_event")
        .map_err(|p| ServiceError::invalid("sample_event", p))?;
    let traits = opt_struct_to_json(traits, "traits").map_err(non_finite)?;
    Ok((sample, traits))
}

/// The samples of the other context events of a preview (`sample_events`), each for the
/// entry sample's profile unless it names its own; every bad one is reported with its path.
pub fn samples(entry: &Event, others: &[pb::Event], now: DateTime<Utc>) -> Result<Vec<Event>> {
    let mut problems = Vec::new();
    let mut events = Vec::with_capacity(others.len());
    for (i, other) in others.iter().enumerate() {
        let path = format!("sample_events[{i}]");
        if other.event.is_empty() && other.r#type <= pb::EventType::Track as i32 {
            problems.push(Problem::new(
                format!("{path}.event"),
                "required: the name of the event whose sample this is",
            ));
            continue;
        }
        let mut other = other.clone();
        if other.user_id.is_empty() && other.anonymous_id.is_empty() {
            other.user_id = entry.profile_id().unwrap_or(PREVIEW_USER).to_owned();
        }
        match event(&other, now, &path) {
            Ok(e) => events.push(e),
            Err(p) => problems.extend(p),
        }
    }
    ServiceError::check("sample_events", problems)?;
    Ok(events)
}

fn non_finite(e: NonFiniteNumber) -> ServiceError {
    ServiceError::invalid_field(e.field, NonFiniteNumber::DESCRIPTION)
}

fn snapshot(p: &pb::SimulatedProfile, path: &str, problems: &mut Vec<Problem>) -> ProfileSnapshot {
    let traits =
        opt_struct_to_json(p.traits.as_ref(), &format!("{path}.traits")).unwrap_or_else(|e| {
            problems.push(Problem::new(e.field, NonFiniteNumber::DESCRIPTION));
            Json::Null
        });
    ProfileSnapshot {
        traits,
        audiences: p.audiences.iter().cloned().collect(),
    }
}

/// Converts the request's events and profiles, reporting every bad one with its path.
pub fn simulation(req: &pb::SimulateJourneyRequest, now: DateTime<Utc>) -> Result<Simulation> {
    if req.events.len() > MAX_SIMULATED_EVENTS {
        return Err(too_many_events());
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
            Ok(mut ev) => {
                ev.source_id = Some(e.source_id.clone()).filter(|s| !s.is_empty());
                events.push(SimulatedEvent { event: ev, at });
            }
            Err(p) => problems.extend(p),
        }
    }
    let mut profiles = BTreeMap::new();
    for (i, p) in req.profiles.iter().enumerate() {
        if p.user_id.is_empty() {
            problems.push(Problem::new(format!("profiles[{i}].user_id"), "required"));
        } else {
            let snapshot = snapshot(p, &format!("profiles[{i}]"), &mut problems);
            profiles.insert(p.user_id.clone(), snapshot);
        }
    }
    let default_profile = req
        .profile
        .as_ref()
        .map(|p| snapshot(p, "profile", &mut problems))
        .unwrap_or_default();
    ServiceError::check("simulation", problems)?;
    Ok(Simulation {
        events,
        default_profile,
        profiles,
        until: req.until.as_ref().and_then(from_timestamp),
        ..Simulation::default()
    })
}

/// The response for a simulation's result.
pub fn response(result: &SimulationResult) -> pb::SimulateJourneyResponse {
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
