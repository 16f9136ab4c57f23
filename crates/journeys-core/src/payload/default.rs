//! The default `track` payload of a send (SPEC.md section 4), built as a tree for sends without
//! a mapping, and read in place by mappings.
//!
//! A mapping usually reads a few leaves of the default payload (`$.userId`,
//! `$.properties.journey_context.<event>.<field>`), and its output replaces the payload. So a
//! mapped send does not build the default payload: [`DefaultPayload`] answers each path from
//! the instance, the journey and the traits where they are, and builds a leaf only when a
//! path reaches it. A path that ends at one of the payload's own objects (`$.properties`, `$.`)
//! builds the whole tree once. Both forms take every leaf from [`leaf`] and every key from the
//! same tables, so they cannot disagree.

use std::cell::OnceCell;

use serde_json::Map;

use super::SendContext;
use crate::mapping::{LazyInput, PathExpr};
use crate::model::Json;

/// A leaf of the default payload that does not come from the instance's context or traits.
#[derive(Clone, Copy)]
enum Leaf {
    Type,
    Event,
    UserId,
    AnonymousId,
    MessageId,
    Timestamp,
    JourneyId,
    JourneyVersion,
    JourneyName,
    SendKey,
    InstanceId,
    StepName,
}

/// How many [`Leaf`] variants there are.
const LEAVES: usize = 12;

/// The leaves of the payload's root, besides `properties` and `context`.
const BODY: [(&str, Leaf); 6] = [
    ("type", Leaf::Type),
    ("event", Leaf::Event),
    ("userId", Leaf::UserId),
    ("anonymousId", Leaf::AnonymousId),
    ("messageId", Leaf::MessageId),
    ("timestamp", Leaf::Timestamp),
];

/// `properties.journey_metadata`.
const METADATA: [(&str, Leaf); 5] = [
    ("journey_id", Leaf::JourneyId),
    ("journey_version", Leaf::JourneyVersion),
    ("journey_name", Leaf::JourneyName),
    ("step_key", Leaf::SendKey),
    ("instance_id", Leaf::InstanceId),
];

/// `context.journeys`.
const JOURNEYS: [(&str, Leaf); 3] = [
    ("step_key", Leaf::SendKey),
    ("step_name", Leaf::StepName),
    ("journey_id", Leaf::JourneyId),
];

const PROPERTIES: &str = "properties";
const JOURNEY_CONTEXT: &str = "journey_context";
const JOURNEY_METADATA: &str = "journey_metadata";
const CONTEXT: &str = "context";
const CONTEXT_JOURNEYS: &str = "journeys";

/// What a send's default payload is made of besides the instance's context.
#[derive(Clone, Copy)]
struct Parts<'a> {
    sc: &'a SendContext<'a>,
    message_id: &'a str,
    send_key: &'a str,
}

/// The value of `leaf`; `None` when the payload leaves it out (`userId` or `anonymousId`).
fn leaf(parts: Parts<'_>, leaf: Leaf) -> Option<Json> {
    let Parts {
        sc,
        message_id,
        send_key,
    } = parts;
    let meta = sc.journey.meta();
    let inst = sc.instance;
    Some(match leaf {
        Leaf::Type => Json::from("track"),
        Leaf::Event => Json::from(sc.spec.event_name.as_deref().unwrap_or(sc.step_name)),
        // The profile id stands in when the instance has neither id.
        Leaf::UserId => match (&inst.user_id, &inst.anonymous_id) {
            (Some(user_id), _) => Json::from(user_id.as_str()),
            (None, None) => Json::from(inst.profile_id.as_str()),
            (None, Some(_)) => return None,
        },
        Leaf::AnonymousId => Json::from(inst.anonymous_id.as_deref()?),
        Leaf::MessageId => Json::from(message_id),
        Leaf::Timestamp => Json::from(sc.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        Leaf::JourneyId => Json::from(meta.id.as_str()),
        Leaf::JourneyVersion => Json::from(meta.version),
        Leaf::JourneyName => Json::from(meta.name.as_str()),
        Leaf::SendKey => Json::from(send_key),
        Leaf::InstanceId => Json::from(inst.id.as_str()),
        Leaf::StepName => Json::from(sc.step_name),
    })
}

/// An object of the leaves in `table`.
fn leaves(parts: Parts<'_>, table: &[(&str, Leaf)]) -> Map<String, Json> {
    table
        .iter()
        .filter_map(|&(key, l)| Some((key.to_owned(), leaf(parts, l)?)))
        .collect()
}

/// The traits the send selects, as the payload's `properties` carry them: under their path as
/// written, and only those the profile has.
fn selected_trait<'a>(sc: &SendContext<'a>, key: &str) -> Option<&'a Json> {
    if sc.spec.traits.iter().any(|path| path == key) {
        crate::path::lookup(sc.traits, key)
    } else {
        None
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
    let parts = Parts {
        sc,
        message_id,
        send_key,
    };
    let mut properties = Map::new();
    for path in &sc.spec.traits {
        if let Some(value) = selected_trait(sc, path) {
            properties.insert(path.clone(), value.clone());
        }
    }
    properties.insert(JOURNEY_CONTEXT.to_owned(), journey_context);
    properties.insert(
        JOURNEY_METADATA.to_owned(),
        Json::Object(leaves(parts, &METADATA)),
    );
    let mut body = leaves(parts, &BODY);
    body.insert(PROPERTIES.to_owned(), Json::Object(properties));
    let mut journeys = Map::new();
    journeys.insert(
        CONTEXT_JOURNEYS.to_owned(),
        Json::Object(leaves(parts, &JOURNEYS)),
    );
    body.insert(CONTEXT.to_owned(), Json::Object(journeys));
    Json::Object(body)
}

