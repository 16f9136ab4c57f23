//! Evaluation of property filters (entry, hold branches, exit rules) and data-split conditions
//! (traits, audiences, journey context).
//!
//! Comparison is JSON-typed: `1` equals `1.0`, `"1"` does not equal `1`, and a value of one
//! type never orders against a value of another. A path that names nothing is *missing*, which
//! is different from a present `null`. Decisions where SPEC.md is silent:
//!
//! - `exists` means present and not `null`; `not_exists` is its negation.
//! - `not_equals` holds for a missing value (the profile does not have that value).
//! - Every other comparing operator is false for a missing value.
//! - `gt`/`gte`/`lt`/`lte` order two numbers numerically and two strings as instants when both
//!   parse as RFC 3339, else lexicographically (byte order); mixed types never match.
//! - `any_of` with a non-array operand behaves like `equals`.
//! - `contains` is a case-sensitive substring test for two strings and an element test (with
//!   JSON-typed equality) for an array; anything else is false.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Number};

use crate::model::{Condition, ConditionOp, ConditionSubject, FilterMatch, Json, PropertyFilter};

/// Audience membership of one profile, given as input so that evaluation needs no store.
///
/// Implemented for the usual set and slice types; a runtime may implement it over whatever
/// it loaded for the profile.
pub trait AudienceMembership {
    /// Whether the profile is a member of the audience with this key.
    fn is_member(&self, key: &str) -> bool;
}

impl AudienceMembership for HashSet<String> {
    fn is_member(&self, key: &str) -> bool {
        self.contains(key)
    }
}

impl AudienceMembership for BTreeSet<String> {
    fn is_member(&self, key: &str) -> bool {
        self.contains(key)
    }
}

impl AudienceMembership for [String] {
    fn is_member(&self, key: &str) -> bool {
        self.iter().any(|k| k == key)
    }
}

impl AudienceMembership for Vec<String> {
    fn is_member(&self, key: &str) -> bool {
        self.as_slice().is_member(key)
    }
}

impl AudienceMembership for [&str] {
    fn is_member(&self, key: &str) -> bool {
        self.contains(&key)
    }
}

/// A profile that belongs to no audience.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAudiences;

impl AudienceMembership for NoAudiences {
    fn is_member(&self, _key: &str) -> bool {
        false
    }
}

/// JSON-typed equality: numbers compare by value (`1 == 1.0`), everything else structurally,
/// recursing with the same rule into arrays and objects.
pub fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => number_cmp(x, y) == Some(Ordering::Equal),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Orders two numbers exactly when both are integers, else as `f64`.
fn number_cmp(x: &Number, y: &Number) -> Option<Ordering> {
    match (as_i128(x), as_i128(y)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
    }
}

fn as_i128(n: &Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// Orders two values of the same kind: numbers numerically, strings as instants when both
/// parse as RFC 3339, else lexicographically. `None` for anything else.
pub fn json_cmp(a: &Json, b: &Json) -> Option<Ordering> {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => number_cmp(x, y),
        (Json::String(x), Json::String(y)) => {
            match (
                chrono::DateTime::parse_from_rfc3339(x),
                chrono::DateTime::parse_from_rfc3339(y),
            ) {
                (Ok(t), Ok(u)) => Some(t.cmp(&u)),
                _ => Some(x.cmp(y)),
            }
        }
        _ => None,
    }
}

/// Whether one filter matches `properties` (an event's `properties` object). A missing property
/// matches nothing, not even `equals: null`.
pub fn filter_matches(filter: &PropertyFilter, properties: &Json) -> bool {
    let Some(actual) = crate::path::lookup(properties, &filter.property) else {
        return false;
    };
    match &filter.matcher {
        FilterMatch::Equals(expected) => json_eq(actual, expected),
        FilterMatch::AnyOf(options) => options.iter().any(|o| json_eq(actual, o)),
    }
}

/// Whether every filter matches (AND); an empty list matches everything.
pub fn filters_match(filters: &[PropertyFilter], properties: &Json) -> bool {
    filters.iter().all(|f| filter_matches(f, properties))
}

