//! The error type handlers return, and its one mapping to a gRPC `Status`.
//!
//! The codes are deliberately few (API.md, "Errors"). Internal details are logged with the
//! current span (and so the request's trace id) and replaced by "internal error" on the wire.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `journey.steps[2].delay.duration`.
    pub field: String,
    /// What is wrong and, where it helps, what would be right.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// An error a gRPC handler returns; `?` turns it into a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Bad input. `violations` lists every problem found, not only the first.
    #[error("{}", invalid_argument_message(.message, .violations))]
    InvalidArgument {
        /// A summary, e.g. "invalid journey"; may be empty when the violations say it all.
        message: String,
        /// Each bad field, sent as `google.rpc.BadRequest` details.
        violations: Vec<FieldViolation>,
    },
    /// The named resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A resource with that name or id exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the resource's state forbids it (e.g. editing a published
    /// journey).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A rate or size limit was hit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency (usually the store) is down; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or unexpected failure. The detail is logged, never sent to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// `INVALID_ARGUMENT` for a single field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> ApiError {
        ApiError::InvalidArgument {
            message: String::new(),
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    /// `INVALID_ARGUMENT` listing `violations` under a summary.
    pub fn invalid(message: impl Into<String>, violations: Vec<FieldViolation>) -> ApiError {
        ApiError::InvalidArgument {
            message: message.into(),
            violations,
        }
    }

    /// `INTERNAL` from any error; its text is logged, not sent.
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(error.to_string())
    }

    /// The gRPC code this error maps to.
    #[must_use]
    pub fn code(&self) -> Code {
        match self {
            ApiError::InvalidArgument { .. } => Code::InvalidArgument,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::Internal(_) => Code::Internal,
        }
    }
}

/// "summary: path: problem; path: problem", so that a client printing only the message (as
/// grpcurl does) still sees every problem.
fn invalid_argument_message(message: &str, violations: &[FieldViolation]) -> String {
    let problems = violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    match (message.is_empty(), problems.is_empty()) {
        (true, true) => "invalid argument".to_owned(),
        (false, true) => message.to_owned(),
        (true, false) => problems,
        (false, false) => format!("{message}: {problems}"),
    }
}

/// The longest message a status carries. Messages travel in HTTP/2 trailers, which clients
/// cap (8-16 KB is common): a message that echoes a huge input would make the whole answer
/// unreadable ("h2 protocol error") instead of naming the field.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 4 * 1024;
/// The longest description of one field violation in the `BadRequest` details.
const MAX_VIOLATION_BYTES: usize = 512;
/// The most violations listed in the `BadRequest` details (the message says how many more).
const MAX_VIOLATIONS: usize = 50;

/// `text` cut to at most `max` bytes (on a character boundary), saying how long it was.
#[must_use]
pub fn bounded(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let total = text.len();
    let mut end = max.saturating_sub(40);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&format!("… ({total} bytes in all)"));
    text
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        let code = error.code();
        match error {
            ApiError::InvalidArgument {
                message,
                violations,
            } => {
                let text = bounded(
                    invalid_argument_message(&message, &violations),
                    MAX_STATUS_MESSAGE_BYTES,
                );
                let details = ErrorDetails::with_bad_request(
                    violations
                        .into_iter()
                        .take(MAX_VIOLATIONS)
                        .map(|v| {
                            tonic_types::FieldViolation::new(
                                bounded(v.field, MAX_VIOLATION_BYTES),
                                bounded(v.description, MAX_VIOLATION_BYTES),
                            )
                        })
                        .collect::<Vec<_>>(),
                );
                Status::with_error_details(code, text, details)
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::new(code, "internal error")
            }
            ApiError::NotFound(message)
            | ApiError::AlreadyExists(message)
            | ApiError::FailedPrecondition(message)
            | ApiError::Unauthenticated(message)
            | ApiError::ResourceExhausted(message)
            | ApiError::Unavailable(message) => {
                Status::new(code, bounded(message, MAX_STATUS_MESSAGE_BYTES))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_violation_as_bad_request_details() {
        let error = ApiError::invalid(
            "invalid journey",
            vec![
                FieldViolation::new("journey.name", "must not be empty"),
                FieldViolation::new("journey.steps[1].delay.duration", "must be at least 1m"),
            ],
        );
        let status = Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid journey: journey.name: must not be empty; \
             journey.steps[1].delay.duration: must be at least 1m"
        );
        let bad_request = status
            .get_details_bad_request()
            .expect("BadRequest details");
        let decoded: Vec<(String, String)> = bad_request
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect();
        assert_eq!(
            decoded,
            vec![
                ("journey.name".to_owned(), "must not be empty".to_owned()),
                (
                    "journey.steps[1].delay.duration".to_owned(),
                    "must be at least 1m".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_message_echoing_a_huge_input_is_cut_to_fit_in_a_trailer() {
        let url = format!("https://hooks.example.com/{}", "p".repeat(100 * 1024));
        let status = Status::from(ApiError::invalid_field(
            "destination.webhook.url",
            format!("'{url}' is not a valid URL"),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
        assert!(
            status
                .message()
                .starts_with("destination.webhook.url: 'https://hooks")
        );
        assert!(
            status.message().ends_with("bytes in all)"),
            "{}",
            status.message()
        );
        let details = status
            .get_details_bad_request()
            .expect("BadRequest details");
        assert!(details.field_violations[0].description.len() <= MAX_VIOLATION_BYTES);
        let status = Status::from(ApiError::NotFound(format!(
            "profile '{}' not found",
            "é".repeat(9000)
        )));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE_BYTES);
    }

    #[test]
    fn a_single_invalid_field_reads_naturally() {
        let status = Status::from(ApiError::invalid_field("id", "must be a UUID"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "id: must be a UUID");
    }

    #[test]
    fn plain_errors_keep_their_message_and_get_their_code() {
        let cases = [
            (
                ApiError::NotFound("journey 'j1' not found".into()),
                Code::NotFound,
            ),
            (
                ApiError::AlreadyExists("journey named 'x' exists".into()),
                Code::AlreadyExists,
            ),
            (
                ApiError::FailedPrecondition("journey is published".into()),
                Code::FailedPrecondition,
            ),
            (
                ApiError::Unauthenticated("missing bearer token".into()),
                Code::Unauthenticated,
            ),
            (
                ApiError::ResourceExhausted("rate limit".into()),
                Code::ResourceExhausted,
            ),
            (
                ApiError::Unavailable("store unavailable".into()),
                Code::Unavailable,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
            assert!(status.get_details_bad_request().is_none());
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let status = Status::from(ApiError::internal("db password rejected for user admin"));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.details().is_empty());
    }
}