/// A send's default payload read in place (see the module documentation): what a mapping
/// renders against. Lives for one render.
pub(crate) struct DefaultPayload<'a> {
    parts: Parts<'a>,
    leaves: [OnceCell<Option<Json>>; LEAVES],
    whole: OnceCell<Json>,
}

impl<'a> DefaultPayload<'a> {
    pub(crate) fn new(sc: &'a SendContext<'a>, message_id: &'a str, send_key: &'a str) -> Self {
        Self {
            parts: Parts {
                sc,
                message_id,
                send_key,
            },
            leaves: Default::default(),
            whole: OnceCell::new(),
        }
    }

    fn leaf(&self, l: Leaf) -> Option<&Json> {
        self.leaves[l as usize]
            .get_or_init(|| leaf(self.parts, l))
            .as_ref()
    }

    /// The payload as a tree, built on first use (with a copy of the journey context).
    fn whole(&self) -> &Json {
        self.whole.get_or_init(|| {
            let Parts {
                sc,
                message_id,
                send_key,
            } = self.parts;
            let context = Json::Object(sc.instance.context.clone());
            default_payload(sc, context, message_id, send_key)
        })
    }

    /// `path` from its piece `depth` on, where the payload has the leaves of `table`.
    fn in_table(&self, path: &PathExpr, depth: usize, table: &[(&str, Leaf)]) -> Option<&Json> {
        let Some(key) = path.key(depth) else {
            return path.lookup(self.whole());
        };
        let &(_, l) = table.iter().find(|(name, _)| *name == key)?;
        path.lookup_from(self.leaf(l)?, depth + 1)
    }

    /// `path` from its piece 1 on, inside `properties`.
    fn in_properties(&self, path: &PathExpr) -> Option<&Json> {
        let sc = self.parts.sc;
        match path.key(1) {
            None => path.lookup(self.whole()),
            Some(JOURNEY_CONTEXT) => match path.key(2) {
                None => path.lookup(self.whole()),
                Some(key) => path.lookup_from(sc.instance.context.get(key)?, 3),
            },
            Some(JOURNEY_METADATA) => self.in_table(path, 2, &METADATA),
            Some(key) => path.lookup_from(selected_trait(sc, key)?, 2),
        }
    }
}

