//! The crate's one error type: why a delivery could not produce an HTTP response.
//!
//! A response, whatever its status, is not an error here: callers classify it with
//! [`crate::retry::classify_status`].

use std::time::Duration;

use journeys_store::StoreError;

/// Why a webhook request got no response, or could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// The send names a destination that does not exist (deleted, or never created).
    #[error("destination {0} not found")]
    UnknownDestination(String),
    /// The destination's stored settings cannot be used (missing URL, bad header...).
    #[error("destination {id} has invalid settings: {reason}")]
    InvalidDestination {
        /// The destination's id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request cannot be built: bad method, a path that makes an invalid URL, a message id
    /// that is not a valid header value.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No complete response within the destination's timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The destination's address is one the address policy refuses (loopback, private,
    /// link-local…): no request was made. Final: the same address is refused next time.
    #[error("destination address refused: {0}")]
    AddressDenied(String),
    /// The response body was longer than the limit (bytes) of a function's `fetch`.
    #[error("response body larger than {0} bytes")]
    ResponseTooLarge(usize),
    /// Connecting, sending or receiving failed (refused, reset, DNS, TLS).
    #[error("connection failed: {0}")]
    Transport(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeliveryError {
    /// Whether the same request may succeed later (timeouts and transport errors).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Store(err) => err.is_retryable(),
            Self::UnknownDestination(_)
            | Self::InvalidDestination { .. }
            | Self::InvalidRequest(_)
            | Self::AddressDenied(_)
            | Self::ResponseTooLarge(_) => false,
        }
    }
}
