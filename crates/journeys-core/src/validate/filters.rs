//! Property filters (entry, hold branches, exit rules), data-split conditions, and the mutual
//! exclusion of hold branches.

use serde_json::Value;

use super::{Report, check_property_path};
use crate::model::{
    Condition, ConditionOp, ConditionSubject, FilterMatch, HoldBranch, PropertyFilter,
};
use crate::path::Segment;

/// Each filter's property is a valid path and each `any_of` list has at least one value.
pub(super) fn check_filters(r: &mut Report, path: &str, filters: &[PropertyFilter]) {
    for (k, filter) in filters.iter().enumerate() {
        check_property_path(
            r,
            &format!("{path}[{k}].property"),
            "property",
            &filter.property,
            "",
        );
        if let FilterMatch::AnyOf(values) = &filter.matcher
            && values.is_empty()
        {
            r.push(
                format!("{path}[{k}].any_of"),
                "any_of needs at least one value",
            );
        }
    }
}

/// The proto enum name of an operator, as users write it.
fn op_name(op: ConditionOp) -> &'static str {
    match op {
        ConditionOp::Equals => "EQUALS",
        ConditionOp::NotEquals => "NOT_EQUALS",
        ConditionOp::AnyOf => "ANY_OF",
        ConditionOp::Exists => "EXISTS",
        ConditionOp::NotExists => "NOT_EXISTS",
        ConditionOp::Gt => "GT",
        ConditionOp::Gte => "GTE",
        ConditionOp::Lt => "LT",
        ConditionOp::Lte => "LTE",
        ConditionOp::Contains => "CONTAINS",
        ConditionOp::InAudience => "IN_AUDIENCE",
        ConditionOp::NotInAudience => "NOT_IN_AUDIENCE",
    }
}

