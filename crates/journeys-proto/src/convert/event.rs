//! `journeys.v1.Event` → core [`Event`].
//!
//! [`event_parts`] is the one reading of the wire message (type enum, `Struct`s, timestamp):
//! ingest (which adds its size and length limits and Segment's rules) and the control plane
//! (samples and simulations) both start from it, so a value is read the same way wherever it
//! is sent. [`event`] adds the defaults API.md promises for samples and simulations: a missing
//! `message_id` is generated, a missing `timestamp` is `now`.

use chrono::{DateTime, Utc};
use journeys_core::Problem;
use journeys_core::model::{Event, EventType, Json};
use serde_json::Map;

use super::json::{NonFiniteNumber, from_timestamp, struct_to_map};
use crate::v1 as pb;

/// The core type of a wire type; `None` for `EVENT_TYPE_UNSPECIFIED`.
#[must_use]
pub fn event_type(kind: pb::EventType) -> Option<EventType> {
    match kind {
        pb::EventType::Unspecified => None,
        pb::EventType::Track => Some(EventType::Track),
        pb::EventType::Identify => Some(EventType::Identify),
        pb::EventType::Page => Some(EventType::Page),
        pb::EventType::Screen => Some(EventType::Screen),
        pb::EventType::Group => Some(EventType::Group),
        pb::EventType::Alias => Some(EventType::Alias),
    }
}

/// The wire type of a core type.
#[must_use]
pub fn proto_event_type(kind: EventType) -> pb::EventType {
    match kind {
        EventType::Track => pb::EventType::Track,
        EventType::Identify => pb::EventType::Identify,
        EventType::Page => pb::EventType::Page,
        EventType::Screen => pb::EventType::Screen,
        EventType::Group => pb::EventType::Group,
        EventType::Alias => pb::EventType::Alias,
    }
}

/// The name a non-track event gets (`identify`, `page`, …).
#[must_use]
pub fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Track => "track",
        EventType::Identify => "identify",
        EventType::Page => "page",
        EventType::Screen => "screen",
        EventType::Group => "group",
        EventType::Alias => "alias",
    }
}

/// A wire event read into domain values, before any rule about which fields are required.
#[derive(Debug, Clone, PartialEq)]
pub struct EventParts {
    /// `None` when the type is unspecified (callers pick the default).
    pub kind: Option<EventType>,
    pub message_id: String,
    pub user_id: String,
    pub anonymous_id: String,
    pub event: String,
    pub properties: Map<String, Json>,
    pub traits: Map<String, Json>,
    pub context: Map<String, Json>,
    /// `None` when absent.
    pub timestamp: Option<DateTime<Utc>>,
}

/// Why a wire event could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventPartsError {
    /// `type` holds a number that is not an `EventType`.
    #[error("{field}: {value} is not an EventType")]
    UnknownType { field: String, value: i32 },
    /// A property, trait or context value is NaN or infinite.
    #[error(transparent)]
    NonFinite(#[from] NonFiniteNumber),
    /// `timestamp` is outside what a UTC time can hold.
    #[error("{field}: is out of range")]
    TimestampOutOfRange { field: String },
}

impl EventPartsError {
    /// Path of the offending field.
    #[must_use]
    pub fn field(&self) -> &str {
        match self {
            Self::UnknownType { field, .. } | Self::TimestampOutOfRange { field } => field,
            Self::NonFinite(e) => &e.field,
        }
    }

    /// What is wrong, without the path.
    #[must_use]
    pub fn description(&self) -> String {
        match self {
            Self::UnknownType { value, .. } => format!("{value} is not an EventType"),
            Self::NonFinite(_) => NonFiniteNumber::DESCRIPTION.to_owned(),
            Self::TimestampOutOfRange { .. } => "is out of range".to_owned(),
        }
    }
}

