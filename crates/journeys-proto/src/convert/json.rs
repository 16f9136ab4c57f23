//! `google.protobuf` well-known types ↔ `serde_json` / `chrono` / `std::time`.
//!
//! Requests are read with the fallible functions (`value_to_json`, `struct_to_json`, …): a
//! `Struct` number is a double, and NaN or an infinity has no JSON form, so it is refused with
//! the path of the field instead of being turned into something the client did not send.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number, Value as Json};

/// A number in a request that JSON cannot hold (NaN, +∞, −∞).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: numbers must be finite (NaN and infinity have no JSON form)")]
pub struct NonFiniteNumber {
    /// Path of the offending value, e.g. `events[2].properties.price`.
    pub field: String,
}

impl NonFiniteNumber {
    /// What is wrong, without the path (for field-violation lists that carry it apart).
    pub const DESCRIPTION: &'static str =
        "numbers must be finite (NaN and infinity have no JSON form)";
}

/// A protobuf `Value` as JSON; an unset kind is JSON `null`. `field` is the value's path.
///
/// # Errors
/// A non-finite number anywhere in the value.
pub fn value_to_json(value: &Value, field: &str) -> Result<Json, NonFiniteNumber> {
    Ok(match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n).ok_or_else(|| NonFiniteNumber {
            field: field.to_owned(),
        })?,
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => list_to_json(list, field)?,
        Some(Kind::StructValue(s)) => Json::Object(struct_to_map(s, field)?),
    })
}

/// `Struct` numbers are doubles; whole ones that a double holds exactly become JSON integers,
/// so `{"quantity": 2}` reads the same as it would have over HTTP. `None` for NaN and ±∞.
#[must_use]
pub fn number_to_json(n: f64) -> Option<Json> {
    /// 2^53: every integer up to this is exact in a double.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "checked whole and in range"
        )]
        return Some(Json::from(n as i64));
    }
    Number::from_f64(n).map(Json::Number)
}

/// A `ListValue` as a JSON array; items are reported as `field[i]`.
///
/// # Errors
/// A non-finite number anywhere in the list.
pub fn list_to_json(list: &ListValue, field: &str) -> Result<Json, NonFiniteNumber> {
    list.values
        .iter()
        .enumerate()
        .map(|(i, v)| value_to_json(v, &format!("{field}[{i}]")))
        .collect::<Result<_, _>>()
        .map(Json::Array)
}

/// A `Struct` as a JSON object map; members are reported as `field.key` (or `key` when
/// `field` is empty).
///
/// # Errors
/// A non-finite number anywhere in the struct.
pub fn struct_to_map(s: &Struct, field: &str) -> Result<Map<String, Json>, NonFiniteNumber> {
    s.fields
        .iter()
        .map(|(k, v)| {
            let path = if field.is_empty() {
                k.clone()
            } else {
                format!("{field}.{k}")
            };
            Ok((k.clone(), value_to_json(v, &path)?))
        })
        .collect()
}

/// A `Struct` as a JSON object.
///
/// # Errors
/// A non-finite number anywhere in the struct.
pub fn struct_to_json(s: &Struct, field: &str) -> Result<Json, NonFiniteNumber> {
    struct_to_map(s, field).map(Json::Object)
}

/// An optional `Struct` as a JSON object (absent → `{}`).
///
/// # Errors
/// A non-finite number anywhere in the struct.
pub fn opt_struct_to_json(s: Option<&Struct>, field: &str) -> Result<Json, NonFiniteNumber> {
    s.map_or_else(
        || Ok(Json::Object(Map::new())),
        |s| struct_to_json(s, field),
    )
}

/// A `Struct` a server produced (a response: its numbers came from JSON, so they are finite)
/// as JSON. For clients and tests reading responses; request handlers use the fallible forms.
#[must_use]
pub fn response_struct_to_json(s: Option<&Struct>) -> Json {
    opt_struct_to_json(s, "").unwrap_or(Json::Null)
}

/// A JSON value as a protobuf `Value`.
#[must_use]
pub fn json_to_value(json: &Json) -> Value {
    let kind = match json {
        Json::Null => Kind::NullValue(0),
        Json::Bool(b) => Kind::BoolValue(*b),
        Json::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Json::String(s) => Kind::StringValue(s.clone()),
        Json::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Json::Object(_) => Kind::StructValue(json_to_struct(json)),
    };
    Value { kind: Some(kind) }
}

/// A JSON object as a `Struct`; any other JSON value gives an empty struct.
#[must_use]
pub fn json_to_struct(json: &Json) -> Struct {
    match json {
        Json::Object(map) => Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        },
        _ => Struct::default(),
    }
}

/// A UTC time as a protobuf `Timestamp`.
#[must_use]
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        #[allow(clippy::cast_possible_wrap, reason = "sub-second nanos are below 2^31")]
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// An optional UTC time as an optional `Timestamp`.
#[must_use]
pub fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// `None` when the timestamp is out of range.
#[must_use]
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
}

/// A protobuf `Duration` as a `std` one.
///
/// # Errors
/// A reason when the duration is negative or malformed.
pub fn from_duration(d: &prost_types::Duration) -> Result<Duration, &'static str> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err("must not be negative");
    }
    let nanos = u32::try_from(d.nanos).map_err(|_| "invalid nanos")?;
    if nanos >= 1_000_000_000 {
        return Err("invalid nanos");
    }
    let seconds = u64::try_from(d.seconds).map_err(|_| "must not be negative")?;
    Ok(Duration::new(seconds, nanos))
}

/// A `std` duration as a protobuf `Duration` (saturating at `i64::MAX` seconds).
#[must_use]
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        #[allow(clippy::cast_possible_wrap, reason = "sub-second nanos are below 2^31")]
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn number(n: f64) -> Value {
        Value {
            kind: Some(Kind::NumberValue(n)),
        }
    }

    #[test]
    fn json_round_trips_through_struct() {
        let v = json!({"a": 1, "b": 1.5, "c": "x", "d": [true, null], "e": {"f": {}}});
        assert_eq!(struct_to_json(&json_to_struct(&v), "").unwrap(), v);
        assert_eq!(response_struct_to_json(Some(&json_to_struct(&v))), v);
        assert_eq!(response_struct_to_json(None), json!({}));
    }

    #[test]
    fn non_finite_numbers_are_refused_with_their_path() {
        for n in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let s = Struct {
                fields: [(
                    "order".to_owned(),
                    Value {
                        kind: Some(Kind::ListValue(ListValue {
                            values: vec![number(1.0), number(n)],
                        })),
                    },
                )]
                .into(),
            };
            let err = struct_to_json(&s, "properties").unwrap_err();
            assert_eq!(err.field, "properties.order[1]");
            assert_eq!(
                err.to_string(),
                "properties.order[1]: numbers must be finite (NaN and infinity have no JSON form)"
            );
        }
        assert_eq!(value_to_json(&number(2.0), "x").unwrap(), json!(2));
        assert_eq!(value_to_json(&number(0.5), "x").unwrap(), json!(0.5));
    }

    #[test]
    fn negative_durations_are_rejected() {
        let d = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert!(from_duration(&d).is_err());
        assert_eq!(
            from_duration(&duration(Duration::from_secs(300))),
            Ok(Duration::from_secs(300))
        );
    }
}
