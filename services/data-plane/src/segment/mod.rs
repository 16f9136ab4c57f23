//! Segment's HTTP Tracking API bodies → validated [`Event`]s.
//!
//! Follows the Segment spec: the call type comes from the endpoint (or each batch item's
//! `type`); `userId` or `anonymousId` is required; `event` is required for track; page and
//! screen `name` (and page `category`) land in `properties`; group's `groupId` and alias's
//! `previousId` land in `properties` too; identify's traits may also come from
//! `context.traits` (top-level `traits` win). A batch's top-level `context` is the default for
//! each item's. Unknown fields (`integrations`, `sentAt`, `_metadata`…) are ignored, as Segment
//! does; fields of the wrong JSON type are refused.

use std::io;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use journeys_core::model::{Event, EventType, Json, Timestamp};
use serde_json::Map;

use crate::draft::{Draft, SEGMENT_NAMES};
use crate::error::{ErrorCode, EventError};
use crate::{MAX_BATCH_EVENTS, MAX_EVENT_BYTES};

/// Which endpoint a body was posted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `/v1/track`, `/v1/identify`, …: the body is one event of this type.
    Single(EventType),
    /// `/v1/batch`: `{"batch": [...]}`, each item with its `type`.
    Batch,
}

/// A request body that is a JSON object, not yet validated as events.
#[derive(Debug)]
pub(crate) struct Body {
    object: Map<String, Json>,
    /// Bytes of the (decompressed) body: the size of the event on single-event endpoints.
    len: usize,
}

impl Body {
    /// Parses `bytes` as a JSON object.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Body, EventError> {
        match serde_json::from_slice::<Json>(bytes) {
            Ok(Json::Object(object)) => Ok(Body {
                object,
                len: bytes.len(),
            }),
            Ok(other) => Err(EventError::new(
                ErrorCode::InvalidJson,
                "",
                format!("the body must be a JSON object, not {}", kind_of(&other)),
            )),
            Err(err) => Err(EventError::new(
                ErrorCode::InvalidJson,
                "",
                format!("the body is not valid JSON: {err}"),
            )),
        }
    }

    /// The top-level `writeKey` of a body, read without parsing the body: the scan builds
    /// nothing and stops at the key, so an unauthenticated request costs a pass over the bytes
    /// before it, not a parse of the whole body. A body that is not a JSON object (as far as
    /// the scan got) is refused as [`Body::parse`] refuses it.
    pub(crate) fn peek_write_key(bytes: &[u8]) -> Result<Option<String>, EventError> {
        let mut found = None;
        let scanned = serde::Deserializer::deserialize_map(
            &mut serde_json::Deserializer::from_slice(bytes),
            WriteKeyScan(&mut found),
        );
        match (found, scanned) {
            (Some(key), _) => key,
            (None, Ok(())) => Ok(None),
            // Not a JSON object: the parser's own words for it.
            (None, Err(_)) => Body::parse(bytes).map(|_| None),
        }
    }

    /// The events of this body, all valid, or the first problem found. `now` is the receive
    /// time.
    pub(crate) fn into_events(
        self,
        endpoint: Endpoint,
        now: Timestamp,
    ) -> Result<Vec<Event>, EventError> {
        match endpoint {
            Endpoint::Single(kind) => {
                if self.len > MAX_EVENT_BYTES {
                    return Err(event_too_large("", self.len));
                }
                let draft = draft_from_json(kind, self.object, "", None)?;
                Ok(vec![draft.finish(&SEGMENT_NAMES, "", now)?])
            }
            Endpoint::Batch => batch_events(self.object, now),
        }
    }
}

/// The scan of [`Body::peek_write_key`]: skips top-level values until `writeKey`, reads that
/// one and stops (by failing, which is what ends a serde walk early).
struct WriteKeyScan<'a>(&'a mut Option<Result<Option<String>, EventError>>);

