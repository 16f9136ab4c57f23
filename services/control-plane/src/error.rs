//! The control plane's one error type, and its one mapping onto the API's error model.
//!
//! Domain services return [`ServiceError`]; the tonic adapters let `?` turn it into a
//! `Status`. Store detail (SQL text, constraint names) and engine detail never reach clients:
//! each case gets a short message written for the caller, and the detail is logged with the
//! request's span. Retryable failures (store unavailable, engine could not commit) are
//! `UNAVAILABLE` so that clients know to retry.

use journeys_core::Problem;
use journeys_delivery::DeliveryError;
use journeys_engine::EngineError;
use journeys_runtime::error::{ApiError, FieldViolation};
use journeys_store::StoreError;
use tonic::Status;

/// Why a control-plane request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Bad input: every problem found, each with the path of its field.
    #[error("{}", invalid_text(.message, .problems))]
    Invalid {
        /// A summary such as "invalid journey"; empty when the problems say it all.
        message: String,
        problems: Vec<Problem>,
    },
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An object with that id or name exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the object's state forbids it (a lifecycle rule).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine could not apply an operator action.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A test send failed.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    /// A bug; the detail is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the control plane's domain services return.
pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

impl ServiceError {
    /// `INVALID_ARGUMENT` for one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid {
            message: String::new(),
            problems: vec![Problem::new(field.into(), description.into())],
        }
    }

    /// `INVALID_ARGUMENT` listing every problem under "invalid {what}".
    pub fn invalid(what: &str, problems: Vec<Problem>) -> Self {
        Self::Invalid {
            message: format!("invalid {what}"),
            problems,
        }
    }

    /// `Ok` when `problems` is empty, else [`ServiceError::invalid`].
    pub fn check(what: &str, problems: Vec<Problem>) -> Result<()> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self::invalid(what, problems))
        }
    }

    /// The same error with the field of a single-field `INVALID_ARGUMENT` renamed (a request
    /// names a nested id differently, e.g. `journey.id` for `id`).
    #[must_use]
    pub fn renaming_field(self, field: &str) -> Self {
        match self {
            Self::Invalid { message, problems } if problems.len() == 1 => Self::Invalid {
                message,
                problems: problems
                    .into_iter()
                    .map(|p| Problem::new(field, p.message))
                    .collect(),
            },
            other => other,
        }
    }
}

impl From<Problem> for ServiceError {
    fn from(problem: Problem) -> Self {
        Self::Invalid {
            message: String::new(),
            problems: vec![problem],
        }
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

/// "summary: path: problem; …", or the problems alone without a summary.
fn invalid_text(message: &str, problems: &[Problem]) -> String {
    if message.is_empty() {
        joined(problems)
    } else {
        format!("{message}: {}", joined(problems))
    }
}

fn store(err: StoreError) -> ApiError {
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
        StoreError::Fenced(detail) => {
            tracing::warn!(%detail, "partition moved to another node");
            ApiError::Unavailable("the profile's partition moved to another node; retry".to_owned())
        }
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            ApiError::Unavailable("the store is unavailable; retry later".to_owned())
        }
        StoreError::Internal(detail) => ApiError::Internal(detail),
    }
}

fn engine(err: EngineError) -> ApiError {
    match err {
        EngineError::Store(e) => store(e),
        EngineError::ShuttingDown => {
            ApiError::Unavailable("the server is shutting down; retry".to_owned())
        }
        other if other.is_retryable() => {
            tracing::warn!(error = %other, "operator action not applied");
            ApiError::Unavailable("the change could not be applied now; retry".to_owned())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// What went wrong at the destination is the caller's business (it is their endpoint), so
/// transport errors are described.
fn delivery(err: DeliveryError) -> ApiError {
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

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Invalid { message, problems } => ApiError::invalid(
                message,
                problems
                    .into_iter()
                    .map(|p| FieldViolation::new(p.path, p.message))
                    .collect(),
            ),
            ServiceError::NotFound(m) => ApiError::NotFound(m),
            ServiceError::AlreadyExists(m) => ApiError::AlreadyExists(m),
            ServiceError::FailedPrecondition(m) => ApiError::FailedPrecondition(m),
            ServiceError::Store(e) => store(e),
            ServiceError::Engine(e) => engine(e),
            ServiceError::Delivery(e) => delivery(e),
            ServiceError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

/// The one mapping to the wire: through the API error model shared by every service (which
/// logs internal detail and sends "internal error").
impl From<ServiceError> for Status {
    fn from(err: ServiceError) -> Self {
        Status::from(ApiError::from(err))
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn code(err: impl Into<ServiceError>) -> (Code, String) {
        let status = Status::from(err.into());
        (status.code(), status.message().to_owned())
    }

    #[test]
    fn retryable_engine_errors_are_unavailable() {
        assert_eq!(
            code(EngineError::Failed(
                "lane 3: commit conflicted 5 times".to_owned()
            )),
            (
                Code::Unavailable,
                "the change could not be applied now; retry".to_owned()
            )
        );
        assert_eq!(code(EngineError::ShuttingDown).0, Code::Unavailable);
        assert_eq!(
            code(EngineError::Store(StoreError::Unavailable("pool".into()))).0,
            Code::Unavailable
        );
        assert_eq!(
            code(EngineError::Store(StoreError::Internal("bad row".into()))),
            (Code::Internal, "internal error".to_owned())
        );
    }

    #[test]
    fn store_detail_stays_on_the_server() {
        let (c, message) = code(StoreError::AlreadyExists {
            entity: "journey",
            detail: "Duplicate entry 'x' for key 'journeys_name_uq'".into(),
        });
        assert_eq!(
            (c, message.as_str()),
            (Code::AlreadyExists, "journey already exists")
        );
        let (c, message) = code(StoreError::Unavailable("10.0.0.5:3306 refused".into()));
        assert_eq!(c, Code::Unavailable);
        assert!(!message.contains("10.0.0.5"), "{message}");
        assert_eq!(
            code(StoreError::Conflict("revision 3".into())).0,
            Code::FailedPrecondition
        );
        assert_eq!(
            code(StoreError::NotFound {
                entity: "journey",
                id: "j1".into()
            }),
            (Code::NotFound, "journey 'j1' not found".to_owned())
        );
    }

    #[test]
    fn invalid_lists_every_problem() {
        let err = ServiceError::invalid(
            "journey",
            vec![
                Problem::new("name", "required"),
                Problem::new("steps", "empty"),
            ],
        );
        assert_eq!(
            code(err),
            (
                Code::InvalidArgument,
                "invalid journey: name: required; steps: empty".to_owned()
            )
        );
        let renamed = ServiceError::invalid_field("id", "required").renaming_field("journey.id");
        assert_eq!(code(renamed).1, "journey.id: required");
        assert_eq!(
            code(DeliveryError::UnknownDestination("d1".into())).0,
            Code::FailedPrecondition
        );
    }
}
