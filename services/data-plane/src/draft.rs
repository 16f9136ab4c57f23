//! The checks every event passes whatever it arrived as (Segment JSON or a proto `Event`):
//! a profile id, a track name, id lengths the store can index, a message id and a timestamp.

use journeys_core::model::{Event, EventType, Json, Timestamp};
use serde_json::Map;

use crate::error::{ErrorCode, EventError};

/// Longest id or event name accepted: what the store can index.
pub const MAX_ID_CHARS: usize = journeys_store::MAX_KEY_CHARS;

/// Deepest nesting of objects and arrays accepted in `properties`, `traits` and `context`
/// (an object holding a value is two levels). Every read of what an event leaves behind (a
/// profile's traits, an instance's journey context, a send's payload) must decode in any gRPC
/// client, whose protobuf decoders stop at 100 nested messages; each JSON level costs up to
/// three of them (`Struct`, its map entry, `Value`).
pub const MAX_JSON_DEPTH: usize = 24;

/// How the fields are spelled in the caller's dialect, so errors name what the client sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldNames {
    pub message_id: &'static str,
    pub user_id: &'static str,
    pub anonymous_id: &'static str,
    pub event: &'static str,
}

/// Segment JSON spelling.
pub(crate) const SEGMENT_NAMES: FieldNames = FieldNames {
    message_id: "messageId",
    user_id: "userId",
    anonymous_id: "anonymousId",
    event: "event",
};

/// Proto spelling.
pub(crate) const PROTO_NAMES: FieldNames = FieldNames {
    message_id: "message_id",
    user_id: "user_id",
    anonymous_id: "anonymous_id",
    event: "event",
};

/// An event as parsed, before the checks shared by both dialects.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Draft {
    pub kind: EventType,
    pub message_id: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub event: Option<String>,
    pub properties: Map<String, Json>,
    pub traits: Map<String, Json>,
    pub context: Map<String, Json>,
    pub timestamp: Option<Timestamp>,
}

impl Draft {
    pub(crate) fn new(kind: EventType) -> Draft {
        Draft {
            kind,
            message_id: None,
            user_id: None,
            anonymous_id: None,
            event: None,
            properties: Map::new(),
            traits: Map::new(),
            context: Map::new(),
            timestamp: None,
        }
    }

    /// The validated event. `prefix` is the path of this event in the request (`batch[2].`,
    /// or empty); `now` is the receive time, used when the event has no timestamp.
    pub(crate) fn finish(
        self,
        names: &FieldNames,
        prefix: &str,
        now: Timestamp,
    ) -> Result<Event, EventError> {
        let field = |name: &str| format!("{prefix}{name}");
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());

        let message_id = match non_empty(self.message_id) {
            Some(id) => {
                check_len(&id, &field(names.message_id))?;
                id
            }
            None => new_message_id(),
        };
        let user_id = non_empty(self.user_id);
        let anonymous_id = non_empty(self.anonymous_id);
        if user_id.is_none() && anonymous_id.is_none() {
            return Err(EventError::new(
                ErrorCode::MissingUserId,
                format!("{prefix}{}", names.user_id),
                format!("{} or {} is required", names.user_id, names.anonymous_id),
            ));
        }
        if let Some(id) = &user_id {
            check_len(id, &field(names.user_id))?;
        }
        if let Some(id) = &anonymous_id {
            check_len(id, &field(names.anonymous_id))?;
        }
        let event = if self.kind == EventType::Track {
            let Some(name) = non_empty(self.event) else {
                return Err(EventError::new(
                    ErrorCode::MissingEvent,
                    field(names.event),
                    "is required for track",
                ));
            };
            check_len(&name, &field(names.event))?;
            name
        } else {
            type_name(self.kind).to_owned()
        };
        for (name, value) in [
            ("properties", &self.properties),
            ("traits", &self.traits),
            ("context", &self.context),
        ] {
            check_depth(value, &field(name))?;
        }
        Ok(Event {
            kind: self.kind,
            message_id,
            user_id,
            anonymous_id,
            event,
            properties: Json::Object(self.properties),
            traits: Json::Object(self.traits),
            context: Json::Object(self.context),
            timestamp: self.timestamp.unwrap_or(now),
            source_id: None,
        })
    }
}

/// A fresh message id for an event that came without one: a `UUIDv7`, so ids generated close in
/// time sort (and index) together.
pub(crate) fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The Segment name of a call type (`track`, `identify`, …): the one the wire contract uses.
pub(crate) use journeys_proto::convert::event::type_name;

