//! What commands read: definitions in JSON or YAML files (the proto3 JSON mapping grpcurl uses,
//! so `examples/*.json` work as they are) and events as JSON lines (Segment's spelling:
//! `{"type":"track","userId":…,"event":…,"properties":{…}}`).
//!
//! Every error names the file, and the line or the path of the value that is wrong.

use std::fs::File;
use std::io::{BufRead, BufReader, Read as _};
use std::path::Path;

use journeys_proto::convert::json::{json_to_struct, timestamp};
use journeys_proto::v1 as pb;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use serde_json::Value;

use super::error::{Error, Result};
use super::output::{Named, descriptor};

/// `path` (`-` for stdin) as a JSON value: YAML for `.yaml`/`.yml`, JSON for `.json`, and
/// otherwise JSON when it parses as JSON, else YAML.
pub fn document(path: &Path) -> Result<Value> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::usage(format!("cannot read stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?
    };
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let yaml = |text: &str| {
        serde_yaml_ng::from_str::<Value>(text)
            .map_err(|e| Error::usage(format!("{} is not valid YAML: {e}", path.display())))
    };
    match extension.as_deref() {
        Some("yaml" | "yml") => yaml(&text),
        Some("json") => serde_json::from_str(&text)
            .map_err(|e| Error::usage(format!("{} is not valid JSON: {e}", path.display()))),
        _ => serde_json::from_str(&text).or_else(|_| yaml(&text)),
    }
}

/// `value` read as the message `M` (proto3 JSON mapping; unknown fields refused). Errors say
/// where: `<what>: <path>: <problem>`.
pub fn message<M: Named>(value: &Value, what: &str) -> Result<M> {
    let descriptor = descriptor(M::NAME)?;
    let mut track = serde_path_to_error::Track::new();
    let dynamic = DynamicMessage::deserialize(
        descriptor,
        serde_path_to_error::Deserializer::new(value, &mut track),
    )
    .map_err(|e| {
        let path = track.path().to_string();
        if path.is_empty() || path == "." {
            Error::usage(format!("{what}: {e}"))
        } else {
            Error::usage(format!("{what}: {path}: {e}"))
        }
    })?;
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|e| Error::Failed(format!("{what}: cannot convert: {e}")))
}

/// The journey in `path`: a `Journey`, or a `CreateJourneyRequest` (`{"journey": {…}}`, the
/// form of `examples/`).
pub fn journey(path: &Path) -> Result<pb::Journey> {
    let value = document(path)?;
    let what = path.display().to_string();
    match value.get("journey") {
        Some(inner) if inner.is_object() => message(inner, &format!("{what}: journey")),
        _ => message(&value, &what),
    }
}

/// The JSON lines of a file, one value per non-blank line, with 1-based line numbers.
pub struct Lines {
    reader: Box<dyn BufRead>,
    name: String,
    number: usize,
    buffer: String,
}

impl Lines {
    pub fn open(path: &Path) -> Result<Self> {
        let reader: Box<dyn BufRead> = if path == Path::new("-") {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            let file = File::open(path)
                .map_err(|e| Error::usage(format!("cannot read {}: {e}", path.display())))?;
            Box::new(BufReader::with_capacity(256 * 1024, file))
        };
        Ok(Self {
            reader,
            name: path.display().to_string(),
            number: 0,
            buffer: String::new(),
        })
    }

    /// The next non-blank line as JSON, with its line number; `None` at the end.
    pub fn next_value(&mut self) -> Result<Option<(usize, Value)>> {
        loop {
            self.buffer.clear();
            let read = self.reader.read_line(&mut self.buffer).map_err(|e| {
                Error::usage(format!("{} line {}: {e}", self.name, self.number + 1))
            })?;
            if read == 0 {
                return Ok(None);
            }
            self.number += 1;
            let line = self.buffer.trim();
            if line.is_empty() {
                continue;
            }
            let value = serde_json::from_str(line)
                .map_err(|e| self.error(self.number, &format!("not JSON: {e}")))?;
            return Ok(Some((self.number, value)));
        }
    }

    /// A usage error at line `number` of this file.
    pub fn error(&self, number: usize, problem: &str) -> Error {
        Error::usage(format!("{} line {number}: {problem}", self.name))
    }
}

