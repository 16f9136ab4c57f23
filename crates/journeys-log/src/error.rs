//! The log's one error type, and how NATS client errors map onto it.
//!
//! Callers branch on the variant: `Unavailable` is worth retrying (the data plane answers
//! `UNAVAILABLE`), `InvalidArgument` is the caller's bug, `StreamMismatch` a deployment error,
//! `Internal` anything else.

use std::fmt::Display;

/// Errors returned by every log operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// NATS could not be reached or did not answer in time; the operation may be retried.
    #[error("log unavailable: {0}")]
    Unavailable(String),
    /// A partition out of range, an empty message id or an unusable stream name.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The stream exists but was made for something else (other subjects): refusing to use it
    /// beats publishing into subjects no reader looks at.
    #[error("stream {stream} exists with subjects {found:?}, expected [\"{expected}\"]")]
    StreamMismatch {
        /// Name of the stream.
        stream: String,
        /// The subject pattern this log uses.
        expected: String,
        /// The subjects the existing stream has.
        found: Vec<String>,
    },
    /// Anything else: a refused request, an answer that does not decode.
    #[error("log internal error: {0}")]
    Internal(String),
}

impl LogError {
    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// `Unavailable` when `transient`, else `Internal`, saying what was being done.
    pub(crate) fn classify(transient: bool, doing: &str, err: impl Display) -> Self {
        if transient {
            Self::Unavailable(format!("{doing}: {err}"))
        } else {
            Self::Internal(format!("{doing}: {err}"))
        }
    }
}