/// What a data-split condition is evaluated against.
#[derive(Clone, Copy)]
pub struct ConditionInput<'a> {
    /// The profile's current traits (a JSON object).
    pub traits: &'a Json,
    /// The profile's current audience memberships.
    pub audiences: &'a dyn AudienceMembership,
    /// The instance's journey context.
    pub context: &'a Map<String, Json>,
}

/// Whether one condition holds.
pub fn condition_holds(condition: &Condition, input: &ConditionInput<'_>) -> bool {
    match &condition.subject {
        ConditionSubject::Audience(key) => match condition.op {
            ConditionOp::InAudience => input.audiences.is_member(key),
            ConditionOp::NotInAudience => !input.audiences.is_member(key),
            // Validation rejects any other operator on an audience; fail closed.
            _ => false,
        },
        ConditionSubject::Trait(path) => compare(
            condition.op,
            crate::path::lookup(input.traits, path),
            condition.value.as_ref(),
        ),
        ConditionSubject::Context(path) => compare(
            condition.op,
            context_lookup(input.context, path),
            condition.value.as_ref(),
        ),
    }
}

/// Whether every condition holds (AND); an empty list holds.
pub fn conditions_hold(conditions: &[Condition], input: &ConditionInput<'_>) -> bool {
    conditions.iter().all(|c| condition_holds(c, input))
}

