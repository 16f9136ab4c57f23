//! Bounded fuzzing of the mapping engine: mappings drawn from a grammar of every directive
//! (nested, with arbitrary arguments) and from the golden cases with their arguments replaced,
//! rendered against arbitrary inputs. Compiling either refuses with problems that name a path,
//! or gives a mapping that renders or fails with an error; a rendered string never passes the
//! rendering budget; nothing panics.
//!
//! CI runs `JOURNEYS_FUZZ_CASES` cases per target (256 unless set); a longer run is
//! `JOURNEYS_FUZZ_CASES=200000 cargo test -p journeys-core --test fuzz_mapping`.

// The golden cases are files and the case count a variable: this test reads them, the core it
// tests does not.
#![allow(clippy::disallowed_methods)]

use journeys_core::mapping::{self, MAX_RENDERED_STRING_BYTES};
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

/// JSON leaves and small containers, with paths, templates and sizes that matter here.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number)),
        "\\PC{0,10}".prop_map(Json::String),
        prop_oneof![
            Just("$.a"),
            Just("$.h.key2[1]"),
            Just("$.properties.*"),
            Just("$"),
            Just("$..x"),
            Just("$.a["),
            Just("{{a}} and {{h.key1}}"),
            Just("{{"),
        ]
        .prop_map(|s| Json::String(s.to_owned())),
        Just(Json::String("x".repeat(4096))),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..5)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

const DIRECTIVES: [&str; 14] = [
    "@path",
    "@template",
    "@literal",
    "@if",
    "@arrayPath",
    "@case",
    "@replace",
    "@merge",
    "@transform",
    "@excludeWhenNull",
    "@flatten",
    "@json",
    "@field",
    "@nope",
];

/// Mappings: plain values, or objects of directives and fields whose arguments are
/// mappings or arbitrary JSON, a few levels deep.
fn any_mapping() -> impl Strategy<Value = Json> {
    any_json().prop_recursive(4, 48, 4, |inner| {
        let argument = prop_oneof![inner, any_json()];
        prop_oneof![
            // One directive with an argument.
            (prop::sample::select(&DIRECTIVES[..]), argument.clone())
                .prop_map(|(d, arg)| json!({ d: arg })),
            // A directive with the object form many take.
            (
                prop::sample::select(&DIRECTIVES[..]),
                prop::collection::btree_map(
                    prop::sample::select(&[
                        "value", "operator", "pattern", "replacement", "global", "ignorecase",
                        "exists", "then", "else", "blank", "direction", "separator", "mode",
                        "format", "key", "object", "yes", "no",
                    ][..]),
                    argument.clone(),
                    0..4,
                ),
            )
                .prop_map(|(d, args)| json!({ d: Json::Object(args.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()) })),
            // Fields holding mappings.
            prop::collection::btree_map("[a-z]{1,4}", argument, 1..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn golden() -> Vec<(Json, Json)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Ok(Json::Array(items)) = serde_json::from_str::<Json>(&text) else {
            continue;
        };
        for item in items {
            cases.push((item["mapping"].clone(), item["input"].clone()));
        }
    }
    cases
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

fn check(mapping: &Json, input: &Json) -> Result<(), TestCaseError> {
    match mapping::compile(mapping) {
        Err(problems) => {
            prop_assert!(!problems.is_empty());
        }
        Ok(compiled) => {
            if let Ok(output) = compiled.render(input) {
                let size = serde_json::to_vec(&output).map_or(0, |b| b.len());
                // Each string is bounded by the budget; a whole payload may hold several.
                prop_assert!(
                    size <= 64 * MAX_RENDERED_STRING_BYTES,
                    "a {size}-byte payload from {mapping}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn generated_mappings_compile_and_render_or_are_refused(
        mapping in any_mapping(),
        input in any_json(),
    ) {
        check(&mapping, &input)?;
        let standard = json!({"a": 1, "b": "MAKE ME LOWER", "h": {"key1": "v", "key2": ["hi", true, null]},
                              "properties": {"x": "y"}});
        check(&mapping, &standard)?;
    }

    #[test]
    fn golden_mappings_with_arguments_replaced(
        case in any::<prop::sample::Index>(),
        position in 0usize..64,
        with in any_json(),
        input in any_json(),
    ) {
        let cases = golden();
        prop_assume!(!cases.is_empty());
        let (mut mapping, golden_input) = cases[case.index(cases.len())].clone();
        let mut pick = position;
        replace_nth(&mut mapping, &mut pick, &with);
        check(&mapping, &golden_input)?;
        check(&mapping, &input)?;
    }
}