/// One data-split condition: its subject, that the operator fits the subject, and the operand.
pub(super) fn check_condition(r: &mut Report, path: &str, c: &Condition) {
    let audience_op = matches!(c.op, ConditionOp::InAudience | ConditionOp::NotInAudience);
    let subject_path = format!("{path}.path_or_key");
    match &c.subject {
        ConditionSubject::Audience(key) => {
            if key.trim().is_empty() {
                r.push(subject_path, "audience key is required");
            }
            if !audience_op {
                r.push(
                    format!("{path}.op"),
                    format!(
                        "audience conditions take IN_AUDIENCE or NOT_IN_AUDIENCE, not {}",
                        op_name(c.op)
                    ),
                );
            }
        }
        ConditionSubject::Trait(p) | ConditionSubject::Context(p) => {
            let what = if matches!(c.subject, ConditionSubject::Trait(_)) {
                "trait"
            } else {
                "context"
            };
            check_property_path(r, &subject_path, "path_or_key", p, "");
            if audience_op {
                r.push(
                    format!("{path}.op"),
                    format!(
                        "{} applies only to audience conditions, not to {what} conditions",
                        op_name(c.op)
                    ),
                );
            }
        }
    }

    let value_path = format!("{path}.value");
    match (&c.value, c.op.takes_value()) {
        (None, true) => r.push(value_path, format!("{} needs a value", op_name(c.op))),
        (Some(_), false) => r.push(value_path, format!("{} takes no value", op_name(c.op))),
        (Some(v), true) => match c.op {
            ConditionOp::AnyOf => match v {
                Value::Array(items) if items.is_empty() => {
                    r.push(value_path, "ANY_OF needs at least one value in its list");
                }
                Value::Array(_) => {}
                _ => r.push(value_path, "ANY_OF needs a list value"),
            },
            ConditionOp::Gt | ConditionOp::Gte | ConditionOp::Lt | ConditionOp::Lte
                if !(v.is_number() || v.is_string()) =>
            {
                r.push(
                    value_path,
                    format!(
                        "{} compares numbers or strings (RFC 3339 timestamps compare as times), not {}",
                        op_name(c.op),
                        json_kind(v)
                    ),
                );
            }
            _ => {}
        },
        (None, false) => {}
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Pairs `(i, j)`, `i < j`, of branches that wait for the same event with overlapping filters:
/// one event could match both, so the branch taken would depend on their order. Hold branches
/// must be mutually exclusive.
pub fn validate_hold_branches_exclusive(branches: &[HoldBranch]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for (j, b) in branches.iter().enumerate() {
        for (i, a) in branches[..j].iter().enumerate() {
            if a.event == b.event && filters_overlap(&a.filters, &b.filters) {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// Whether one event could match both filter sets (each ANDed). Two sets overlap unless some
/// property is constrained by both to disjoint sets of values, or one set can match nothing.
/// Values compare JSON-typed: `1` equals `1.0`, `"1"` does not equal `1`.
///
/// Paths that differ only in spelling (`$.cart.total` and `cart.total`) name one property;
/// malformed paths are ignored here (they are reported on their own).
pub fn filters_overlap(a: &[PropertyFilter], b: &[PropertyFilter]) -> bool {
    let (Some(a), Some(b)) = (allowed_values(a), allowed_values(b)) else {
        return false;
    };
    a.iter().all(|(property, a_values)| {
        b.iter()
            .find(|(p, _)| p == property)
            .is_none_or(|(_, b_values)| {
                a_values
                    .iter()
                    .any(|x| b_values.iter().any(|y| json_eq(x, y)))
            })
    })
}

/// Per constrained property (canonical path), the values a matching event may hold there:
/// the intersection of every filter on that property. `None` when some property allows no
/// value at all, i.e. the set can never match.
fn allowed_values(filters: &[PropertyFilter]) -> Option<Vec<(String, Vec<&Value>)>> {
    let mut out: Vec<(String, Vec<&Value>)> = Vec::new();
    for f in filters {
        let Some(property) = canonical_path(&f.property) else {
            continue;
        };
        let values: Vec<&Value> = match &f.matcher {
            FilterMatch::Equals(v) => vec![v],
            FilterMatch::AnyOf(vs) => vs.iter().collect(),
        };
        match out.iter_mut().find(|(p, _)| *p == property) {
            Some((_, allowed)) => allowed.retain(|x| values.iter().any(|y| json_eq(x, y))),
            None => out.push((property, values)),
        }
    }
    if out.iter().any(|(_, allowed)| allowed.is_empty()) {
        None
    } else {
        Some(out)
    }
}

fn canonical_path(path: &str) -> Option<String> {
    let mut out = String::new();
    for seg in crate::path::parse(path)? {
        match seg {
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    Some(out)
}

/// JSON equality where numbers compare by value (`1 == 1.0`) and types never coerce.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                (Some(x), Some(y), _, _) => x == y,
                (_, _, Some(x), Some(y)) => x == y,
                _ => x.as_f64() == y.as_f64(),
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::ConditionSubject::{Audience, Context, Trait};
    use crate::problem::Problem;
    use crate::validate::testkit::{WithFilters, any_of, branch, eq};

    fn condition_problems(
        subject: ConditionSubject,
        op: ConditionOp,
        value: Option<Value>,
    ) -> Vec<Problem> {
        let mut r = Report::default();
        check_condition(&mut r, "c", &Condition { subject, op, value });
        r.problems
    }

    fn condition_paths(
        subject: ConditionSubject,
        op: ConditionOp,
        value: Option<Value>,
    ) -> Vec<String> {
        condition_problems(subject, op, value)
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn numbers_compare_by_value_and_types_never_coerce() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!("1"), &json!(1)));
        assert!(!json_eq(&json!(true), &json!(1)));
        assert!(!json_eq(&json!(null), &json!(0)));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
        assert!(!json_eq(&json!(u64::MAX), &json!(u64::MAX - 1)));
    }

    #[test]
    fn filter_sets_overlap_unless_a_shared_property_is_disjoint() {
        // No filters matches everything.
        assert!(filters_overlap(&[], &[]));
        assert!(filters_overlap(&[], &[eq("plan", json!("pro"))]));
        // Different properties can both hold.
        assert!(filters_overlap(
            &[eq("plan", json!("pro"))],
            &[eq("country", json!("FR"))]
        ));
        // Same property, disjoint values.
        assert!(!filters_overlap(
            &[eq("plan", json!("pro"))],
            &[eq("plan", json!("free"))]
        ));
        assert!(!filters_overlap(
            &[any_of("plan", vec![json!("pro"), json!("team")])],
            &[any_of("$.plan", vec![json!("free")])]
        ));
        // Same property, a shared value, with 1 == 1.0 and "1" != 1.
        assert!(filters_overlap(
            &[eq("tier", json!(1))],
            &[any_of("tier", vec![json!(2), json!(1.0)])]
        ));
        assert!(!filters_overlap(
            &[eq("tier", json!("1"))],
            &[eq("tier", json!(1))]
        ));
        // One disjoint property is enough, whatever the others do.
        assert!(!filters_overlap(
            &[eq("plan", json!("pro")), eq("country", json!("FR"))],
            &[eq("country", json!("DE")), eq("plan", json!("pro"))]
        ));
    }

    #[test]
    fn filters_within_a_set_intersect() {
        // plan in {pro, team} and plan == team: only team is allowed, so this misses "pro".
        let a = [
            any_of("plan", vec![json!("pro"), json!("team")]),
            eq("plan", json!("team")),
        ];
        assert!(!filters_overlap(&a, &[eq("plan", json!("pro"))]));
        assert!(filters_overlap(&a, &[eq("plan", json!("team"))]));
        // A set that can match nothing overlaps nothing.
        let never = [eq("plan", json!("pro")), eq("plan", json!("free"))];
        assert!(!filters_overlap(&never, &[]));
    }

    #[test]
    fn hold_branches_for_the_same_event_must_be_exclusive() {
        let branches = [
            branch("pro", "purchase_completed", None).with_filters(vec![eq("plan", json!("pro"))]),
            branch("free", "purchase_completed", None)
                .with_filters(vec![eq("plan", json!("free"))]),
            branch("any", "purchase_completed", None),
            branch("other", "cart_emptied", None),
        ];
        assert_eq!(
            validate_hold_branches_exclusive(&branches),
            [(0, 2), (1, 2)]
        );
    }

    #[test]
    fn condition_subjects_need_a_valid_path_or_key() {
        assert_eq!(
            condition_paths(Trait(String::new()), ConditionOp::Exists, None),
            ["c.path_or_key"]
        );
        assert_eq!(
            condition_paths(Context("a..b".into()), ConditionOp::Exists, None),
            ["c.path_or_key"]
        );
        assert_eq!(
            condition_paths(Audience(" ".into()), ConditionOp::InAudience, None),
            ["c.path_or_key"]
        );
        assert!(
            condition_paths(
                Context("checkout_started.properties.total".into()),
                ConditionOp::Gt,
                Some(json!(10))
            )
            .is_empty()
        );
    }

    #[test]
    fn audience_operators_go_with_audience_subjects_only() {
        assert_eq!(
            condition_problems(Audience("vip".into()), ConditionOp::Exists, None),
            [Problem::new(
                "c.op",
                "audience conditions take IN_AUDIENCE or NOT_IN_AUDIENCE, not EXISTS"
            )]
        );
        assert_eq!(
            condition_problems(Trait("plan".into()), ConditionOp::NotInAudience, None),
            [Problem::new(
                "c.op",
                "NOT_IN_AUDIENCE applies only to audience conditions, not to trait conditions"
            )]
        );
        assert_eq!(
            condition_paths(Context("e.x".into()), ConditionOp::InAudience, None),
            ["c.op"]
        );
        assert!(
            condition_paths(Audience("vip".into()), ConditionOp::NotInAudience, None).is_empty()
        );
    }

    #[test]
    fn values_are_present_exactly_when_the_operator_takes_one() {
        assert_eq!(
            condition_problems(Trait("plan".into()), ConditionOp::Equals, None),
            [Problem::new("c.value", "EQUALS needs a value")]
        );
        assert_eq!(
            condition_problems(Trait("plan".into()), ConditionOp::Exists, Some(json!(true))),
            [Problem::new("c.value", "EXISTS takes no value")]
        );
        assert_eq!(
            condition_paths(
                Audience("vip".into()),
                ConditionOp::InAudience,
                Some(json!(1))
            ),
            ["c.value"]
        );
        assert!(
            condition_paths(
                Trait("plan".into()),
                ConditionOp::NotEquals,
                Some(json!(null))
            )
            .is_empty()
        );
        assert!(
            condition_paths(
                Trait("tags".into()),
                ConditionOp::Contains,
                Some(json!("x"))
            )
            .is_empty()
        );
    }

    #[test]
    fn any_of_needs_a_non_empty_list() {
        let t = || Trait("plan".into());
        assert_eq!(
            condition_problems(t(), ConditionOp::AnyOf, Some(json!("pro"))),
            [Problem::new("c.value", "ANY_OF needs a list value")]
        );
        assert_eq!(
            condition_paths(t(), ConditionOp::AnyOf, Some(json!([]))),
            ["c.value"]
        );
        assert!(condition_paths(t(), ConditionOp::AnyOf, Some(json!(["pro", "team"]))).is_empty());
    }

    #[test]
    fn ordering_operators_need_a_number_or_a_string() {
        let t = || Trait("total".into());
        for op in [
            ConditionOp::Gt,
            ConditionOp::Gte,
            ConditionOp::Lt,
            ConditionOp::Lte,
        ] {
            assert!(condition_paths(t(), op, Some(json!(10.5))).is_empty());
            assert!(condition_paths(t(), op, Some(json!("2025-01-01T00:00:00Z"))).is_empty());
            assert_eq!(condition_paths(t(), op, Some(json!(true))), ["c.value"]);
            assert_eq!(condition_paths(t(), op, Some(json!([1]))), ["c.value"]);
        }
        assert_eq!(
            condition_problems(t(), ConditionOp::Lt, Some(json!({"a": 1})))[0].message,
            "LT compares numbers or strings (RFC 3339 timestamps compare as times), not an object"
        );
    }
}
