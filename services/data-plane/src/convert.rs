//! Proto ↔ domain at the gRPC edge: `journeys.v1.Event` → [`Event`] (with the same checks as
//! the HTTP API), and engine [`Ack`]s → `journeys.v1.Ack`.

use journeys_core::model::{Event, EventType, Timestamp};
use journeys_engine::{Ack, AckStatus};
use journeys_proto::convert::event::{EventPartsError, event_parts, proto_event_type};
use journeys_proto::v1 as pb;
use prost::Message as _;

use crate::MAX_EVENT_BYTES;
use crate::draft::{Draft, PROTO_NAMES};
use crate::error::{ErrorCode, EventError};

/// The domain event for `event`. `forced` is the type a unary call implies (`Track`,
/// `Identify`): an unset type takes it, another type is refused. `prefix` is the event's path
/// in the request (`events[3].` or empty); `now` the receive time.
pub(crate) fn event_from_proto(
    event: pb::Event,
    forced: Option<EventType>,
    prefix: &str,
    now: Timestamp,
) -> Result<Event, EventError> {
    let size = event.encoded_len();
    if size > MAX_EVENT_BYTES {
        return Err(EventError::new(
            ErrorCode::EventTooLarge,
            prefix.trim_end_matches('.'),
            format!("the event is {size} bytes; at most {MAX_EVENT_BYTES} are accepted"),
        ));
    }
    let parts = event_parts(event, prefix).map_err(|e| {
        let code = match e {
            EventPartsError::UnknownType { .. } => ErrorCode::InvalidType,
            EventPartsError::NonFinite(_) => ErrorCode::InvalidValue,
            EventPartsError::TimestampOutOfRange { .. } => ErrorCode::InvalidTimestamp,
        };
        EventError::new(code, e.field(), e.description())
    })?;
    let kind = match (parts.kind, forced) {
        (None, Some(forced)) => forced,
        (Some(given), Some(forced)) if given != forced => {
            return Err(EventError::new(
                ErrorCode::InvalidType,
                format!("{prefix}type"),
                format!(
                    "this call takes {} events only",
                    proto_event_type(forced).as_str_name()
                ),
            ));
        }
        (given, _) => given.unwrap_or(EventType::Track),
    };
    let mut draft = Draft::new(kind);
    draft.message_id = Some(parts.message_id);
    draft.user_id = Some(parts.user_id);
    draft.anonymous_id = Some(parts.anonymous_id);
    draft.event = Some(parts.event);
    draft.properties = parts.properties;
    draft.traits = parts.traits;
    draft.context = parts.context;
    draft.timestamp = parts.timestamp;
    draft.finish(&PROTO_NAMES, prefix, now)
}

/// The wire form of an engine acknowledgement.
pub(crate) fn ack_to_proto(ack: Ack) -> pb::Ack {
    let (status, code, message) = match ack.status {
        AckStatus::Accepted => (pb::AckStatus::Accepted, String::new(), String::new()),
        AckStatus::Duplicate => (pb::AckStatus::Duplicate, String::new(), String::new()),
        AckStatus::Rejected { code, message } => (pb::AckStatus::Rejected, code, message),
    };
    pb::Ack {
        message_id: ack.message_id,
        status: status.into(),
        code,
        message,
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use prost_types::value::Kind;
    use prost_types::{ListValue, Struct, Value};
    use serde_json::json;

    use super::*;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn value(kind: Kind) -> Value {
        Value { kind: Some(kind) }
    }

    fn props(pairs: Vec<(&str, Value)>) -> Option<Struct> {
        Some(Struct {
            fields: pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
    }

    #[test]
    fn converts_every_field() {
        let event = pb::Event {
            r#type: pb::EventType::Identify.into(),
            message_id: "m1".into(),
            user_id: "u1".into(),
            anonymous_id: String::new(),
            event: String::new(),
            properties: None,
            traits: props(vec![
                ("plan", value(Kind::StringValue("pro".into()))),
                ("seats", value(Kind::NumberValue(3.0))),
                ("ratio", value(Kind::NumberValue(0.5))),
                (
                    "tags",
                    value(Kind::ListValue(ListValue {
                        values: vec![value(Kind::BoolValue(true)), value(Kind::NullValue(0))],
                    })),
                ),
            ]),
            context: None,
            timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5,
            }),
        };
        let converted = event_from_proto(event, None, "", now()).unwrap();
        assert_eq!(converted.kind, EventType::Identify);
        assert_eq!(converted.event, "identify");
        assert_eq!(converted.user_id.as_deref(), Some("u1"));
        assert_eq!(converted.anonymous_id, None);
        assert_eq!(
            converted.traits,
            json!({"plan": "pro", "seats": 3, "ratio": 0.5, "tags": [true, null]})
        );
        assert_eq!(converted.properties, json!({}));
        assert_eq!(
            converted.timestamp,
            chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap()
        );
    }

    #[test]
    fn unary_calls_force_their_type() {
        let event = pb::Event {
            user_id: "u".into(),
            event: "e".into(),
            ..Default::default()
        };
        let track = event_from_proto(event.clone(), Some(EventType::Track), "", now()).unwrap();
        assert_eq!(track.kind, EventType::Track);
        let identify =
            event_from_proto(event.clone(), Some(EventType::Identify), "", now()).unwrap();
        assert_eq!(identify.kind, EventType::Identify);
        let page = pb::Event {
            r#type: pb::EventType::Page.into(),
            ..event
        };
        let err = event_from_proto(page, Some(EventType::Track), "", now()).unwrap_err();
        assert_eq!(err.message(), "type: this call takes TRACK events only");
    }

    #[test]
    fn problems_name_proto_fields() {
        let err = event_from_proto(
            pb::Event {
                r#type: pb::EventType::Track.into(),
                anonymous_id: "a".into(),
                ..Default::default()
            },
            None,
            "events[2].",
            now(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.message().as_str()),
            (
                ErrorCode::MissingEvent,
                "events[2].event: is required for track"
            )
        );

        let err = event_from_proto(
            pb::Event {
                user_id: "u".into(),
                event: "e".into(),
                properties: props(vec![("x", value(Kind::NumberValue(f64::NAN)))]),
                ..Default::default()
            },
            None,
            "",
            now(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidValue);
        assert_eq!(err.field, "properties.x");

        let err = event_from_proto(
            pb::Event {
                r#type: 42,
                user_id: "u".into(),
                ..Default::default()
            },
            None,
            "",
            now(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidType);

        let err = event_from_proto(
            pb::Event {
                user_id: "u".into(),
                event: "e".into(),
                properties: props(vec![(
                    "blob",
                    value(Kind::StringValue("x".repeat(MAX_EVENT_BYTES))),
                )]),
                ..Default::default()
            },
            None,
            "events[0].",
            now(),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::EventTooLarge);
        assert_eq!(err.field, "events[0]");
    }
}
