//! Bounded fuzzing of journey definitions as operators send them: the example definitions
//! (proto JSON) with values replaced by arbitrary JSON at random places, read as a `Journey`
//! (the proto3 JSON mapping), converted and validated. Reading either refuses with a message,
//! or conversion and validation give a definition or problems that each name a field path;
//! validation never panics and stays fast on what it is given.
//!
//! CI runs `JOURNEYS_FUZZ_CASES` cases (256 unless set); a longer run is
//! `JOURNEYS_FUZZ_CASES=100000 cargo test -p journeys --test fuzz_definitions`.

use journeys::ctl::input::message;
use journeys_core::validate::{ValidationOptions, validate};
use journeys_proto::convert::journey_in;
use journeys_proto::v1 as pb;
use proptest::prelude::*;
use serde_json::{Value as Json, json};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("JOURNEYS_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn examples() -> Vec<Json> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|t| serde_json::from_str::<Json>(&t).ok())
        .map(|v| v["journey"].clone())
        .collect()
}

fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        "\\PC{0,10}".prop_map(Json::String),
        prop_oneof![
            Just("0s"),
            Just("-5s"),
            Just("1e309s"),
            Just("3600s"),
            Just("99999999999s"),
            Just("start"),
            Just("nudge"),
            Just("purchased"),
            Just("done"),
            Just(""),
            Just("REENTER_EVERY_TIME"),
            Just("ENTER_ONCE"),
            Just("EQUALS"),
            Just("$.a"),
        ]
        .prop_map(|s| Json::String(s.to_owned())),
        Just(Json::String("k".repeat(300))),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Replaces the value at the `pick`-th position of a depth-first walk of `value` by `with`.
fn replace_nth(value: &mut Json, pick: &mut usize, with: &Json) -> bool {
    if *pick == 0 {
        *value = with.clone();
        return true;
    }
    *pick -= 1;
    match value {
        Json::Array(items) => items.iter_mut().any(|v| replace_nth(v, pick, with)),
        Json::Object(map) => map.values_mut().any(|v| replace_nth(v, pick, with)),
        _ => false,
    }
}

fn check(definition: &Json) -> Result<(), TestCaseError> {
    let Ok(journey) = message::<pb::Journey>(definition, "journey") else {
        // Refused while reading, with a message naming the field (the CLI's own tests check
        // the wording); nothing else to check.
        return Ok(());
    };
    let mut problems = Vec::new();
    let definition = journey_in::definition(&journey, &mut problems);
    problems.extend(validate(&definition, &ValidationOptions::default()));
    for problem in &problems {
        prop_assert!(!problem.message.is_empty(), "{problem:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn example_definitions_with_values_replaced_are_validated_or_refused(
        example in any::<prop::sample::Index>(),
        edits in prop::collection::vec((0usize..200, any_json()), 1..4),
    ) {
        let all = examples();
        prop_assume!(!all.is_empty());
        let mut definition = all[example.index(all.len())].clone();
        for (position, with) in &edits {
            let mut pick = *position;
            replace_nth(&mut definition, &mut pick, with);
        }
        check(&definition)?;
    }

    #[test]
    fn many_steps_pointing_anywhere_are_validated(
        targets in prop::collection::vec(0usize..400, 1..400),
    ) {
        // Long chains and cycles: validation stays bounded (the 4,000-step case of the
        // hostile-input report produced a 110 MB error).
        let steps: Vec<Json> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| json!({"key": format!("s{i}"), "name": "step",
                                 "delay": {"duration": "3600s", "next": format!("s{t}")}}))
            .collect();
        let definition = json!({"id": "fuzz", "name": "fuzz", "entry": {"event": "e"},
                                "entry_rule": "ENTER_ONCE", "start_step": "s0", "steps": steps});
        check(&definition)?;
    }
}