/// Applies a comparing operator to a possibly missing value. The audience operators are false
/// here: they only apply to audience subjects.
pub fn compare(op: ConditionOp, actual: Option<&Json>, operand: Option<&Json>) -> bool {
    let present = actual.filter(|v| !v.is_null());
    match op {
        ConditionOp::Exists => present.is_some(),
        ConditionOp::NotExists => present.is_none(),
        ConditionOp::NotEquals => match (actual, operand) {
            (None, _) => true,
            (Some(a), Some(b)) => !json_eq(a, b),
            (Some(_), None) => false,
        },
        ConditionOp::InAudience | ConditionOp::NotInAudience => false,
        _ => {
            let (Some(actual), Some(operand)) = (actual, operand) else {
                return false;
            };
            match op {
                ConditionOp::Equals => json_eq(actual, operand),
                ConditionOp::AnyOf => match operand {
                    Json::Array(options) => options.iter().any(|o| json_eq(actual, o)),
                    single => json_eq(actual, single),
                },
                ConditionOp::Gt => json_cmp(actual, operand) == Some(Ordering::Greater),
                ConditionOp::Gte => matches!(
                    json_cmp(actual, operand),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
                ConditionOp::Lt => json_cmp(actual, operand) == Some(Ordering::Less),
                ConditionOp::Lte => matches!(
                    json_cmp(actual, operand),
                    Some(Ordering::Less | Ordering::Equal)
                ),
                ConditionOp::Contains => match (actual, operand) {
                    (Json::String(hay), Json::String(needle)) => hay.contains(needle.as_str()),
                    (Json::Array(items), needle) => items.iter().any(|i| json_eq(i, needle)),
                    _ => false,
                },
                // Handled above.
                ConditionOp::Exists
                | ConditionOp::NotExists
                | ConditionOp::NotEquals
                | ConditionOp::InAudience
                | ConditionOp::NotInAudience => false,
            }
        }
    }
}

/// Resolves a journey-context path: a context key (an event name, or an
/// `"<event> - <branch>"` alias), then a dot path into that event's properties.
///
/// Context keys may themselves contain dots or spaces, so the longest key that prefixes the
/// path (followed by `.` or the end) wins. The stored value is the event's `properties`; for
/// readability `checkout_started.properties.total` is accepted as well as
/// `checkout_started.total` (the literal path is tried first).
pub fn context_lookup<'c>(context: &'c Map<String, Json>, path: &str) -> Option<&'c Json> {
    let path = path.strip_prefix("$.").unwrap_or(path);
    let mut best: Option<(&str, &Json)> = None;
    for (key, value) in context {
        let fits = path == key
            || (path.len() > key.len()
                && path.starts_with(key.as_str())
                && path.as_bytes()[key.len()] == b'.');
        if fits && best.is_none_or(|(k, _)| k.len() < key.len()) {
            best = Some((key, value));
        }
    }
    let (key, value) = best?;
    if path.len() == key.len() {
        return Some(value);
    }
    let rest = &path[key.len() + 1..];
    crate::path::lookup(value, rest).or_else(|| {
        rest.strip_prefix("properties.")
            .and_then(|inner| crate::path::lookup(value, inner))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filter(property: &str, matcher: FilterMatch) -> PropertyFilter {
        PropertyFilter {
            property: property.to_owned(),
            matcher,
        }
    }

    #[test]
    fn equality_is_json_typed() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(!json_eq(&json!(true), &json!(1)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!json_eq(&json!(i64::MAX), &json!(i64::MAX - 1)));
    }

    #[test]
    fn filters_use_dot_paths_and_and_semantics() {
        let props = json!({"cart": {"total": 120, "currency": "EUR"}, "plan": "pro", "n": null});
        assert!(filter_matches(
            &filter("cart.total", FilterMatch::Equals(json!(120.0))),
            &props
        ));
        assert!(!filter_matches(
            &filter("cart.total", FilterMatch::Equals(json!("120"))),
            &props
        ));
        assert!(filter_matches(
            &filter(
                "plan",
                FilterMatch::AnyOf(vec![json!("free"), json!("pro")])
            ),
            &props
        ));
        assert!(!filter_matches(
            &filter("plan", FilterMatch::AnyOf(vec![])),
            &props
        ));
        // Missing never matches; a present null matches `equals: null`.
        assert!(!filter_matches(
            &filter("missing", FilterMatch::Equals(Json::Null)),
            &props
        ));
        assert!(filter_matches(
            &filter("n", FilterMatch::Equals(Json::Null)),
            &props
        ));
        let both = [
            filter("plan", FilterMatch::Equals(json!("pro"))),
            filter("cart.currency", FilterMatch::Equals(json!("USD"))),
        ];
        assert!(!filters_match(&both, &props));
        assert!(filters_match(&both[..1], &props));
        assert!(filters_match(&[], &props));
    }

    #[test]
    fn every_operator_on_values() {
        use ConditionOp::*;
        let v = |j: Json| Some(j);
        assert!(compare(Equals, v(json!(2)).as_ref(), Some(&json!(2.0))));
        assert!(!compare(Equals, None, Some(&json!(2))));
        assert!(compare(NotEquals, v(json!(2)).as_ref(), Some(&json!(3))));
        assert!(compare(NotEquals, None, Some(&json!(3))));
        assert!(!compare(NotEquals, v(json!(3)).as_ref(), Some(&json!(3.0))));
        assert!(compare(
            AnyOf,
            v(json!("b")).as_ref(),
            Some(&json!(["a", "b"]))
        ));
        assert!(compare(AnyOf, v(json!("b")).as_ref(), Some(&json!("b"))));
        assert!(!compare(
            AnyOf,
            v(json!("c")).as_ref(),
            Some(&json!(["a", "b"]))
        ));
        assert!(compare(Exists, v(json!(0)).as_ref(), None));
        assert!(!compare(Exists, v(Json::Null).as_ref(), None));
        assert!(!compare(Exists, None, None));
        assert!(compare(NotExists, None, None));
        assert!(compare(NotExists, v(Json::Null).as_ref(), None));
        assert!(compare(Gt, v(json!(10)).as_ref(), Some(&json!(9.5))));
        assert!(!compare(Gt, v(json!(10)).as_ref(), Some(&json!(10))));
        assert!(compare(Gte, v(json!(10)).as_ref(), Some(&json!(10.0))));
        assert!(compare(Lt, v(json!(-1)).as_ref(), Some(&json!(0))));
        assert!(compare(Lte, v(json!(0)).as_ref(), Some(&json!(0))));
        assert!(!compare(Gt, v(json!("10")).as_ref(), Some(&json!(9))));
        assert!(!compare(Lt, None, Some(&json!(9))));
        assert!(compare(Gt, v(json!("b")).as_ref(), Some(&json!("a"))));
        // Instants compare as times, not as text: 10:00+02:00 is before 09:00Z.
        assert!(compare(
            Lt,
            v(json!("2025-01-01T10:00:00+02:00")).as_ref(),
            Some(&json!("2025-01-01T09:00:00Z"))
        ));
        assert!(compare(
            Gte,
            v(json!("2025-01-01T09:00:00.000Z")).as_ref(),
            Some(&json!("2025-01-01T09:00:00Z"))
        ));
        assert!(compare(
            Contains,
            v(json!("hello world")).as_ref(),
            Some(&json!("o w"))
        ));
        assert!(!compare(
            Contains,
            v(json!("hello")).as_ref(),
            Some(&json!("H"))
        ));
        assert!(compare(
            Contains,
            v(json!([1, "a"])).as_ref(),
            Some(&json!(1.0))
        ));
        assert!(!compare(
            Contains,
            v(json!([1, "a"])).as_ref(),
            Some(&json!("1"))
        ));
        assert!(!compare(Contains, v(json!(12)).as_ref(), Some(&json!(1))));
        assert!(!compare(InAudience, v(json!(true)).as_ref(), None));
    }

    #[test]
    fn conditions_over_traits_audiences_and_context() {
        use ConditionSubject::{Audience, Context, Trait};
        let traits = json!({"plan": "pro", "address": {"country": "DE"}, "orders": 3});
        let audiences = vec!["vip".to_owned()];
        let mut context = Map::new();
        context.insert(
            "checkout_started".into(),
            json!({"total": 99, "items": ["a"]}),
        );
        context.insert("Order Completed - Big".into(), json!({"total": 500}));
        let input = ConditionInput {
            traits: &traits,
            audiences: &audiences,
            context: &context,
        };
        let cond = |subject, op, value: Option<Json>| Condition { subject, op, value };
        assert!(condition_holds(
            &cond(
                Trait("address.country".into()),
                ConditionOp::Equals,
                Some(json!("DE"))
            ),
            &input
        ));
        assert!(condition_holds(
            &cond(Trait("email".into()), ConditionOp::NotExists, None),
            &input
        ));
        assert!(condition_holds(
            &cond(Audience("vip".into()), ConditionOp::InAudience, None),
            &input
        ));
        assert!(condition_holds(
            &cond(Audience("churned".into()), ConditionOp::NotInAudience, None),
            &input
        ));
        assert!(!condition_holds(
            &cond(Audience("vip".into()), ConditionOp::Exists, None),
            &input
        ));
        assert!(condition_holds(
            &cond(
                Context("checkout_started.total".into()),
                ConditionOp::Gte,
                Some(json!(99))
            ),
            &input
        ));
        assert!(condition_holds(
            &cond(
                Context("checkout_started.properties.items".into()),
                ConditionOp::Contains,
                Some(json!("a"))
            ),
            &input
        ));
        assert!(condition_holds(
            &cond(
                Context("Order Completed - Big.total".into()),
                ConditionOp::Gt,
                Some(json!(100))
            ),
            &input
        ));
        let both = [
            cond(Trait("orders".into()), ConditionOp::Gt, Some(json!(2))),
            cond(
                Trait("plan".into()),
                ConditionOp::Equals,
                Some(json!("free")),
            ),
        ];
        assert!(!conditions_hold(&both, &input));
        assert!(conditions_hold(&both[..1], &input));
    }

    #[test]
    fn context_lookup_prefers_the_longest_key() {
        let mut context = Map::new();
        context.insert("a".into(), json!({"b": {"c": 1}}));
        context.insert("a.b".into(), json!({"c": 2}));
        assert_eq!(context_lookup(&context, "a.b.c"), Some(&json!(2)));
        assert_eq!(context_lookup(&context, "a"), Some(&json!({"b": {"c": 1}})));
        assert_eq!(context_lookup(&context, "ab"), None);
        assert_eq!(context_lookup(&context, "a.x"), None);
    }
}
