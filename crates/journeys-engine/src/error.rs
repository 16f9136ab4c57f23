//! The engine's error type, for the calls that do not answer per item.

use journeys_store::StoreError;

/// Errors of [`crate::Engine`] calls. Per-event and per-timer failures are reported in the
/// acknowledgement or outcome of that item instead.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// [`crate::Engine::shutdown`] was called; the engine takes no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The change could not be committed (the store was unavailable or it kept conflicting
    /// with concurrent writers); worth retrying.
    #[error("not applied: {0}")]
    Failed(String),
    /// The store failed (`Unavailable` is worth retrying).
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// Whether the same call may succeed later.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::ShuttingDown => false,
            Self::Failed(_) => true,
            Self::Store(err) => err.is_retryable(),
        }
    }
}
