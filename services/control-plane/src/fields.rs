//! Checks of simple request fields shared by the services: identifiers, names, paging.

use journeys_core::Problem;

use crate::error::{Result, ServiceError};

/// Longest display name anywhere in the API (SPEC: 73 characters).
pub const MAX_NAME_CHARS: usize = 73;

/// A client-chosen identifier (journeys, destinations): `[a-z0-9][a-z0-9_-]{0,63}`, or a
/// server-generated UUID. Keeping ids URL- and shell-safe lets examples and scripts name them.
pub fn check_id(path: &str, id: &str, problems: &mut Vec<Problem>) {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        problems.push(Problem::new(
            path,
            format!("'{id}' is not a valid id: use 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"),
        ));
    }
}

/// A non-empty display name of at most 73 characters.
pub fn check_name(path: &str, name: &str, problems: &mut Vec<Problem>) {
    if name.trim().is_empty() {
        problems.push(Problem::new(path, "required"));
    } else if name.chars().count() > MAX_NAME_CHARS {
        problems.push(Problem::new(
            path,
            format!(
                "is {} characters long; at most {MAX_NAME_CHARS} are allowed",
                name.chars().count()
            ),
        ));
    }
}

/// A request's page size: 0 means "server default"; a negative one is a client bug worth
/// reporting.
pub fn page_size(size: i32) -> Result<u32> {
    u32::try_from(size).map_err(|_| {
        ServiceError::invalid(
            "request",
            vec![Problem::new("page_size", "must not be negative")],
        )
    })
}