impl LazyInput for DefaultPayload<'_> {
    fn lookup(&self, path: &PathExpr) -> Option<&Json> {
        match path.key(0) {
            None => path.lookup(self.whole()),
            Some(PROPERTIES) => self.in_properties(path),
            Some(CONTEXT) => match path.key(1) {
                None => path.lookup(self.whole()),
                Some(CONTEXT_JOURNEYS) => self.in_table(path, 2, &JOURNEYS),
                Some(_) => None,
            },
            Some(_) => self.in_table(path, 0, &BODY),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::machine::tests::{journey_with, t0};
    use crate::machine::{Admission, Instance};
    use crate::model::{EntryRule, SendAction, SendSpec};

    /// Keys a path may be made of: every key of the default payload, keys of the traits and
    /// context below, and keys that lead nowhere.
    const KEYS: &[&str] = &[
        "",
        "type",
        "event",
        "userId",
        "anonymousId",
        "messageId",
        "timestamp",
        "properties",
        "context",
        "journeys",
        "journey_context",
        "journey_metadata",
        "journey_id",
        "journey_version",
        "journey_name",
        "step_key",
        "step_name",
        "instance_id",
        "email",
        "plan",
        "address.city",
        "address",
        "city",
        "checkout_started",
        "items",
        "0",
        "1",
        "nope",
    ];

    const TRAITS: &[&str] = &[
        "email",
        "plan",
        "address.city",
        "journey_context",
        "journey_metadata",
        "missing",
    ];

    fn keys() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(prop::sample::select(KEYS), 0..6)
            .prop_map(|keys| keys.into_iter().map(str::to_owned).collect())
    }

    /// A mapping that reads `keys` in every way a path can be written (the array form, the
    /// string form and a template placeholder) and through directives that take a path.
    fn mapping(keys: &[String]) -> Json {
        let joined = keys.join(".");
        json!({
            "keys": {"@path": keys},
            "path": {"@path": format!("$.{joined}")},
            "template": {"@template": format!("<{{{{{joined}}}}}>")},
            "exists": {"@if": {"exists": {"@path": keys}, "then": true, "else": false}},
            "json": {"@json": {"mode": "encode", "value": {"@path": keys}}},
            "items": {"@arrayPath": [format!("$.{joined}"), {"first": {"@path": "$.email"}}]},
            "flat": {"@flatten": {"value": {"@path": keys}, "separator": "/"}},
        })
    }

    proptest! {
        /// Whatever path a mapping reads, the default payload read in place gives what the
        /// built payload gives.
        #[test]
        fn reading_in_place_agrees_with_the_built_payload(
            paths in prop::collection::vec(keys(), 1..8),
            selected in prop::sample::subsequence(TRAITS, 0..TRAITS.len()),
            user in any::<bool>(),
            anonymous in any::<bool>(),
            event_name in any::<bool>(),
        ) {
            let journey = journey_with(EntryRule::EnterOnce, vec![]);
            let mut instance = Instance::new(
                &journey,
                "i-1".into(),
                &crate::machine::tests::event("checkout_started", json!({})),
                Admission { profile_id: "p-1".into(), unique_value: None },
                t0(),
            );
            instance.user_id = user.then(|| "u-1".into());
            instance.anonymous_id = anonymous.then(|| "a-1".into());
            instance.context.insert(
                "checkout_started".into(),
                json!({"items": [{"email": 1}, null], "plan": {"0": "zero"}}),
            );
            let spec = SendSpec {
                destination_id: "d".into(),
                action: SendAction::default(),
                event_name: event_name.then(|| "Custom".into()),
                traits: selected.iter().map(|&t| t.to_owned()).collect(),
                mapping: None,
            };
            let traits = json!({
                "email": "x@example.com", "plan": 3, "address": {"city": "Paris"},
                "address.city": "Lyon", "journey_context": "t", "journey_metadata": [1],
            });
            let sc = SendContext {
                journey: &journey,
                instance: &instance,
                step_key: "nudge",
                step_name: "Nudge",
                spec: &spec,
                traits: &traits,
                now: t0(),
                pass: 0,
            };
            let built = default_payload(&sc, Json::Object(instance.context.clone()), "m-1", "k-1");
            let lazy = DefaultPayload::new(&sc, "m-1", "k-1");
            for keys in &paths {
                let compiled = crate::mapping::compile(&mapping(keys)).unwrap();
                prop_assert_eq!(
                    compiled.render_lazy(&lazy).unwrap(),
                    compiled.render(&built).unwrap(),
                    "path {:?}", keys
                );
            }
        }
    }

    #[test]
    fn the_built_payload_has_every_leaf() {
        let journey = journey_with(EntryRule::EnterOnce, vec![]);
        let instance = Instance::new(
            &journey,
            "i-1".into(),
            &crate::machine::tests::event("checkout_started", json!({})),
            Admission {
                profile_id: "u1".into(),
                unique_value: None,
            },
            t0(),
        );
        let spec = SendSpec {
            destination_id: "d".into(),
            action: SendAction::default(),
            event_name: None,
            traits: vec!["email".into()],
            mapping: None,
        };
        let sc = SendContext {
            journey: &journey,
            instance: &instance,
            step_key: "nudge",
            step_name: "Nudge",
            spec: &spec,
            traits: &json!({"email": "x@example.com"}),
            now: t0(),
            pass: 0,
        };
        let meta = journey.meta();
        assert_eq!(
            default_payload(&sc, json!({"e": {}}), "m-1", "k-1"),
            json!({
                "type": "track",
                "event": "Nudge",
                "userId": "u1",
                "messageId": "m-1",
                "timestamp": "2025-03-01T12:00:00.000Z",
                "properties": {
                    "email": "x@example.com",
                    "journey_context": {"e": {}},
                    "journey_metadata": {
                        "journey_id": meta.id,
                        "journey_version": meta.version,
                        "journey_name": meta.name,
                        "step_key": "k-1",
                        "instance_id": "i-1",
                    },
                },
                "context": {"journeys": {"step_key": "k-1", "step_name": "Nudge", "journey_id": meta.id}},
            })
        );
    }
}