impl<'de> serde::de::Visitor<'de> for WriteKeyScan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "writeKey" {
                let value: Json = map.next_value()?;
                *self.0 = Some(match value {
                    Json::Null => Ok(None),
                    Json::String(key) if key.is_empty() => Ok(None),
                    Json::String(key) => Ok(Some(key)),
                    other => Err(wrong_type("writeKey", "a string", &other)),
                });
                return Err(serde::de::Error::custom("write key found"));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

fn batch_events(mut object: Map<String, Json>, now: Timestamp) -> Result<Vec<Event>, EventError> {
    let items = match object.remove("batch") {
        Some(Json::Array(items)) => items,
        None | Some(Json::Null) => {
            return Err(EventError::new(
                ErrorCode::MissingBatch,
                "batch",
                "is required: an array of events",
            ));
        }
        Some(other) => return Err(wrong_type("batch", "an array", &other)),
    };
    if items.len() > MAX_BATCH_EVENTS {
        return Err(EventError::new(
            ErrorCode::TooManyEvents,
            "batch",
            format!(
                "holds {} events; at most {MAX_BATCH_EVENTS} are accepted per request",
                items.len()
            ),
        ));
    }
    let batch_context = take_object(&mut object, "context", "")?;
    let mut events = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let prefix = format!("batch[{index}].");
        let size = json_len(&item);
        if size > MAX_EVENT_BYTES {
            return Err(event_too_large(&format!("batch[{index}]"), size));
        }
        let Json::Object(mut item) = item else {
            return Err(wrong_type(&format!("batch[{index}]"), "an object", &item));
        };
        let kind = take_type(&mut item, &prefix)?;
        let draft = draft_from_json(kind, item, &prefix, batch_context.as_ref())?;
        events.push(draft.finish(&SEGMENT_NAMES, &prefix, now)?);
    }
    Ok(events)
}

/// Reads one Segment call of type `kind` from `object`.
fn draft_from_json(
    kind: EventType,
    mut object: Map<String, Json>,
    prefix: &str,
    default_context: Option<&Map<String, Json>>,
) -> Result<Draft, EventError> {
    let mut draft = Draft::new(kind);
    draft.message_id = take_id(&mut object, "messageId", prefix)?;
    draft.user_id = take_id(&mut object, "userId", prefix)?;
    draft.anonymous_id = take_id(&mut object, "anonymousId", prefix)?;
    draft.timestamp = take_timestamp(&mut object, "timestamp", prefix)?;
    draft.properties = take_object(&mut object, "properties", prefix)?.unwrap_or_default();
    let traits = take_object(&mut object, "traits", prefix)?;
    let mut context = take_object(&mut object, "context", prefix)?.unwrap_or_default();
    if let Some(defaults) = default_context {
        for (key, value) in defaults {
            context.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }

    draft.traits = if kind == EventType::Identify {
        // Client libraries that cache traits send them in `context.traits`; an identify call's
        // own `traits` are the newer values.
        let mut merged = match context.get("traits") {
            None | Some(Json::Null) => Map::new(),
            Some(Json::Object(cached)) => cached.clone(),
            Some(other) => {
                return Err(wrong_type(
                    &format!("{prefix}context.traits"),
                    "an object",
                    other,
                ));
            }
        };
        merged.extend(traits.unwrap_or_default());
        merged
    } else {
        traits.unwrap_or_default()
    };

    match kind {
        EventType::Track => draft.event = take_string(&mut object, "event", prefix)?,
        EventType::Identify => {}
        EventType::Page | EventType::Screen => {
            for key in ["name", "category"] {
                if let Some(value) = take_string(&mut object, key, prefix)? {
                    draft.properties.insert(key.to_owned(), Json::String(value));
                }
            }
        }
        EventType::Group => {
            let group_id = take_id(&mut object, "groupId", prefix)?.filter(|id| !id.is_empty());
            let Some(group_id) = group_id else {
                return Err(EventError::new(
                    ErrorCode::MissingGroupId,
                    format!("{prefix}groupId"),
                    "is required for group",
                ));
            };
            draft
                .properties
                .insert("groupId".to_owned(), Json::String(group_id));
        }
        EventType::Alias => {
            let previous = take_id(&mut object, "previousId", prefix)?.filter(|id| !id.is_empty());
            let Some(previous) = previous else {
                return Err(EventError::new(
                    ErrorCode::MissingPreviousId,
                    format!("{prefix}previousId"),
                    "is required for alias",
                ));
            };
            draft
                .properties
                .insert("previousId".to_owned(), Json::String(previous));
        }
    }
    draft.context = context;
    Ok(draft)
}

fn take_type(object: &mut Map<String, Json>, prefix: &str) -> Result<EventType, EventError> {
    let field = format!("{prefix}type");
    match object.remove("type") {
        None | Some(Json::Null) => Err(EventError::new(
            ErrorCode::MissingType,
            field,
            "is required: track, identify, page, screen, group or alias",
        )),
        Some(Json::String(name)) => parse_type(&name).ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidType,
                field,
                format!("'{name}' is not one of track, identify, page, screen, group, alias"),
            )
        }),
        Some(other) => Err(wrong_type(&field, "a string", &other)),
    }
}

