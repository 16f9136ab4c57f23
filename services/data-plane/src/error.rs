//! Why an event or a request was refused at the edge, before anything reached the engine.
//!
//! Codes are stable and machine-readable: clients may branch on them (HTTP error bodies, the
//! `code` of a `REJECTED` ack). Messages name the offending field. The gRPC mapping of these
//! refusals lives here; the HTTP one beside the HTTP reply type. Engine failures do not pass
//! through here: they come back as `REJECTED` acks (`unavailable` when worth retrying, which
//! HTTP answers with 503 and `Retry-After`).

use std::fmt;

use journeys_runtime::ApiError;
use tonic::Status;

use crate::auth::AuthError;

/// Stable reason codes for refusing input at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not JSON, or not a JSON object.
    InvalidJson,
    /// The body could not be read (the client went away mid-upload).
    UnreadableBody,
    /// `Content-Encoding: gzip` with a body that does not decompress.
    InvalidGzip,
    /// A `Content-Encoding` other than gzip or identity.
    UnsupportedEncoding,
    /// The request body (after decompression) exceeds [`crate::MAX_REQUEST_BYTES`].
    RequestTooLarge,
    /// One event exceeds [`crate::MAX_EVENT_BYTES`].
    EventTooLarge,
    /// A batch holds more than [`crate::MAX_BATCH_EVENTS`] events.
    TooManyEvents,
    /// Neither `userId` nor `anonymousId`.
    MissingUserId,
    /// A track call without an `event` name.
    MissingEvent,
    /// A batch item without `type`.
    MissingType,
    /// A group call without `groupId`.
    MissingGroupId,
    /// An alias call without `previousId`.
    MissingPreviousId,
    /// `/v1/batch` without a `batch` array.
    MissingBatch,
    /// A batch item whose `type` is not a Segment call type.
    InvalidType,
    /// A field of the wrong JSON type (e.g. `properties` not an object).
    WrongType,
    /// A timestamp that is not ISO 8601 (or out of range).
    InvalidTimestamp,
    /// An id or name longer than the store can index.
    TooLong,
    /// A value that cannot be represented (a non-finite number).
    InvalidValue,
}

impl ErrorCode {
    /// The wire form, e.g. `missing_user_id`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnreadableBody => "unreadable_body",
            ErrorCode::InvalidGzip => "invalid_gzip",
            ErrorCode::UnsupportedEncoding => "unsupported_encoding",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::EventTooLarge => "event_too_large",
            ErrorCode::TooManyEvents => "too_many_events",
            ErrorCode::MissingUserId => "missing_user_id",
            ErrorCode::MissingEvent => "missing_event",
            ErrorCode::MissingType => "missing_type",
            ErrorCode::MissingGroupId => "missing_group_id",
            ErrorCode::MissingPreviousId => "missing_previous_id",
            ErrorCode::MissingBatch => "missing_batch",
            ErrorCode::InvalidType => "invalid_type",
            ErrorCode::WrongType => "wrong_type",
            ErrorCode::InvalidTimestamp => "invalid_timestamp",
            ErrorCode::TooLong => "too_long",
            ErrorCode::InvalidValue => "invalid_value",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refused event or request: a code, the field at fault (a path such as
/// `batch[3].properties`; empty when the whole body is at fault) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    pub code: ErrorCode,
    pub field: String,
    pub description: String,
}

impl EventError {
    pub(crate) fn new(
        code: ErrorCode,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> EventError {
        EventError {
            code,
            field: field.into(),
            description: description.into(),
        }
    }

    /// `field: description`, or the description alone for whole-body problems.
    #[must_use]
    pub fn message(&self) -> String {
        if self.field.is_empty() {
            self.description.clone()
        } else {
            format!("{}: {}", self.field, self.description)
        }
    }
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for EventError {}

/// An edge refusal on gRPC: `INVALID_ARGUMENT` naming the field.
impl From<EventError> for Status {
    fn from(error: EventError) -> Status {
        let EventError {
            code,
            field,
            description,
        } = error;
        let api = if field.is_empty() {
            ApiError::invalid(description, Vec::new())
        } else {
            ApiError::invalid_field(field, description)
        };
        tracing::debug!(%code, "refused an event");
        Status::from(api)
    }
}

/// An authentication failure on gRPC: `UNAUTHENTICATED`, or `UNAVAILABLE` (retry) when the
/// store could not be asked.
impl From<&AuthError> for Status {
    fn from(error: &AuthError) -> Status {
        let api = match error {
            AuthError::Missing => ApiError::Unauthenticated(
                "missing write key: send `authorization: Basic base64(<writeKey>:)` or `x-write-key: <writeKey>` metadata"
                    .to_owned(),
            ),
            AuthError::Invalid => ApiError::Unauthenticated(error.to_string()),
            AuthError::Unavailable => ApiError::Unavailable(error.to_string()),
        };
        Status::from(api)
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn grpc_codes_of_edge_refusals() {
        let status = Status::from(EventError::new(
            ErrorCode::InvalidValue,
            "properties.price",
            "numbers must be finite (NaN and infinity have no JSON form)",
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "properties.price: numbers must be finite (NaN and infinity have no JSON form)"
        );
        assert_eq!(
            Status::from(&AuthError::Invalid).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            Status::from(&AuthError::Unavailable).code(),
            Code::Unavailable
        );
    }
}
