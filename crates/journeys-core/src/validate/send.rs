//! Send specs, shared by send steps (`steps[i].send`) and exit-rule sends (`exit_rules[i].send`).

use std::collections::HashMap;

use super::{Limits, Report};
use crate::model::SendSpec;

/// Methods a webhook action may use.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// `is_step` tells a send step (whose event name defaults to the step name) from an exit-rule
/// send.
pub(super) fn check_send_spec(
    r: &mut Report,
    path: &str,
    spec: &SendSpec,
    is_step: bool,
    limits: &Limits,
) {
    if spec.destination_id.trim().is_empty() {
        r.push(
            format!("{path}.destination_id"),
            "destination_id is required",
        );
    }
    if !METHODS.contains(&spec.action.method.as_str()) {
        r.push(
            format!("{path}.action.method"),
            format!(
                "method '{}' is not one of {}",
                spec.action.method,
                METHODS.join(", ")
            ),
        );
    }

    // Without an event name, a send step's name is sent; it is held to the same limit at
    // `steps[i].name`, so only an explicit event name is checked here.
    if let Some(name) = spec.event_name.as_deref() {
        let chars = name.chars().count();
        if name.trim().is_empty() {
            let default = if is_step {
                "the step name"
            } else {
                "the default event name"
            };
            r.push(
                format!("{path}.event_name"),
                format!("event_name is empty; leave it unset to use {default}"),
            );
        } else if chars > limits.max_name_chars {
            r.push(
                format!("{path}.event_name"),
                format!(
                    "event_name is {chars} characters long, at most {} allowed",
                    limits.max_name_chars
                ),
            );
        }
    }

    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (k, t) in spec.traits.iter().enumerate() {
        let trait_path = format!("{path}.traits[{k}]");
        if t.trim().is_empty() {
            r.push(trait_path, "trait name is required");
        } else if let Some(first) = seen.get(t.as_str()) {
            r.push(
                trait_path,
                format!("trait '{t}' is already listed at traits[{first}]"),
            );
        } else {
            seen.insert(t, k);
        }
    }

    if let Some(mapping) = &spec.mapping {
        let mapping_path = format!("{path}.mapping");
        if !mapping.is_object() {
            r.push(mapping_path, "mapping must be a JSON object");
            return;
        }
        for p in crate::mapping::validate(mapping) {
            r.push(join_mapping_path(&mapping_path, &p.path), p.message);
        }
        let fields = crate::mapping::count_fields(mapping);
        if fields > limits.max_mapped_fields {
            r.push(
                mapping_path,
                format!(
                    "mapping has {fields} fields, at most {} allowed",
                    limits.max_mapped_fields
                ),
            );
        }
    }
}

/// Mapping problem paths are relative to the mapping root: `""` is the root, `a.@path` a key,
/// `["a.b"]` or `[0]` a bracketed segment.
fn join_mapping_path(mapping_path: &str, relative: &str) -> String {
    if relative.is_empty() {
        mapping_path.to_owned()
    } else if relative.starts_with('[') {
        format!("{mapping_path}{relative}")
    } else {
        format!("{mapping_path}.{relative}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::problem::Problem;
    use crate::validate::testkit::send_spec;

    fn check(spec: &SendSpec, is_step: bool) -> Vec<Problem> {
        let mut r = Report::default();
        check_send_spec(&mut r, "s", spec, is_step, &Limits::default());
        r.problems
    }

    fn paths(spec: &SendSpec, is_step: bool) -> Vec<String> {
        check(spec, is_step).into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn a_plain_send_is_valid() {
        assert!(check(&send_spec("dest_1"), true).is_empty());
        assert!(check(&send_spec("dest_1"), false).is_empty());
    }

    #[test]
    fn destination_is_required() {
        assert_eq!(
            check(&send_spec(" "), false),
            [Problem::new(
                "s.destination_id",
                "destination_id is required"
            )]
        );
    }

    #[test]
    fn method_is_an_upper_case_http_method() {
        let mut spec = send_spec("d");
        for ok in METHODS {
            spec.action.method = ok.into();
            assert!(check(&spec, false).is_empty(), "{ok}");
        }
        spec.action.method = "post".into();
        assert_eq!(
            check(&spec, false),
            [Problem::new(
                "s.action.method",
                "method 'post' is not one of GET, POST, PUT, PATCH, DELETE"
            )]
        );
        spec.action.method = "HEAD".into();
        assert_eq!(paths(&spec, false), ["s.action.method"]);
    }

    #[test]
    fn event_name_is_at_most_73_characters_and_not_blank() {
        let mut spec = send_spec("d");
        spec.event_name = Some("e".repeat(73));
        assert!(check(&spec, true).is_empty());
        spec.event_name = Some("é".repeat(74));
        assert_eq!(
            check(&spec, true),
            [Problem::new(
                "s.event_name",
                "event_name is 74 characters long, at most 73 allowed"
            )]
        );
        spec.event_name = Some(String::new());
        assert_eq!(
            check(&spec, true),
            [Problem::new(
                "s.event_name",
                "event_name is empty; leave it unset to use the step name"
            )]
        );
        assert_eq!(paths(&spec, false), ["s.event_name"]);
    }

    #[test]
    fn traits_are_non_empty_and_distinct() {
        let mut spec = send_spec("d");
        spec.traits = vec!["email".into(), String::new(), "plan".into(), "email".into()];
        assert_eq!(
            check(&spec, false),
            [
                Problem::new("s.traits[1]", "trait name is required"),
                Problem::new(
                    "s.traits[3]",
                    "trait 'email' is already listed at traits[0]"
                ),
            ]
        );
    }

    #[test]
    fn mapping_must_be_an_object() {
        let mut spec = send_spec("d");
        for bad in [json!([]), json!("x"), json!(null), json!(1)] {
            spec.mapping = Some(bad);
            assert_eq!(
                check(&spec, false),
                [Problem::new("s.mapping", "mapping must be a JSON object")]
            );
        }
        spec.mapping = Some(json!({"email": {"@path": "$.traits.email"}, "kind": "lead"}));
        assert!(check(&spec, false).is_empty(), "{:#?}", check(&spec, false));
    }

    #[test]
    fn mapping_problems_are_located_inside_the_mapping() {
        let mut spec = send_spec("d");
        spec.mapping = Some(json!({"properties": {"total": {"@path": 42}}}));
        let problems = check(&spec, false);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].path, "s.mapping.properties.total.@path");
    }

    #[test]
    fn mapping_has_at_most_100_fields() {
        let mut spec = send_spec("d");
        let fields = |n: usize| {
            serde_json::Value::Object((0..n).map(|i| (format!("f{i}"), json!(i))).collect())
        };
        spec.mapping = Some(fields(100));
        assert!(check(&spec, false).is_empty());
        spec.mapping = Some(fields(101));
        assert_eq!(
            check(&spec, false),
            [Problem::new(
                "s.mapping",
                "mapping has 101 fields, at most 100 allowed"
            )]
        );
    }

    #[test]
    fn mapping_paths_join_without_doubling_separators() {
        assert_eq!(join_mapping_path("m", ""), "m");
        assert_eq!(join_mapping_path("m", "a.@path"), "m.a.@path");
        assert_eq!(join_mapping_path("m", "[\"a.b\"].c"), "m[\"a.b\"].c");
    }
}
