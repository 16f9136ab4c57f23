//! Golden table for the mapping engine, read from `tests/golden/*.json`.
//!
//! The cases come from mapping-kit's documentation (its README examples) and its shared
//! directive fixtures, so a mapping written for Segment renders the same here; cases named
//! `divergence: ...` pin the few places where this engine deliberately differs. Each case is
//! one of:
//! - `{"name", "mapping", "input", "output"}`: the mapping is valid and renders `output`;
//! - `{"name", "mapping", "input", "error"}`: the mapping is valid but rendering this input fails
//!   with an error whose message contains `error`;
//! - `{"name", "mapping", "problems"}`: validation reports problems at exactly these paths.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]
// The golden cases are files: this test reads them, the core it tests does not.
#![allow(clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use journeys_core::mapping::{self, MappingError};

/// The table must stay at least this large; a glob that silently matched nothing would
/// otherwise pass.
const MIN_CASES: usize = 60;

struct Case {
    file: String,
    name: String,
    body: Value,
}

fn load_cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let parsed: Value = serde_json::from_str(&text)
            .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()));
        let Value::Array(entries) = parsed else {
            panic!("{} must hold an array of cases", path.display());
        };
        let file = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        for body in entries {
            let name = body["name"].as_str().unwrap_or("(unnamed)").to_owned();
            cases.push(Case {
                file: file.clone(),
                name,
                body,
            });
        }
    }
    cases
}

/// Checks one case; returns a description of the mismatch, if any.
fn check(case: &Case) -> Option<String> {
    let mapping = &case.body["mapping"];
    if let Some(expected) = case.body.get("problems") {
        let mut expected: Vec<&str> = expected
            .as_array()
            .map(|paths| paths.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        expected.sort_unstable();
        let problems = mapping::validate(mapping);
        let mut actual: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        actual.sort_unstable();
        if actual != expected {
            return Some(format!(
                "expected problems at {expected:?}, got {:?}",
                problems.iter().map(ToString::to_string).collect::<Vec<_>>()
            ));
        }
        return match mapping::render(mapping, &Value::Null) {
            Err(MappingError::Invalid(_)) => None,
            other => Some(format!(
                "render should refuse an invalid mapping, got {other:?}"
            )),
        };
    }

    let problems = mapping::validate(mapping);
    if !problems.is_empty() {
        return Some(format!(
            "expected a valid mapping, got {:?}",
            problems.iter().map(ToString::to_string).collect::<Vec<_>>()
        ));
    }
    let input = &case.body["input"];
    let rendered = mapping::render(mapping, input);
    let compiled = mapping::compile(mapping)
        .map_err(|problems| format!("compile failed: {problems:?}"))
        .and_then(|compiled| compiled.render(input).map_err(|err| err.to_string()));

    if let Some(expected) = case.body.get("error").and_then(Value::as_str) {
        return match rendered {
            Err(err) if err.to_string().contains(expected) => None,
            other => Some(format!(
                "expected an error containing {expected:?}, got {other:?}"
            )),
        };
    }
    let expected = case.body.get("output").unwrap_or(&Value::Null);
    match (rendered, compiled) {
        (Ok(rendered), Ok(compiled)) if &rendered == expected && &compiled == expected => None,
        (rendered, compiled) => Some(format!(
            "expected {expected}, render gave {rendered:?}, compiled render gave {compiled:?}"
        )),
    }
}

#[test]
fn golden_cases_render_as_mapping_kit_documents() {
    let cases = load_cases();
    assert!(
        cases.len() >= MIN_CASES,
        "expected at least {MIN_CASES} golden cases, found {}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case).map(|why| format!("[{}] {}: {why}", case.file, case.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_case_has_exactly_one_expectation() {
    for case in load_cases() {
        let kinds = ["output", "error", "problems"]
            .iter()
            .filter(|key| case.body.get(**key).is_some())
            .count();
        assert_eq!(kinds, 1, "[{}] {}", case.file, case.name);
        assert!(
            case.body.get("mapping").is_some(),
            "[{}] {}",
            case.file,
            case.name
        );
    }
}
