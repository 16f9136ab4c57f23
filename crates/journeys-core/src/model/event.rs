//! An incoming Segment-spec call as the core sees it.

use serde::{Deserialize, Serialize};

use super::{Json, Timestamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

/// A validated event: the edge guarantees a profile id and a message id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub message_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<String>,
    /// The track event name; for other types, the type name (`identify`, `page`…).
    pub event: String,
    /// Always a JSON object.
    #[serde(default = "empty_object")]
    pub properties: Json,
    #[serde(default = "empty_object")]
    pub traits: Json,
    #[serde(default = "empty_object")]
    pub context: Json,
    pub timestamp: Timestamp,
}

fn empty_object() -> Json {
    Json::Object(serde_json::Map::new())
}

impl Event {
    /// The profile key: `userId`, else `anonymousId`.
    pub fn profile_id(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.anonymous_id.as_deref().filter(|s| !s.is_empty()))
    }

    /// The value at a dot path into `properties` (`cart.total`, `items[0].sku`).
    pub fn property(&self, path: &str) -> Option<&Json> {
        crate::path::lookup(&self.properties, path)
    }
}
