//! What a command can fail with, and the exit code each failure gives: 2 for what the operator
//! can fix in the command or its files (usage, unreadable files, definitions the server finds
//! invalid), 1 for everything else (the server refused or failed, the network).

use std::fmt::Write as _;
use std::process::ExitCode;

use tonic::Code;
use tonic_types::StatusExt as _;

/// One problem found in the operator's input, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// A failed command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags or arguments that cannot work together, or a file that cannot be read as what it
    /// should hold.
    #[error("{0}")]
    Usage(String),
    /// The input was read but is not valid: every problem with its path.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<Problem>,
    },
    /// The server could not be reached.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server answered with an error other than invalid input.
    #[error("{}", describe(.0))]
    Status(tonic::Status),
    /// Anything else that went wrong, said plainly.
    #[error("{0}")]
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// The process exit code of this failure.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Usage(_) | Self::Invalid { .. } => ExitCode::from(2),
            Self::Connect { .. } | Self::Status(_) | Self::Failed(_) => ExitCode::from(1),
        }
    }

    /// The text printed on stderr: `error: …`, then one line per problem.
    #[must_use]
    pub fn report(&self) -> String {
        let mut text = format!("error: {self}\n");
        if let Self::Invalid { problems, .. } = self {
            for problem in problems {
                let _ = writeln!(text, "  {}: {}", problem.path, problem.message);
            }
        }
        text
    }
}

impl From<tonic::Status> for Error {
    /// `INVALID_ARGUMENT` with `google.rpc.BadRequest` details becomes [`Error::Invalid`] with
    /// each field violation as a problem; without details, the message alone.
    fn from(status: tonic::Status) -> Self {
        if status.code() != Code::InvalidArgument {
            return Self::Status(status);
        }
        let problems: Vec<Problem> = status
            .get_details_bad_request()
            .map(|details| {
                details
                    .field_violations
                    .into_iter()
                    .map(|v| Problem {
                        path: v.field,
                        message: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        // The server's message repeats the problems after the summary (for grpcurl); they are
        // listed one per line here instead.
        let joined = problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect::<Vec<_>>()
            .join("; ");
        let message = status.message();
        let summary = message
            .strip_suffix(joined.as_str())
            .map(|rest| rest.trim_end_matches([' ', ':']))
            .filter(|rest| !rest.is_empty() && !problems.is_empty())
            .unwrap_or(message);
        Self::Invalid {
            message: summary.to_owned(),
            problems,
        }
    }
}

/// A server error as one line: its message and, when that does not already say it, the code.
fn describe(status: &tonic::Status) -> String {
    let code = match status.code() {
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::FailedPrecondition => "failed precondition",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::Unavailable => "unavailable",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Unimplemented => "not served at this address",
        Code::Internal => "internal error",
        _ => "error",
    };
    if status.message().is_empty() {
        code.to_owned()
    } else {
        format!("{} ({code})", status.message())
    }
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, FieldViolation};

    use super::*;

    #[test]
    fn invalid_argument_lists_each_violation_once_under_its_summary() {
        let status = tonic::Status::with_error_details(
            Code::InvalidArgument,
            "invalid journey: start_step: no step has this key; steps[0].key: required",
            ErrorDetails::with_bad_request(vec![
                FieldViolation::new("start_step", "no step has this key"),
                FieldViolation::new("steps[0].key", "required"),
            ]),
        );
        let error = Error::from(status);
        assert_eq!(
            error.report(),
            "error: invalid journey\n  start_step: no step has this key\n  steps[0].key: required\n"
        );
        assert_eq!(error.exit_code(), ExitCode::from(2));
    }

    #[test]
    fn other_codes_keep_their_message_and_exit_1() {
        let error = Error::from(tonic::Status::not_found("journey 'x' does not exist"));
        assert_eq!(
            error.report(),
            "error: journey 'x' does not exist (not found)\n"
        );
        assert_eq!(error.exit_code(), ExitCode::from(1));
    }
}
