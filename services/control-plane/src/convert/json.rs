//! `google.protobuf` well-known types ↔ `serde_json` / `chrono` / `std::time`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use serde_json::{Map, Number, Value as Json};

/// A protobuf `Value` as JSON; an unset kind is JSON `null`.
pub fn value_to_json(value: &Value) -> Json {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::BoolValue(b)) => Json::Bool(*b),
        Some(Kind::NumberValue(n)) => number_to_json(*n),
        Some(Kind::StringValue(s)) => Json::String(s.clone()),
        Some(Kind::ListValue(list)) => list_to_json(list),
        Some(Kind::StructValue(s)) => struct_to_json(s),
    }
}

/// Integral floats become JSON integers so `1` round-trips as `1`, not `1.0`.
fn number_to_json(n: f64) -> Json {
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        return Json::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Json::Null, Json::Number)
}

pub fn list_to_json(list: &ListValue) -> Json {
    Json::Array(list.values.iter().map(value_to_json).collect())
}

pub fn struct_to_json(s: &Struct) -> Json {
    Json::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

/// An optional `Struct` as a JSON object (absent → `{}`).
pub fn opt_struct_to_json(s: Option<&Struct>) -> Json {
    s.map_or_else(|| Json::Object(Map::new()), struct_to_json)
}

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

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        #[allow(clippy::cast_possible_wrap)]
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn opt_timestamp(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(timestamp)
}

/// `None` when the timestamp is out of range.
pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
}

/// `Err` with a reason when the duration is negative or malformed.
pub fn from_duration(d: &prost_types::Duration) -> Result<Duration, &'static str> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err("must not be negative");
    }
    let nanos = u32::try_from(d.nanos).map_err(|_| "invalid nanos")?;
    if nanos >= 1_000_000_000 {
        return Err("invalid nanos");
    }
    #[allow(clippy::cast_sign_loss)]
    Ok(Duration::new(d.seconds as u64, nanos))
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        #[allow(clippy::cast_possible_wrap)]
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let v = json!({"a": 1, "b": 1.5, "c": "x", "d": [true, null], "e": {"f": {}}});
        assert_eq!(struct_to_json(&json_to_struct(&v)), v);
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
