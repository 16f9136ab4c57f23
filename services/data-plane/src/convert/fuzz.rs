//! Bounded fuzzing of the gRPC edge's conversion: `journeys.v1.Event` → [`Event`].
//!
//! Property-based generation (proptest, stable toolchain) of arbitrary bytes decoded as an
//! `Event` on the wire, and of structured events whose fields take arbitrary ids, enum numbers,
//! `Struct`s (non-finite numbers, nesting, odd keys) and timestamps out of range; then the corpus
//! in `services/data-plane/fuzz/proto-corpus` (wire encodings, in hex) is replayed. Each event is
//! either converted into one that holds the edge's promises (a message id, a profile id, ids the
//! store can index, the call's type) or refused with a code, the path of the field at fault and
//! a message; nothing panics.
//!
//! CI runs `JOURNEYS_FUZZ_CASES` cases per target (256 unless set); a longer run is
//! `JOURNEYS_FUZZ_CASES=200000 cargo test -p journeys-data-plane fuzz`.

use proptest::prelude::*;
use prost::Message as _;
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

use super::event_from_proto;
use crate::MAX_ID_CHARS;
use crate::segment::fuzz::{config, corpus, now};
use journeys_core::model::EventType;
use journeys_proto::v1 as pb;

/// The types a call may force: none (the stream), track and identify (the unary calls).
const FORCED: [Option<EventType>; 3] = [None, Some(EventType::Track), Some(EventType::Identify)];

const PREFIX: &str = "events[3].";

/// Converts `event` as each call would and checks the outcome.
fn check(event: &pb::Event) -> Result<(), TestCaseError> {
    for forced in FORCED {
        match event_from_proto(event.clone(), forced, PREFIX, now()) {
            Ok(converted) => {
                prop_assert!(!converted.message_id.is_empty(), "{converted:?}");
                prop_assert!(converted.message_id.chars().count() <= MAX_ID_CHARS);
                let profile = converted.profile_id();
                prop_assert!(
                    profile.is_some(),
                    "an event without a profile: {converted:?}"
                );
                prop_assert!(profile.is_some_and(|p| p.chars().count() <= MAX_ID_CHARS));
                prop_assert!(converted.properties.is_object() && converted.traits.is_object());
                if let Some(forced) = forced {
                    prop_assert_eq!(converted.kind, forced);
                }
            }
            Err(error) => {
                prop_assert!(
                    !error.description.is_empty(),
                    "a refusal says why: {error:?}"
                );
                prop_assert!(
                    error.field.starts_with(PREFIX.trim_end_matches('.')),
                    "a refusal names the field in the request: {error:?}"
                );
            }
        }
    }
    Ok(())
}

/// Ids as clients send them, and as they should not: empty, blank, padded, too long, control
/// and non-BMP characters.
fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9_-]{1,12}",
        2 => "\\PC{0,16}",
        1 => Just(String::new()),
        1 => Just("   ".to_owned()),
        1 => Just("u1 ".to_owned()),
        1 => Just("x".repeat(MAX_ID_CHARS + 1)),
        1 => Just("\u{0}\u{1f600}\u{202e}".to_owned()),
    ]
}

/// A `Struct` value, a few levels deep, with the numbers JSON has no room for.
fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        Just(Kind::NumberValue(f64::NAN)),
        Just(Kind::NumberValue(f64::INFINITY)),
        Just(Kind::NumberValue(9_007_199_254_740_993.0)),
        "\\PC{0,12}".prop_map(Kind::StringValue),
    ]
    .prop_map(|kind| Value { kind: Some(kind) });
    let leaf = prop_oneof![9 => leaf, 1 => Just(Value { kind: None })];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|values| Value {
                kind: Some(Kind::ListValue(ListValue { values }))
            }),
            any_struct_of(inner).prop_map(|s| Value {
                kind: Some(Kind::StructValue(s))
            }),
        ]
    })
}

fn any_struct_of(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Struct> {
    prop::collection::btree_map("\\PC{0,8}", value, 0..6).prop_map(|fields| Struct { fields })
}

fn any_struct() -> impl Strategy<Value = Option<Struct>> {
    prop::option::of(any_struct_of(any_value()))
}

fn any_timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    let seconds = prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        Just(253_402_300_800),
        -62_135_596_800i64..253_402_300_799,
    ];
    let nanos = prop_oneof![0i32..1_000_000_000, any::<i32>()];
    prop::option::of(
        (seconds, nanos).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn any_event() -> impl Strategy<Value = pb::Event> {
    (
        prop_oneof![4 => 0i32..7, 1 => any::<i32>()],
        any_id(),
        any_id(),
        any_id(),
        prop_oneof![3 => "[a-z_]{1,16}", 1 => any_id()],
        any_struct(),
        any_struct(),
        any_struct(),
        any_timestamp(),
    )
        .prop_map(
            |(kind, message_id, user_id, anonymous_id, event, properties, traits, context, at)| {
                pb::Event {
                    r#type: kind,
                    message_id,
                    user_id,
                    anonymous_id,
                    event,
                    properties,
                    traits,
                    context,
                    timestamp: at,
                }
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_wire_bytes_convert_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        // What prost refuses never reaches the conversion; what it decodes must convert cleanly.
        if let Ok(event) = pb::Event::decode(&bytes[..]) {
            check(&event)?;
        }
    }

    #[test]
    fn structured_events_convert_or_name_the_field(event in any_event()) {
        check(&event)?;
        // The same event through the wire: what the server decodes is what was sent.
        let decoded = pb::Event::decode(&event.encode_to_vec()[..]);
        prop_assert!(decoded.is_ok(), "{decoded:?}");
    }

    #[test]
    fn oversized_events_are_refused_by_size(padding in 32_768usize..40_000) {
        let event = pb::Event {
            user_id: "u1".to_owned(),
            event: "e".to_owned(),
            properties: Some(Struct {
                fields: [(
                    "blob".to_owned(),
                    Value { kind: Some(Kind::StringValue("x".repeat(padding))) },
                )]
                .into(),
            }),
            ..pb::Event::default()
        };
        let refused = event_from_proto(event, None, PREFIX, now());
        prop_assert!(
            matches!(&refused, Err(e) if e.field == "events[3]" && e.description.contains("bytes")),
            "{refused:?}"
        );
    }
}

/// Every wire encoding of the corpus: `ok-*` files convert on the stream (no forced type),
/// `err-*` files are refused; none panics.
#[test]
fn the_proto_corpus_replays() {
    for (name, path) in corpus("fuzz/proto-corpus", 6) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let bytes = hex_bytes(&text).unwrap_or_else(|| panic!("{name}: not hex"));
        let event = pb::Event::decode(&bytes[..]).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Err(e) = check(&event) {
            panic!("{name}: {e}");
        }
        let outcome = event_from_proto(event, None, PREFIX, now());
        if name.starts_with("ok-") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        } else if name.starts_with("err-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        }
    }
}

/// The bytes of hex text, whitespace ignored.
fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}