/// A Segment-style event object as an API event. Field names in camelCase (Segment's) or
/// snake_case (the API's); `type` in any case; unknown fields refused.
pub fn event(value: Value) -> Result<pb::Event, String> {
    let Value::Object(map) = value else {
        return Err("an event must be a JSON object".to_owned());
    };
    let mut event = pb::Event::default();
    for (key, value) in map {
        match key.as_str() {
            "type" => event.r#type = event_type(&value)? as i32,
            "messageId" | "message_id" => event.message_id = string(&key, value)?,
            "userId" | "user_id" => event.user_id = string(&key, value)?,
            "anonymousId" | "anonymous_id" => event.anonymous_id = string(&key, value)?,
            "event" => event.event = string(&key, value)?,
            "properties" => event.properties = object(&key, &value)?,
            "traits" => event.traits = object(&key, &value)?,
            "context" => event.context = object(&key, &value)?,
            "timestamp" => event.timestamp = Some(time(&key, &value)?),
            other => {
                return Err(format!(
                    "{other}: unknown field (an event has type, messageId, userId, anonymousId, \
                     event, properties, traits, context and timestamp)"
                ));
            }
        }
    }
    Ok(event)
}

/// A line of a simulation's events: an event, or `{"event": {…}, "at": "<RFC 3339>"}`.
pub fn simulated_event(value: Value) -> Result<pb::SimulatedEvent, String> {
    match value {
        Value::Object(mut map) if map.get("event").is_some_and(Value::is_object) => {
            let at = match map.remove("at") {
                Some(at) => Some(time("at", &at)?),
                None => None,
            };
            let inner = map.remove("event").unwrap_or_default();
            if let Some(other) = map.keys().next() {
                return Err(format!(
                    "{other}: unknown field (a simulated event has event and at)"
                ));
            }
            Ok(pb::SimulatedEvent {
                event: Some(event(inner).map_err(|e| format!("event.{e}"))?),
                at,
                source_id: String::new(),
            })
        }
        other => Ok(pb::SimulatedEvent {
            event: Some(event(other)?),
            at: None,
            source_id: String::new(),
        }),
    }
}

fn event_type(value: &Value) -> Result<pb::EventType, String> {
    let name = value
        .as_str()
        .ok_or_else(|| "type: must be a string such as \"track\"".to_owned())?;
    pb::EventType::from_str_name(&name.to_ascii_uppercase()).ok_or_else(|| {
        format!("type: {name:?} is not one of track, identify, page, screen, group, alias")
    })
}

fn string(key: &str, value: Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s),
        Value::Null => Ok(String::new()),
        _ => Err(format!("{key}: must be a string")),
    }
}

fn object(key: &str, value: &Value) -> Result<Option<prost_types::Struct>, String> {
    match value {
        Value::Object(_) => Ok(Some(json_to_struct(value))),
        Value::Null => Ok(None),
        _ => Err(format!("{key}: must be an object")),
    }
}

fn time(key: &str, value: &Value) -> Result<prost_types::Timestamp, String> {
    value
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| timestamp(t.with_timezone(&chrono::Utc)))
        .ok_or_else(|| format!("{key}: must be an RFC 3339 time such as \"2025-01-31T12:00:00Z\""))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn segment_events_read_in_either_spelling() {
        let e = event(json!({
            "type": "track", "userId": "u1", "event": "checkout_started",
            "messageId": "m1", "properties": {"session_id": "s1"},
            "timestamp": "2025-01-31T12:00:00Z"
        }))
        .unwrap();
        assert_eq!(e.r#type, pb::EventType::Track as i32);
        assert_eq!((e.user_id.as_str(), e.message_id.as_str()), ("u1", "m1"));
        assert_eq!(e.timestamp.unwrap().seconds, 1_738_324_800);
        let e = event(json!({"type": "IDENTIFY", "user_id": "u2", "traits": {"a": 1}})).unwrap();
        assert_eq!(e.r#type, pb::EventType::Identify as i32);
        assert!(e.traits.is_some());
    }

    #[test]
    fn a_bad_event_field_is_named() {
        let error = event(json!({"userId": "u", "propertees": {}})).unwrap_err();
        assert!(error.starts_with("propertees: unknown field"), "{error}");
        let error = event(json!({"type": "click"})).unwrap_err();
        assert!(
            error.starts_with("type: \"click\" is not one of"),
            "{error}"
        );
        let error = event(json!({"properties": [1]})).unwrap_err();
        assert_eq!(error, "properties: must be an object");
    }

    #[test]
    fn a_bad_definition_value_is_reported_with_its_path() {
        let value = json!({"name": "x", "steps": [{"key": "a", "delay": {"duration": "soon"}}]});
        let error = message::<pb::Journey>(&value, "j.json").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("j.json: steps[0].delay.duration: "),
            "{text}"
        );
        let value = json!({"nmae": "x"});
        let text = message::<pb::Journey>(&value, "j.json")
            .unwrap_err()
            .to_string();
        assert!(text.contains("nmae"), "{text}");
    }
}