fn check_depth(object: &Map<String, Json>, field: &str) -> Result<(), EventError> {
    let depth = 1 + object.values().map(depth_of).max().unwrap_or(0);
    if depth > MAX_JSON_DEPTH {
        return Err(EventError::new(
            ErrorCode::InvalidValue,
            field,
            format!(
                "is nested {depth} levels deep (objects and arrays); at most {MAX_JSON_DEPTH} are \
                 accepted"
            ),
        ));
    }
    Ok(())
}

/// Levels of objects and arrays in `value` (0 for a scalar). The parsers bound the nesting
/// before this runs, so the recursion is bounded.
fn depth_of(value: &Json) -> usize {
    match value {
        Json::Object(map) => 1 + map.values().map(depth_of).max().unwrap_or(0),
        Json::Array(items) => 1 + items.iter().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_len(value: &str, field: &str) -> Result<(), EventError> {
    if value.chars().count() > MAX_ID_CHARS {
        return Err(EventError::new(
            ErrorCode::TooLong,
            field,
            format!("must be at most {MAX_ID_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn now() -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn generates_a_message_id_and_uses_the_receive_time() {
        let mut draft = Draft::new(EventType::Identify);
        draft.user_id = Some("u1".into());
        draft.message_id = Some(String::new());
        let event = draft.finish(&SEGMENT_NAMES, "", now()).unwrap();
        assert_eq!(event.message_id.len(), 36);
        assert_eq!(event.timestamp, now());
        assert_eq!(event.event, "identify");
    }

    #[test]
    fn empty_ids_count_as_missing_and_errors_use_the_callers_names() {
        let mut draft = Draft::new(EventType::Page);
        draft.user_id = Some(String::new());
        let err = draft.finish(&PROTO_NAMES, "events[1].", now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::MissingUserId);
        assert_eq!(
            err.message(),
            "events[1].user_id: user_id or anonymous_id is required"
        );
    }

    /// `levels` nested objects: `{"a": {"a": … {"a": 1}}}`.
    fn nested(levels: usize) -> Json {
        let mut value = Json::from(1);
        for _ in 0..levels {
            value = serde_json::json!({ "a": value });
        }
        value
    }

    #[test]
    fn nesting_past_the_depth_limit_is_refused_and_what_is_kept_decodes_everywhere() {
        use journeys_proto::convert::json::json_to_struct;
        use prost::Message as _;

        let mut draft = Draft::new(EventType::Identify);
        draft.user_id = Some("u1".into());
        let Json::Object(deepest) = nested(MAX_JSON_DEPTH) else {
            unreachable!()
        };
        draft.traits = deepest.clone();
        draft.properties = deepest;
        let event = draft.clone().finish(&SEGMENT_NAMES, "", now()).unwrap();

        // The deepest accepted traits, as GetProfile returns them, and the journey context
        // an instance keeps (entry event name → properties), decode in a prost client.
        let profile = journeys_proto::v1::Profile {
            traits: Some(json_to_struct(&event.traits)),
            ..Default::default()
        };
        journeys_proto::v1::Profile::decode(profile.encode_to_vec().as_slice())
            .expect("the deepest traits decode");
        let context = serde_json::json!({ "checkout_started": { "properties": event.properties } });
        let instance = journeys_proto::v1::Instance {
            context: Some(json_to_struct(&context)),
            ..Default::default()
        };
        journeys_proto::v1::Instance::decode(instance.encode_to_vec().as_slice())
            .expect("the deepest journey context decodes");

        let Json::Object(deeper) = nested(MAX_JSON_DEPTH + 1) else {
            unreachable!()
        };
        draft.traits = deeper;
        let err = draft
            .finish(&SEGMENT_NAMES, "batch[0].", now())
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidValue);
        assert_eq!(
            err.message(),
            format!(
                "batch[0].traits: is nested {} levels deep (objects and arrays); at most \
                 {MAX_JSON_DEPTH} are accepted",
                MAX_JSON_DEPTH + 1
            )
        );
    }

    #[test]
    fn track_needs_a_name_and_long_ids_are_refused() {
        let mut draft = Draft::new(EventType::Track);
        draft.anonymous_id = Some("a1".into());
        let err = draft.clone().finish(&SEGMENT_NAMES, "", now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::MissingEvent);
        assert_eq!(err.message(), "event: is required for track");

        draft.event = Some("x".repeat(MAX_ID_CHARS + 1));
        let err = draft.finish(&SEGMENT_NAMES, "", now()).unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLong);
        assert_eq!(err.field, "event");
    }
}
