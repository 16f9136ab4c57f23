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

use sha2::{Digest, Sha256};

mod default;

use self::default::DefaultPayload;
pub use self::default::default_payload;
use crate::machine::{
    Admission, Instance, Journey, SendRequest, canonical_value, exit_send_key, instance_id,
};
use crate::mapping::MappingError;
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
///
/// A mapped send renders its mapping against the default payload read in place (see
/// [`default_payload`]), so neither the default payload nor a copy of the journey context is
/// built for it.
pub fn render_send(sc: &SendContext<'_>) -> Result<SendRequest, PayloadError> {
    let send_key = sc.journey.send_key(sc.step_key).map_or_else(
        || send_key(&sc.journey.meta().name, sc.journey.id(), sc.step_key),
        str::to_owned,
    );
    let message_id = message_id(&sc.instance.id, sc.step_key, sc.pass);
    let mapping_failed = |e: MappingError| PayloadError::Mapping(e.to_string());
    let payload = match (sc.journey.mapping(sc.step_key), &sc.spec.mapping) {
        (Some(Err(problems)), _) => return Err(PayloadError::Mapping(problems.to_owned())),
        (Some(Ok(compiled)), _) => compiled
            .render_lazy(&DefaultPayload::new(sc, &message_id, &send_key))
            .map_err(mapping_failed)?,
        // A spec the journey did not prepare (not one of its sends): compile on the spot.
        (None, Some(mapping)) => crate::mapping::compile(mapping)
            .map_err(MappingError::Invalid)
            .and_then(|compiled| {
                compiled.render_lazy(&DefaultPayload::new(sc, &message_id, &send_key))
            })
            .map_err(mapping_failed)?,
        (None, None) => {
            let context = Json::Object(sc.instance.context.clone());
            default_payload(sc, context, &message_id, &send_key)
        }
    };
    check_size(&payload, MAX_PAYLOAD_BYTES).map_err(|size| PayloadError::TooLarge {
        size,
        limit: MAX_PAYLOAD_BYTES,
    })?;
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

/// `Ok` when `value` is at most `limit` bytes as compact JSON, else its size.
///
/// Most payloads are far below the limit, so a bound that only adds up string lengths (every
/// byte of a string escapes to at most six) settles them without reading the text; the exact
/// size is counted only when the bound passes the limit.
fn check_size(value: &Json, limit: usize) -> Result<(), usize> {
    if size_bound(value, limit).is_some() {
        return Ok(());
    }
    let size = json_size(value);
    if size > limit { Err(size) } else { Ok(()) }
}

/// An upper bound of the compact JSON size of `value` if it is at most `budget`; `None` as
/// soon as it passes `budget`.
fn size_bound(value: &Json, budget: usize) -> Option<usize> {
    // Escaping turns one byte into at most six (`\u001f`); two quotes around.
    let text = |s: &str| s.len().checked_mul(6)?.checked_add(2);
    let size = match value {
        Json::Null => 4,
        Json::Bool(_) => 5,
        Json::Number(n) => json_size_of(n),
        Json::String(s) => text(s)?,
        Json::Array(items) => {
            // Brackets and a comma after each element but the last: at most 2 + n.
            let mut size = 2 + items.len();
            for item in items {
                size += size_bound(item, budget.checked_sub(size)?)?;
            }
            size
        }
        Json::Object(map) => {
            // Braces, and for each field a colon and a comma: at most 2 + 2n.
            let mut size = 2 + 2 * map.len();
            for (key, item) in map {
                size += text(key)?;
                size += size_bound(item, budget.checked_sub(size)?)?;
            }
            size
        }
    };
    (size <= budget).then_some(size)
}

/// Size of `value` as compact JSON, without building the string.
pub fn json_size(value: &Json) -> usize {
    json_size_of(value)
}

/// [`json_size`] of anything serializable.
fn json_size_of<T: serde::Serialize + ?Sized>(value: &T) -> usize {
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
    // Writing a `Value` or a `Number` to an infallible writer cannot fail.
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
    /// Sample `index` is of an event the journey's context never holds.
    #[error("'{event}' is not an event this journey's context holds ({allowed})")]
    NotInContext {
        index: usize,
        event: String,
        allowed: String,
    },
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

/// Renders what send step `step_key` (or an exit send, `exit_rules[i]`) would send for a
/// sample entry event and traits (`PreviewPayload`). The sample stands in for the entry event:
/// it is put in the journey context under the journey's entry event name. `others` are samples
/// of the other events the context can hold (a hold-until branch's event, an exit rule's
/// event), each put in under its own name.
pub fn preview(
    journey: &Journey,
    step_key: &str,
    sample_event: &Event,
    others: &[Event],
    traits: &Json,
    now: Timestamp,
) -> Result<Json, PreviewError> {
    preview_send(journey, step_key, sample_event, others, traits, now)
        .map(|request| request.payload)
}

/// The events besides the entry event that an instance's context can hold: those of the
/// hold-until branches and of the exit rules, in definition order, without repeats.
pub fn context_events(journey: &Journey) -> Vec<&str> {
    let def = journey.definition();
    let holds = def.steps.iter().flat_map(|step| match &step.kind {
        StepKind::HoldUntil(hold) => hold.branches.iter().map(|b| b.event.as_str()).collect(),
        _ => Vec::new(),
    });
    let exits = def.exit_rules.iter().map(|rule| rule.event.as_str());
    let mut events: Vec<&str> = Vec::new();
    for event in holds.chain(exits) {
        if event != def.entry.event && !events.contains(&event) {
            events.push(event);
        }
    }
    events
}

/// Like [`preview`], but the whole rendered send: destination, method, filled path and
/// payload (`SendTestEvent` delivers exactly this).
pub fn preview_send(
    journey: &Journey,
    step_key: &str,
    sample_event: &Event,
    others: &[Event],
    traits: &Json,
    now: Timestamp,
) -> Result<SendRequest, PreviewError> {
    let holdable = context_events(journey);
    if let Some((index, other)) = others
        .iter()
        .enumerate()
        .find(|(_, e)| !holdable.contains(&e.event.as_str()))
    {
        let allowed = if holdable.is_empty() {
            "it holds only the entry event, whose sample is `sample_event`".to_owned()
        } else {
            format!(
                "besides the entry event, whose sample is `sample_event`: {}",
                holdable.join(", ")
            )
        };
        return Err(PreviewError::NotInContext {
            index,
            event: other.event.clone(),
            allowed,
        });
    }
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
    for other in others {
        instance
            .context
            .insert(other.event.clone(), other.properties.clone());
    }
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
    use proptest::prelude::*;
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

    fn json_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            // Quotes, backslashes, control characters and multi-byte text.
            "[a\"\\\u{0}-\u{1f}é€😀]{0,12}".prop_map(Json::from),
        ];
        leaf.prop_recursive(3, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                prop::collection::btree_map("[a\"\u{1}é]{0,4}", inner, 0..6)
                    .prop_map(|map| Json::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The quick size check decides exactly as the exact size would, at every limit
        /// around the size.
        #[test]
        fn size_check_agrees_with_the_exact_size(value in json_value(), slack in 0usize..8) {
            let size = json_size(&value);
            for limit in [size.saturating_sub(slack), size, size + slack] {
                let expected = if size > limit { Err(size) } else { Ok(()) };
                prop_assert_eq!(check_size(&value, limit), expected);
            }
        }
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
        let payload = preview(&j, "nudge", &sample, &[], &traits, t0()).unwrap();
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
            preview(&j, "wait_purchase", &sample, &[], &traits, t0()),
            Err(PreviewError::NotASendStep("wait_purchase".into()))
        );
    }

    #[test]
    fn preview_puts_samples_of_hold_and_exit_events_in_the_context() {
        let j = journey_with(
            EntryRule::ReenterEveryTime {
                unique_identifier: "session_id".into(),
            },
            vec![],
        );
        let sample = event("checkout_started", json!({"session_id": "s9"}));
        let bought = event("purchase_completed", json!({"order_id": "o-1"}));
        let payload = preview(&j, "nudge", &sample, &[bought], &json!({}), t0()).unwrap();
        assert_eq!(
            payload["properties"]["journey_context"]["purchase_completed"],
            json!({"order_id": "o-1"})
        );
        let stray = event("page_viewed", json!({}));
        let err = preview(&j, "nudge", &sample, &[stray], &json!({}), t0()).unwrap_err();
        assert!(
            matches!(&err, PreviewError::NotInContext { index: 0, event, allowed }
                if event == "page_viewed" && allowed.contains("purchase_completed")),
            "{err:?}"
        );
    }
}
