//! Event builders for tests: one argument order everywhere, profile first —
//! `track(user, event, message_id, properties)`, `identify(user, message_id, traits)`.
//! Both stamp the event with the current time; set `timestamp` to place it elsewhere.

use chrono::Utc;
use journeys_core::model::{Event, EventType, Json};
use serde_json::json;

/// A track event `event` of `user` with `properties`.
#[must_use]
pub fn track(user: &str, event: &str, message_id: &str, properties: Json) -> Event {
    Event {
        kind: EventType::Track,
        message_id: message_id.to_owned(),
        user_id: Some(user.to_owned()),
        anonymous_id: None,
        event: event.to_owned(),
        properties,
        traits: json!({}),
        context: json!({}),
        timestamp: Utc::now(),
        source_id: None,
    }
}

/// An identify event of `user` setting `traits`.
#[must_use]
pub fn identify(user: &str, message_id: &str, traits: Json) -> Event {
    Event {
        kind: EventType::Identify,
        message_id: message_id.to_owned(),
        user_id: Some(user.to_owned()),
        anonymous_id: None,
        event: "identify".to_owned(),
        properties: json!({}),
        traits,
        context: json!({}),
        timestamp: Utc::now(),
        source_id: None,
    }
}

/// The map inside a JSON object literal (`object(json!({...}))`), for APIs that take traits or
/// properties as a map. Panics on anything but an object: a test wrote the literal.
#[must_use]
pub fn object(value: Json) -> serde_json::Map<String, Json> {
    match value {
        Json::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}
