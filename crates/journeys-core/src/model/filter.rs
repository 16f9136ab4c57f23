//! Property filters (entry, hold branches, exit rules) and data-split conditions: the
//! declarative parts. Their evaluation lives in `crate::eval`.

use serde::{Deserialize, Serialize};

use super::Json;

/// `property` is a dot path into the event's `properties` (e.g. `cart.total`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyFilter {
    pub property: String,
    #[serde(flatten)]
    pub matcher: FilterMatch,
}

/// JSON-typed comparison: `1` equals `1.0`, `"1"` does not equal `1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterMatch {
    Equals(Json),
    AnyOf(Vec<Json>),
}

/// One condition of a data-split branch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    pub subject: ConditionSubject,
    pub op: ConditionOp,
    /// Operand for comparing operators; absent for `exists`, `not_exists` and the audience ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Json>,
}

/// What a condition looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionSubject {
    /// A profile trait, by dot path.
    Trait(String),
    /// Membership of the audience with this key (`in_audience` / `not_in_audience`).
    Audience(String),
    /// A journey-context path, e.g. `checkout_started.properties.total` or
    /// `checkout_started.total` (the event name, then a path into that event).
    Context(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOp {
    Equals,
    NotEquals,
    AnyOf,
    Exists,
    NotExists,
    Gt,
    Gte,
    Lt,
    Lte,
    Contains,
    InAudience,
    NotInAudience,
}

impl ConditionOp {
    /// Whether the operator needs a `value` operand.
    pub fn takes_value(self) -> bool {
        !matches!(
            self,
            ConditionOp::Exists
                | ConditionOp::NotExists
                | ConditionOp::InAudience
                | ConditionOp::NotInAudience
        )
    }
}
