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
    /// The source the event came in through (set by the data plane from the write key). It
    /// scopes [`Event::dedupe_key`], as Segment scopes `messageId` per source; it is no part of
    /// any payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// Longest dedupe key kept as is: longer ones are hashed ([`Event::dedupe_key`]). The store
/// indexes keys of up to 191 characters.
const MAX_PLAIN_DEDUPE_KEY: usize = 191;

fn empty_object() -> Json {
    Json::Object(serde_json::Map::new())
}

impl Event {
    /// The key duplicates are recognised by: `<source_id>:<messageId>` when the event came
    /// through a source, else the `messageId`. A scoped key longer than 191 characters is
    /// `sha256:<hex>` of it, so it still fits the store's index.
    pub fn dedupe_key(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self.source_id.as_deref().filter(|s| !s.is_empty()) {
            None => Cow::Borrowed(&self.message_id),
            Some(source) => {
                let key = format!("{source}:{}", self.message_id);
                if key.chars().count() <= MAX_PLAIN_DEDUPE_KEY {
                    Cow::Owned(key)
                } else {
                    use sha2::{Digest, Sha256};
                    use std::fmt::Write as _;
                    let digest = Sha256::digest(key.as_bytes());
                    let mut hex = String::with_capacity(7 + 64);
                    hex.push_str("sha256:");
                    for byte in digest {
                        let _ = write!(hex, "{byte:02x}");
                    }
                    Cow::Owned(hex)
                }
            }
        }
    }

    /// The profile key: `userId`, else `anonymousId`.
    pub fn profile_id(&self) -> Option<&str> {
        self.user_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .or(self.anonymous_id.as_deref().filter(|s| !s.is_empty()))
    }

    /// The id this event links to its `userId`'s profile (identity resolution): an `alias`'s
    /// `previousId` (in `properties`), else the `anonymousId` of an event that also carries a
    /// `userId`. `None` without a `userId`, or when the id is the `userId` itself.
    pub fn linked_identity(&self) -> Option<&str> {
        let user = self.user_id.as_deref().filter(|s| !s.is_empty())?;
        let linked = match self.kind {
            EventType::Alias => self
                .properties
                .get("previousId")
                .and_then(Json::as_str)
                .or(self.anonymous_id.as_deref()),
            _ => self.anonymous_id.as_deref(),
        };
        linked.filter(|id| !id.is_empty() && *id != user)
    }

    /// The value at a dot path into `properties` (`cart.total`, `items[0].sku`).
    pub fn property(&self, path: &str) -> Option<&Json> {
        crate::path::lookup(&self.properties, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(message_id: &str, source: Option<&str>) -> Event {
        Event {
            kind: EventType::Track,
            message_id: message_id.into(),
            user_id: Some("u1".into()),
            anonymous_id: None,
            event: "e".into(),
            properties: empty_object(),
            traits: empty_object(),
            context: empty_object(),
            timestamp: chrono::DateTime::UNIX_EPOCH,
            source_id: source.map(str::to_owned),
        }
    }

    #[test]
    fn dedupe_keys_are_scoped_per_source_and_fit_the_index() {
        assert_eq!(event("m1", None).dedupe_key(), "m1");
        assert_eq!(event("m1", Some("")).dedupe_key(), "m1");
        assert_eq!(event("m1", Some("s1")).dedupe_key(), "s1:m1");
        assert_ne!(
            event("m1", Some("s1")).dedupe_key(),
            event("m1", Some("s2")).dedupe_key()
        );
        let long = "x".repeat(191);
        let key = event(&long, Some("s1")).dedupe_key().into_owned();
        assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
        assert_ne!(key, event(&long, Some("s2")).dedupe_key());
        assert_eq!(key, event(&long, Some("s1")).dedupe_key());
    }
}
