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
