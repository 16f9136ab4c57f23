//! The proto ↔ domain conversions, re-exported from their home in `journeys_proto::convert`
//! for callers that reach them through the control plane.

pub use journeys_proto::convert::{event, journey_in, journey_out};

/// `google.protobuf` well-known types ↔ JSON and time (see `journeys_proto::convert::json`).
pub mod json {
    pub use journeys_proto::convert::json::{
        NonFiniteNumber, duration, from_duration, from_timestamp, json_to_struct, json_to_value,
        list_to_json, number_to_json, opt_timestamp, struct_to_json, struct_to_map, timestamp,
        value_to_json,
    };

    /// A `Struct` from a response as JSON (absent → `{}`): for clients reading what a server
    /// sent, whose numbers are always finite.
    #[must_use]
    pub fn opt_struct_to_json(s: Option<&prost_types::Struct>) -> serde_json::Value {
        journeys_proto::convert::json::response_struct_to_json(s)
    }
}
