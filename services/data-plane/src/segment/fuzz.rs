//! Bounded fuzzing of what the HTTP port parses before anything is stored: the gzip decoder,
//! the write-key peek, the JSON body and its Segment events.
//!
//! Property-based generation (proptest, stable toolchain) of arbitrary bytes, of gzip members
//! around them, and of Segment-shaped bodies whose fields take arbitrary JSON; then the corpus
//! in `services/data-plane/fuzz/corpus` (inputs that once mattered) is replayed. Each input is
//! either turned into events that hold the edge's promises (a message id, a profile id, ids
//! the store can index) or refused with a code and a message; nothing panics.
//!
//! CI runs `JOURNEYS_FUZZ_CASES` cases per target (256 unless set); a longer run is
//! `JOURNEYS_FUZZ_CASES=200000 cargo test -p journeys-data-plane fuzz`.

use std::io::Write as _;

use chrono::TimeZone;
use proptest::prelude::*;
use serde_json::{Map, Value as Json, json};

use super::{Body, Endpoint};
use crate::MAX_ID_CHARS;
use journeys_core::model::{EventType, Timestamp};

fn cases() -> u32 {
    std::env::var("JOURNEYS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

pub(crate) fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Failures are shrunk and reported; no regression files are written into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

pub(crate) fn now() -> Timestamp {
    chrono::Utc
        .with_ymd_and_hms(2026, 3, 4, 5, 6, 7)
        .single()
        .unwrap_or_default()
}

const ENDPOINTS: [Endpoint; 4] = [
    Endpoint::Batch,
    Endpoint::Single(EventType::Track),
    Endpoint::Single(EventType::Identify),
    Endpoint::Single(EventType::Alias),
];

/// Parses `bytes` as a body posted to each endpoint and checks the outcome.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    // The peek reads the top-level key only; it may refuse, never panic.
    let _ = Body::peek_write_key(bytes);
    for endpoint in ENDPOINTS {
        let parsed = Body::parse(bytes).and_then(|body| body.into_events(endpoint, now()));
        match parsed {
            Ok(events) => {
                for event in &events {
                    prop_assert!(!event.message_id.is_empty(), "{event:?}");
                    prop_assert!(event.message_id.chars().count() <= MAX_ID_CHARS);
                    let profile = event.profile_id();
                    prop_assert!(profile.is_some(), "an event without a profile: {event:?}");
                    prop_assert!(profile.is_some_and(|p| p.chars().count() <= MAX_ID_CHARS));
                    prop_assert!(event.properties.is_object() && event.traits.is_object());
                    prop_assert!(event.source_id.is_none(), "the source is set after parsing");
                }
            }
            Err(error) => {
                prop_assert!(
                    !error.description.is_empty(),
                    "a refusal says why: {error:?}"
                );
            }
        }
    }
    Ok(())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// Arbitrary JSON, a few levels deep, with the values that trip parsers: big and fractional
/// numbers, empty and long strings, control and non-BMP characters.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        "\\PC{0,12}".prop_map(Json::String),
        Just(Json::String("x".repeat(MAX_ID_CHARS + 1))),
        Just(Json::String("\u{0}\u{1f600}\u{202e}".into())),
        Just(json!("2026-13-45T25:61:61Z")),
        Just(json!("2026-03-04T05:06:07.123+02:00")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// A Segment call: the known fields, each present or not, with arbitrary or typical values.
fn segment_call() -> impl Strategy<Value = Json> {
    let field = |name: &'static str, typical: Json| {
        prop_oneof![
            2 => Just(None),
            4 => Just(Some((name, typical))),
            3 => any_json().prop_map(move |v| Some((name, v))),
        ]
    };
    (
        field("type", json!("track")),
        field("userId", json!("u1")),
        field("anonymousId", json!("a1")),
        field("messageId", json!("m1")),
        field("event", json!("checkout_started")),
        field("properties", json!({"session_id": "s1", "total": 42})),
        field("traits", json!({"email": "a@example.com"})),
        field("timestamp", json!("2026-03-04T05:06:07Z")),
        field("previousId", json!("a0")),
        field("context", json!({"ip": "127.0.0.1"})),
    )
        .prop_map(|fields| {
            let (a, b, c, d, e, f, g, h, i, j) = fields;
            let object: Map<String, Json> = [a, b, c, d, e, f, g, h, i, j]
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            Json::Object(object)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_are_parsed_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }

    #[test]
    fn arbitrary_gzip_members_decode_or_are_refused(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cut in any::<prop::sample::Index>(),
        members in 1usize..3,
    ) {
        // Whole members, one after another, decode to their concatenation.
        let mut stream = Vec::new();
        for _ in 0..members {
            stream.extend(gzip(&bytes));
        }
        let decoded = crate::http::gunzip(&stream);
        prop_assert!(decoded.is_ok(), "{decoded:?}");
        if let Ok(decoded) = decoded {
            prop_assert_eq!(decoded.len(), bytes.len() * members);
            check(&decoded)?;
        }
        // A cut stream, or the raw bytes taken for gzip, is refused with a message.
        let cut = cut.index(stream.len().max(1));
        if let Err(error) = crate::http::gunzip(&stream[..cut]) {
            prop_assert!(!error.description.is_empty());
        }
        if let Err(error) = crate::http::gunzip(&bytes) {
            prop_assert!(!error.description.is_empty());
        }
    }

    #[test]
    fn segment_shaped_bodies_give_valid_events_or_name_the_field(
        call in segment_call(),
        batch in prop::collection::vec(segment_call(), 0..5),
    ) {
        check(&serde_json::to_vec(&call).unwrap_or_default())?;
        let body = json!({"batch": batch, "writeKey": "k"});
        check(&serde_json::to_vec(&body).unwrap_or_default())?;
    }
}

/// The files of the corpus in `dir` (relative to the crate), with their names, in name order;
/// at least `at_least` of them.
pub(crate) fn corpus(dir: &str, at_least: usize) -> Vec<(String, std::path::PathBuf)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    assert!(
        files.len() >= at_least,
        "the corpus is at {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            (name.to_owned(), path)
        })
        .collect()
}

/// Every input of the corpus, plain and gzip-wrapped: `ok-*` files give events on the batch
/// endpoint, `err-*` files are refused; none panics.
#[test]
fn the_corpus_replays() {
    for (name, path) in corpus("fuzz/corpus", 10) {
        let name = name.as_str();
        let bytes = std::fs::read(&path).unwrap_or_default();
        if let Err(e) = check(&bytes) {
            panic!("{name}: {e}");
        }
        let decoded = crate::http::gunzip(&gzip(&bytes)).map(|b| b.to_vec());
        assert_eq!(decoded.as_deref().ok(), Some(&bytes[..]), "{name}");
        let outcome = Body::parse(&bytes).and_then(|body| body.into_events(Endpoint::Batch, now()));
        if name.starts_with("ok-") {
            assert!(outcome.is_ok(), "{name}: {outcome:?}");
        } else if name.starts_with("err-") {
            assert!(outcome.is_err(), "{name}: {outcome:?}");
        }
    }
}
