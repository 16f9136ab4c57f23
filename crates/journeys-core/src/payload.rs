//! What a send step sends: the default Segment-style `track` payload (SPEC.md section 4), the
//! optional mapping that replaces it, the size limit, and the deterministic ids.
//!
//! Decisions where SPEC.md is silent:
//! - The journey context holds each event's `properties` (a point-in-time snapshot), keyed by
//!   event name or `"<event> - <branch>"` alias.
//! - A selected trait is copied under its path as written (`address.city` stays one key); a
//!   trait the profile does not have is left out. `journey_context` and `journey_metadata`
//!   win over a trait of the same name.
//! - `journey_metadata.step_key` and `context.journeys.step_key` both carry the send key that is
//!   unique across journeys ([`send_key`]).
//! - The action's path placeholders (`{{properties.order_id}}`) are filled from the final
//!   payload and percent-encoded, so a value cannot change the shape of the URL.

use std::fmt::Write as _;

use serde_json::{Map, json};
use sha2::{Digest, Sha256};

use crate::machine::{
    Admission, Instance, Journey, SendRequest, canonical_value, exit_send_key, instance_id,
};
use crate::model::{Event, Json, SendSpec, StepKind, Timestamp};

/// Largest rendered payload, in bytes of compact JSON. Larger ones fail the send: never cut.
pub const MAX_PAYLOAD_BYTES: usize = 32 * 1024;

/// Why a payload could not be produced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the rendered payload is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the mapping failed: {0}")]
    Mapping(String),
}

/// Everything one send needs to render.
#[derive(Clone, Copy)]
pub struct SendContext<'a> {
    pub journey: &'a Journey,
    pub instance: &'a Instance,
    /// The send's local key: the send step's key or an exit send key.
    pub step_key: &'a str,
    /// The step's display name: the default event name and `context.journeys.step_name`.
    pub step_name: &'a str,
    pub spec: &'a SendSpec,
    /// The profile's current traits.
    pub traits: &'a Json,
    pub now: Timestamp,
    /// How many times this send ran before in this instance (part of the message id).
    pub pass: u32,
}

/// Renders a send: default payload, mapping, size check, action path.
pub fn render_send(sc: &SendContext<'_>) -> Result<SendRequest, PayloadError> {
    let mut context = sc.instance.context.clone();
    render_send_with_context(sc, &mut context)
}

/// [`render_send`] with the journey context passed separately, so the state machine can lend
/// the instance's context instead of copying it: when a mapping replaces the body, the default
/// payload is only an input, and the context is moved into it and back out afterwards. Only
/// an unmapped payload, which keeps the context, pays for a copy.
pub(crate) fn render_send_with_context(
    sc: &SendContext<'_>,
    context: &mut Map<String, Json>,
) -> Result<SendRequest, PayloadError> {
    let send_key = sc.journey.send_key(sc.step_key).map_or_else(
        || send_key(&sc.journey.meta().name, sc.journey.id(), sc.step_key),
        str::to_owned,
    );
    let message_id = message_id(&sc.instance.id, sc.step_key, sc.pass);
    let payload = match (sc.journey.mapping(sc.step_key), &sc.spec.mapping) {
        (Some(Err(problems)), _) => return Err(PayloadError::Mapping(problems.to_owned())),
        (Some(Ok(compiled)), _) => {
            let lent = Json::Object(std::mem::take(context));
            let default = default_payload(sc, lent, &message_id, &send_key);
            let rendered = compiled.render(&default);
            *context = take_context(default);
            rendered.map_err(|e| PayloadError::Mapping(e.to_string()))?
        }
        // A spec the journey did not prepare (not one of its sends): compile on the spot.
        (None, Some(mapping)) => {
            let lent = Json::Object(std::mem::take(context));
            let default = default_payload(sc, lent, &message_id, &send_key);
            let rendered = crate::mapping::render(mapping, &default);
            *context = take_context(default);
            rendered.map_err(|e| PayloadError::Mapping(e.to_string()))?
        }
        (None, None) => {
            let copy = Json::Object(context.clone());
            default_payload(sc, copy, &message_id, &send_key)
        }
    };
    let size = json_size(&payload);
    if size > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            size,
            limit: MAX_PAYLOAD_BYTES,
        });
    }
    let path = fill_path(&sc.spec.action.path, &payload);
    Ok(SendRequest {
        destination_id: sc.spec.destination_id.clone(),
        method: sc.spec.action.method.clone(),
        path,
        payload,
        message_id,
        step_key: sc.step_key.to_owned(),
        send_key,
    })
}