fn parse_type(name: &str) -> Option<EventType> {
    let kind = match name.to_ascii_lowercase().as_str() {
        "track" => EventType::Track,
        "identify" => EventType::Identify,
        "page" => EventType::Page,
        "screen" => EventType::Screen,
        "group" => EventType::Group,
        "alias" => EventType::Alias,
        _ => return None,
    };
    Some(kind)
}

/// An id: a string, or a number taken as its decimal text (some clients send numeric user ids).
fn take_id(
    object: &mut Map<String, Json>,
    key: &str,
    prefix: &str,
) -> Result<Option<String>, EventError> {
    match object.remove(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(id)) => Ok(Some(id)),
        // Integers of up to 64 bits are read exactly; anything else arrived as a float, whose
        // text may be a rounded neighbour of what the client meant (two users, one profile).
        Some(Json::Number(n)) if n.is_u64() || n.is_i64() => Ok(Some(n.to_string())),
        Some(Json::Number(n)) => Err(EventError::new(
            ErrorCode::WrongType,
            format!("{prefix}{key}"),
            format!(
                "the number {n} is not a whole number of at most 64 bits and cannot be kept \
                 exactly; send this id as a string"
            ),
        )),
        Some(other) => Err(wrong_type(
            &format!("{prefix}{key}"),
            "a string or a number",
            &other,
        )),
    }
}

fn take_string(
    object: &mut Map<String, Json>,
    key: &str,
    prefix: &str,
) -> Result<Option<String>, EventError> {
    match object.remove(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(&format!("{prefix}{key}"), "a string", &other)),
    }
}

fn take_object(
    object: &mut Map<String, Json>,
    key: &str,
    prefix: &str,
) -> Result<Option<Map<String, Json>>, EventError> {
    match object.remove(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Object(map)) => Ok(Some(map)),
        Some(other) => Err(wrong_type(&format!("{prefix}{key}"), "an object", &other)),
    }
}

fn take_timestamp(
    object: &mut Map<String, Json>,
    key: &str,
    prefix: &str,
) -> Result<Option<Timestamp>, EventError> {
    let field = format!("{prefix}{key}");
    match object.remove(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) if text.is_empty() => Ok(None),
        Some(Json::String(text)) => parse_timestamp(&text).map(Some).ok_or_else(|| {
            EventError::new(
                ErrorCode::InvalidTimestamp,
                field,
                format!("'{text}' is not an ISO 8601 date-time (e.g. 2024-05-01T12:00:00Z)"),
            )
        }),
        Some(other) => Err(wrong_type(&field, "an ISO 8601 string", &other)),
    }
}

/// ISO 8601 as client libraries write it: RFC 3339 (`Z` or `+00:00`), an offset without a
/// colon (`+0000`), a date-time without an offset (taken as UTC), or a bare date.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn wrong_type(field: &str, expected: &str, got: &Json) -> EventError {
    EventError::new(
        ErrorCode::WrongType,
        field,
        format!("must be {expected}, not {}", kind_of(got)),
    )
}

fn event_too_large(field: &str, size: usize) -> EventError {
    EventError::new(
        ErrorCode::EventTooLarge,
        field,
        format!("the event is {size} bytes; at most {MAX_EVENT_BYTES} are accepted"),
    )
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Size of `value` as compact JSON, without building the text.
fn json_len(value: &Json) -> usize {
    struct Counter(usize);
    impl io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
pub(crate) mod fuzz;
#[cfg(test)]
mod tests;
