//! Proto ↔ domain at the gRPC edge: `journeys.v1.Event` → [`Event`] (with the same checks as
//! the HTTP API), and engine [`Ack`]s → `journeys.v1.Ack`.

use journeys_core::model::{Event, EventType, Json, Timestamp};
use journeys_engine::{Ack, AckStatus};
use journeys_proto::v1 as pb;
use prost::Message as _;
use prost_types::value::Kind;
use serde_json::Map;

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
    let field = |name: &str| format!("{prefix}{name}");
    let kind = match (pb::EventType::try_from(event.r#type), forced) {
        (Ok(pb::EventType::Unspecified), Some(forced)) => forced,
        (Ok(given), Some(forced)) if event_type(given) != Some(forced) => {
            return Err(EventError::new(
                ErrorCode::InvalidType,
                field("type"),
                format!(
                    "this call takes {} events only",
                    proto_event_type(forced).as_str_name()
                ),
            ));
        }
        (Ok(given), _) => event_type(given).unwrap_or(EventType::Track),
        (Err(_), _) => {
            return Err(EventError::new(
                ErrorCode::InvalidType,
                field("type"),
                format!("{} is not an EventType", event.r#type),
            ));
        }
    };
    let mut draft = Draft::new(kind);
    draft.message_id = Some(event.message_id);
    draft.user_id = Some(event.user_id);
    draft.anonymous_id = Some(event.anonymous_id);
    draft.event = Some(event.event);
    draft.properties = struct_to_map(event.properties, &field("properties"))?;
    draft.traits = struct_to_map(event.traits, &field("traits"))?;
    draft.context = struct_to_map(event.context, &field("context"))?;
    draft.timestamp = event
        .timestamp
        .map(|t| {
            u32::try_from(t.nanos)
                .ok()
                .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
                .ok_or_else(|| {
                    EventError::new(
                        ErrorCode::InvalidTimestamp,
                        field("timestamp"),
                        "is out of range",
                    )
                })
        })
        .transpose()?;
    draft.finish(&PROTO_NAMES, prefix, now)
}

fn event_type(kind: pb::EventType) -> Option<EventType> {
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

fn proto_event_type(kind: EventType) -> pb::EventType {
    match kind {
        EventType::Track => pb::EventType::Track,
        EventType::Identify => pb::EventType::Identify,
        EventType::Page => pb::EventType::Page,
        EventType::Screen => pb::EventType::Screen,
        EventType::Group => pb::EventType::Group,
        EventType::Alias => pb::EventType::Alias,
    }
}

/// A `Struct` as a JSON object; an absent one is empty.
fn struct_to_map(
    value: Option<prost_types::Struct>,
    field: &str,
) -> Result<Map<String, Json>, EventError> {
    let Some(value) = value else {
        return Ok(Map::new());
    };
    value
        .fields
        .into_iter()
        .map(|(key, value)| {
            let json = value_to_json(value, &format!("{field}.{key}"))?;
            Ok((key, json))
        })
        .collect()
}

fn value_to_json(value: prost_types::Value, field: &str) -> Result<Json, EventError> {
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n).ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidValue,
                field,
                "numbers must be finite (NaN and infinity have no JSON form)",
            )
        })?,
        Some(Kind::StructValue(s)) => Json::Object(struct_to_map(Some(s), field)?),
        Some(Kind::ListValue(list)) => Json::Array(
            list.values
                .into_iter()
                .enumerate()
                .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// `Struct` numbers are doubles; whole ones that a double holds exactly become JSON integers,
/// so `{"quantity": 2}` reads the same as it would have over HTTP.
fn number_to_json(n: f64) -> Option<Json> {
    /// 2^53: every integer up to this is exact in a double.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "checked whole and in range"
        )]
        return Some(Json::from(n as i64));
    }
    serde_json::Number::from_f64(n).map(Json::Number)
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
mod tests {
    use chrono::{TimeZone, Utc};
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