/// Moves the journey context back out of a default payload built by [`default_payload`].
fn take_context(default: Json) -> Map<String, Json> {
    let Json::Object(mut body) = default else {
        return Map::new();
    };
    match body.remove("properties") {
        Some(Json::Object(mut properties)) => match properties.remove("journey_context") {
            Some(Json::Object(context)) => context,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// The default `track` payload of SPEC.md section 4 (before any mapping), around
/// `journey_context` (normally the instance's context as a JSON object).
pub fn default_payload(
    sc: &SendContext<'_>,
    journey_context: Json,
    message_id: &str,
    send_key: &str,
) -> Json {
    let meta = sc.journey.meta();
    let inst = sc.instance;
    let mut properties = Map::new();
    for path in &sc.spec.traits {
        if let Some(value) = crate::path::lookup(sc.traits, path) {
            properties.insert(path.clone(), value.clone());
        }
    }
    properties.insert("journey_context".to_owned(), journey_context);
    properties.insert(
        "journey_metadata".to_owned(),
        json!({
            "journey_id": meta.id,
            "journey_version": meta.version,
            "journey_name": meta.name,
            "step_key": send_key,
            "instance_id": inst.id,
        }),
    );
    let mut body = Map::new();
    body.insert("type".to_owned(), Json::from("track"));
    body.insert(
        "event".to_owned(),
        Json::from(sc.spec.event_name.as_deref().unwrap_or(sc.step_name)),
    );
    if let Some(user_id) = &inst.user_id {
        body.insert("userId".to_owned(), Json::from(user_id.as_str()));
    }
    if let Some(anonymous_id) = &inst.anonymous_id {
        body.insert("anonymousId".to_owned(), Json::from(anonymous_id.as_str()));
    }
    if inst.user_id.is_none() && inst.anonymous_id.is_none() {
        body.insert("userId".to_owned(), Json::from(inst.profile_id.as_str()));
    }
    body.insert("messageId".to_owned(), Json::from(message_id));
    body.insert(
        "timestamp".to_owned(),
        Json::from(sc.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    body.insert("properties".to_owned(), Json::Object(properties));
    body.insert(
        "context".to_owned(),
        json!({
            "journeys": {
                "step_key": send_key,
                "step_name": sc.step_name,
                "journey_id": meta.id,
            }
        }),
    );
    Json::Object(body)
}

/// The `messageId` of a send: `jm_` and 32 hex digits of SHA-256 over (instance, step, pass).
/// Deterministic, so every retry and every replay of the transition carries the same id.
pub fn message_id(instance_id: &str, step_key: &str, pass: u32) -> String {
    let mut h = Sha256::new();
    h.update(instance_id.as_bytes());
    h.update([0]);
    h.update(step_key.as_bytes());
    h.update([0]);
    h.update(pass.to_be_bytes());
    let d = h.finalize();
    let mut out = String::with_capacity(35);
    out.push_str("jm_");
    for byte in &d[..16] {
        crate::machine::push_hex(&mut out, *byte);
    }
    out
}

/// A send's key unique across journeys: `<journey slug>__<step key>__<8 hex of SHA-256 of the
/// journey id>`. Readable in a destination's UI, and unique because journey ids are.
pub fn send_key(journey_name: &str, journey_id: &str, step_key: &str) -> String {
    let d = Sha256::digest(journey_id.as_bytes());
    let step: String = step_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let step = step.trim_matches('_');
    format!("{}__{}__{}", slug(journey_name), step, hex::encode(&d[..4]))
}

/// Lower-case ASCII letters and digits with single `_` between words; `journey` when nothing
/// is left.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    if out.is_empty() {
        out.push_str("journey");
    }
    out
}

/// Size of `value` as compact JSON, without building the string.
pub fn json_size(value: &Json) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing a `Value` to an infallible writer cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Fills `{{path}}` placeholders from `payload`, percent-encoding each value (RFC 3986
/// unreserved characters kept); a missing value becomes empty. Text outside placeholders is
/// kept as written.
pub fn fill_path(template: &str, payload: &Json) -> String {
    if !template.contains("{{") {
        return template.to_owned();
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..open]);
        let path = rest[open + 2..open + 2 + close].trim();
        if let Some(text) = crate::path::lookup(payload, path).and_then(canonical_value) {
            percent_encode(&text, &mut out);
        }
        rest = &rest[open + 2 + close + 2..];
    }
    out.push_str(rest);
    out
}

fn percent_encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Why a preview could not be rendered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreviewError {
    #[error("no send step with key {0}")]
    NotASendStep(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// Renders what send step `step_key` (or an exit send, `exit_rules[i]`) would send for a
/// sample entry event and traits (`PreviewPayload`). The sample stands in for the entry event:
/// it is put in the journey context under the journey's entry event name.
pub fn preview(
    journey: &Journey,
    step_key: &str,
    sample_event: &Event,
    traits: &Json,
    now: Timestamp,
) -> Result<Json, PreviewError> {
    preview_send(journey, step_key, sample_event, traits, now).map(|request| request.payload)
}

/// Like [`preview`], but the whole rendered send: destination, method, filled path and
/// payload (`SendTestEvent` delivers exactly this).
pub fn preview_send(
    journey: &Journey,
    step_key: &str,
    sample_event: &Event,
    traits: &Json,
    now: Timestamp,
) -> Result<SendRequest, PreviewError> {
    let def = journey.definition();
    let (spec, step_name) = match journey.step(step_key) {
        Some(step) => match &step.kind {
            StepKind::Send(send) => (&send.spec, step.name.clone()),
            _ => return Err(PreviewError::NotASendStep(step_key.to_owned())),
        },
        None => def
            .exit_rules
            .iter()
            .enumerate()
            .find_map(|(i, rule)| {
                let spec = rule.send.as_ref()?;
                (exit_send_key(i) == step_key).then(|| (spec, format!("Exit on {}", rule.event)))
            })
            .ok_or_else(|| PreviewError::NotASendStep(step_key.to_owned()))?,
    };
    let admission = Admission {
        profile_id: sample_event
            .profile_id()
            .unwrap_or("preview-user")
            .to_owned(),
        unique_value: def
            .unique_identifier()
            .and_then(|p| sample_event.property(p))
            .and_then(canonical_value),
    };
    let id = instance_id(journey.id(), &sample_event.message_id);
    let mut instance = Instance::new(journey, id, sample_event, admission, now);
    instance
        .context
        .insert(def.entry.event.clone(), sample_event.properties.clone());
    let request = render_send(&SendContext {
        journey,
        instance: &instance,
        step_key,
        step_name: &step_name,
        spec,
        traits,
        now,
        pass: 0,
    })?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::machine::tests::{event, journey_with, t0};
    use crate::model::EntryRule;

    #[test]
    fn message_ids_are_deterministic_and_distinct() {
        let id = message_id("i1", "nudge", 0);
        assert_eq!(id, message_id("i1", "nudge", 0));
        assert!(id.starts_with("jm_"));
        assert_eq!(id.len(), 35);
        assert!(id[3..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, message_id("i2", "nudge", 0));
        assert_ne!(id, message_id("i1", "other", 0));
        assert_ne!(id, message_id("i1", "nudge", 1));
        // The separator keeps (ab, c) and (a, bc) apart.
        assert_ne!(message_id("ab", "c", 0), message_id("a", "bc", 0));
    }

    #[test]
    fn send_keys_are_readable_and_unique_per_journey() {
        assert_eq!(
            slug("Abandoned Checkout — EU (v2)"),
            "abandoned_checkout_eu_v2"
        );
        assert_eq!(slug("¡¿!"), "journey");
        let a = send_key("Abandoned checkout", "j1", "nudge");
        assert!(a.starts_with("abandoned_checkout__nudge__"));
        assert_eq!(a.len(), "abandoned_checkout__nudge__".len() + 8);
        assert_ne!(a, send_key("Abandoned checkout", "j2", "nudge"));
        assert_eq!(
            send_key("X", "j1", "exit_rules[0]"),
            format!("x__exit_rules_0__{}", &a[a.len() - 8..])
        );
    }

    #[test]
    fn size_is_the_compact_json_length() {
        let v = json!({"a": [1, "é", null], "b": {"c": true}});
        assert_eq!(json_size(&v), serde_json::to_vec(&v).unwrap().len());
    }

    #[test]
    fn path_placeholders_are_filled_and_encoded() {
        let p = json!({"id": "a b/c", "n": 7, "nested": {"k": "ü"}});
        assert_eq!(fill_path("/x/{{id}}", &p), "/x/a%20b%2Fc");
        assert_eq!(fill_path("/{{ n }}/{{nested.k}}", &p), "/7/%C3%BC");
        assert_eq!(fill_path("/{{missing}}/y", &p), "//y");
        assert_eq!(fill_path("/plain", &p), "/plain");
        assert_eq!(fill_path("/open/{{id", &p), "/open/{{id");
    }

    #[test]
    fn preview_renders_a_send_step_for_a_sample_event() {
        let j = journey_with(
            EntryRule::ReenterEveryTime {
                unique_identifier: "session_id".into(),
            },
            vec![],
        );
        let sample = event("checkout_started", json!({"session_id": "s9", "total": 3}));
        let traits = json!({"email": "x@example.com"});
        let payload = preview(&j, "nudge", &sample, &traits, t0()).unwrap();
        assert_eq!(payload["type"], "track");
        assert_eq!(payload["userId"], "u1");
        assert_eq!(
            payload["properties"]["journey_context"]["checkout_started"],
            json!({"session_id": "s9", "total": 3})
        );
        assert_eq!(
            payload["properties"]["journey_metadata"]["journey_name"],
            "Abandoned checkout"
        );
        assert_eq!(payload["context"]["journeys"]["step_name"], "Step nudge");
        assert_eq!(
            preview(&j, "wait_purchase", &sample, &traits, t0()),
            Err(PreviewError::NotASendStep("wait_purchase".into()))
        );
    }
}
