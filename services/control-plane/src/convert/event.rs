//! `journeys.v1.Event` → core [`Event`], with the defaults API.md promises: a missing
//! `message_id` is generated, a missing `timestamp` is the receive time.

use chrono::{DateTime, Utc};
use journeys_core::Problem;
use journeys_core::model::{Event, EventType};
use journeys_proto::v1 as pb;

use super::json::{from_timestamp, opt_struct_to_json};

/// Converts one event; `path` prefixes problem paths (e.g. `events[2].event`).
pub fn event(e: &pb::Event, now: DateTime<Utc>, path: &str) -> Result<Event, Vec<Problem>> {
    let mut problems = Vec::new();
    let kind = match pb::EventType::try_from(e.r#type) {
        Ok(pb::EventType::Unspecified | pb::EventType::Track) => EventType::Track,
        Ok(pb::EventType::Identify) => EventType::Identify,
        Ok(pb::EventType::Page) => EventType::Page,
        Ok(pb::EventType::Screen) => EventType::Screen,
        Ok(pb::EventType::Group) => EventType::Group,
        Ok(pb::EventType::Alias) => EventType::Alias,
        Err(_) => {
            problems.push(Problem::new(format!("{path}.type"), "unknown event type"));
            EventType::Track
        }
    };
    if e.user_id.is_empty() && e.anonymous_id.is_empty() {
        problems.push(Problem::new(
            format!("{path}.user_id"),
            "user_id or anonymous_id is required",
        ));
    }
    let name = match kind {
        EventType::Track => {
            if e.event.is_empty() {
                problems.push(Problem::new(
                    format!("{path}.event"),
                    "required for track events",
                ));
            }
            e.event.clone()
        }
        EventType::Identify => "identify".to_owned(),
        EventType::Page => "page".to_owned(),
        EventType::Screen => "screen".to_owned(),
        EventType::Group => "group".to_owned(),
        EventType::Alias => "alias".to_owned(),
    };
    let timestamp = match &e.timestamp {
        Some(t) => from_timestamp(t).unwrap_or_else(|| {
            problems.push(Problem::new(format!("{path}.timestamp"), "out of range"));
            now
        }),
        None => now,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let message_id = if e.message_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        e.message_id.clone()
    };
    Ok(Event {
        kind,
        message_id,
        user_id: Some(e.user_id.clone()).filter(|s| !s.is_empty()),
        anonymous_id: Some(e.anonymous_id.clone()).filter(|s| !s.is_empty()),
        event: name,
        properties: opt_struct_to_json(e.properties.as_ref()),
        traits: opt_struct_to_json(e.traits.as_ref()),
        context: opt_struct_to_json(e.context.as_ref()),
        timestamp,
    })
}
