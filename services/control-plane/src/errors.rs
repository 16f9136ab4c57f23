//! Mapping of store and validation failures onto the API's error model.
//!
//! Store detail (SQL text, constraint names) never reaches clients: each variant gets a message
//! written for the caller, and `Internal` detail is logged by `ApiError`'s conversion.

use journeys_core::Problem;
use journeys_runtime::error::{ApiError, FieldViolation};
use journeys_store::StoreError;

/// A store error as an API error. `what` names the object for `AlreadyExists`
/// (e.g. "a journey named 'Welcome'").
pub fn store(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound { entity, id } => {
            ApiError::NotFound(format!("{entity} '{id}' not found"))
        }
        StoreError::AlreadyExists { entity, .. } => {
            ApiError::AlreadyExists(format!("{entity} already exists"))
        }
        StoreError::Conflict(_) => ApiError::FailedPrecondition(
            "the object was changed concurrently; read it again and retry".to_owned(),
        ),
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::Unavailable("the store is unavailable; retry later".to_owned())
        }
        StoreError::Internal(detail) => ApiError::Internal(detail),
    }
}

/// `INVALID_ARGUMENT` listing every problem, each as a `BadRequest` field violation.
pub fn invalid(what: &str, problems: &[Problem]) -> ApiError {
    ApiError::invalid(
        format!("invalid {what}"),
        problems
            .iter()
            .map(|p| FieldViolation::new(p.path.clone(), p.message.clone()))
            .collect(),
    )
}

/// Fails with `INVALID_ARGUMENT` when `problems` is not empty.
pub fn check(what: &str, problems: &[Problem]) -> Result<(), ApiError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(invalid(what, problems))
    }
}

/// Problems joined for a one-line message ("a: x; b: y").
pub fn joined(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An engine failure (operator exits) as an API error.
pub fn engine_error(err: journeys_engine::EngineError) -> ApiError {
    match err {
        journeys_engine::EngineError::Store(e) => store(e),
        journeys_engine::EngineError::ShuttingDown => {
            ApiError::Unavailable("the server is shutting down; retry".to_owned())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// A test delivery failure as an API error: what went wrong at the destination is the
/// caller's business (it is their endpoint), so transport errors are described.
pub fn delivery_error(err: journeys_delivery::DeliveryError) -> ApiError {
    use journeys_delivery::DeliveryError;
    match err {
        DeliveryError::UnknownDestination(id) => {
            ApiError::FailedPrecondition(format!("destination '{id}' does not exist"))
        }
        DeliveryError::Store(e) => store(e),
        e @ (DeliveryError::Timeout(_) | DeliveryError::Transport(_)) => {
            ApiError::Unavailable(format!("the destination could not be reached: {e}"))
        }
        e => ApiError::FailedPrecondition(e.to_string()),
    }
}