/// Reads `e`; `prefix` is the event's path in the request (`events[3].` or empty).
///
/// # Errors
/// An unknown type, a non-finite number or an out-of-range timestamp, with its path.
pub fn event_parts(e: pb::Event, prefix: &str) -> Result<EventParts, EventPartsError> {
    let field = |name: &str| format!("{prefix}{name}");
    let kind = pb::EventType::try_from(e.r#type)
        .map(event_type)
        .map_err(|_| EventPartsError::UnknownType {
            field: field("type"),
            value: e.r#type,
        })?;
    let map = |s: Option<prost_types::Struct>, name: &str| {
        s.map_or_else(|| Ok(Map::new()), |s| struct_to_map(&s, &field(name)))
    };
    let properties = map(e.properties, "properties")?;
    let traits = map(e.traits, "traits")?;
    let context = map(e.context, "context")?;
    let timestamp = e
        .timestamp
        .map(|t| {
            from_timestamp(&t).ok_or_else(|| EventPartsError::TimestampOutOfRange {
                field: field("timestamp"),
            })
        })
        .transpose()?;
    Ok(EventParts {
        kind,
        message_id: e.message_id,
        user_id: e.user_id,
        anonymous_id: e.anonymous_id,
        event: e.event,
        properties,
        traits,
        context,
        timestamp,
    })
}

/// Converts one sample or simulated event; `path` prefixes problem paths (e.g.
/// `events[2].event`). An unspecified type is track.
///
/// # Errors
/// Every problem found: the reading's, a missing profile id, a track event without a name.
pub fn event(e: &pb::Event, now: DateTime<Utc>, path: &str) -> Result<Event, Vec<Problem>> {
    let mut problems = Vec::new();
    let parts = event_parts(e.clone(), &format!("{path}."))
        .map_err(|err| problems.push(Problem::new(err.field(), err.description())))
        .ok();
    if e.user_id.is_empty() && e.anonymous_id.is_empty() {
        problems.push(Problem::new(
            format!("{path}.user_id"),
            "user_id or anonymous_id is required",
        ));
    }
    // An unknown type was reported above; the rest is checked as for track.
    let kind = parts
        .as_ref()
        .and_then(|p| p.kind)
        .unwrap_or(EventType::Track);
    if kind == EventType::Track && e.event.is_empty() {
        problems.push(Problem::new(
            format!("{path}.event"),
            "required for track events",
        ));
    }
    let Some(parts) = parts.filter(|_| problems.is_empty()) else {
        return Err(problems);
    };
    let name = if kind == EventType::Track {
        parts.event
    } else {
        type_name(kind).to_owned()
    };
    let message_id = if parts.message_id.is_empty() {
        uuid::Uuid::now_v7().to_string()
    } else {
        parts.message_id
    };
    Ok(Event {
        kind,
        message_id,
        user_id: Some(parts.user_id).filter(|s| !s.is_empty()),
        anonymous_id: Some(parts.anonymous_id).filter(|s| !s.is_empty()),
        event: name,
        properties: Json::Object(parts.properties),
        traits: Json::Object(parts.traits),
        context: Json::Object(parts.context),
        timestamp: parts.timestamp.unwrap_or(now),
        source_id: None,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use prost_types::value::Kind;
    use prost_types::{Struct, Value};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    #[test]
    fn samples_get_defaults() {
        let e = pb::Event {
            user_id: "u".into(),
            event: "Order Completed".into(),
            ..Default::default()
        };
        let event = event(&e, now(), "sample_event").unwrap();
        assert_eq!(event.kind, EventType::Track);
        assert_eq!(event.timestamp, now());
        assert_eq!(event.message_id.len(), 36);
        assert_eq!(event.properties, serde_json::json!({}));
    }

    #[test]
    fn nan_is_refused_with_its_field() {
        let e = pb::Event {
            user_id: "u".into(),
            event: "e".into(),
            properties: Some(Struct {
                fields: [(
                    "price".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(f64::NAN)),
                    },
                )]
                .into(),
            }),
            ..Default::default()
        };
        let problems = event(&e, now(), "events[2].event").unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "events[2].event.properties.price");
        assert!(problems[0].message.contains("finite"), "{}", problems[0]);
        let err = event_parts(e, "events[2].").unwrap_err();
        assert_eq!(err.field(), "events[2].properties.price");
    }

    #[test]
    fn missing_fields_are_all_reported() {
        let problems = event(&pb::Event::default(), now(), "e").unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["e.user_id", "e.event"]);
        let unknown = pb::Event {
            r#type: 42,
            ..Default::default()
        };
        let problems = event(&unknown, now(), "e").unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["e.type", "e.user_id", "e.event"]);
        let err = event_parts(unknown, "").unwrap_err();
        assert_eq!(err.to_string(), "type: 42 is not an EventType");
    }
}
