//! Admin authentication for the control plane and scheduler, and the bind-address safety check.
//!
//! With a token configured every call must carry `authorization: Bearer <token>`; without one
//! every call passes, which is only allowed on a loopback address ([`check_bind`]).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::config::ConfigError;

/// A tonic interceptor checking the admin bearer token:
/// `FooServiceServer::with_interceptor(service, AdminAuth::new(config.admin_token.clone()))`.
///
/// Cheap to clone (tonic clones the interceptor per request): the token is shared.
#[derive(Clone, Default)]
pub struct AdminAuth {
    token: Option<Arc<str>>,
}

impl AdminAuth {
    /// `None` (or an empty token) lets every call through.
    #[must_use]
    pub fn new(token: Option<String>) -> AdminAuth {
        AdminAuth {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// Whether a token is required.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Checks the `authorization` metadata of a request.
    ///
    /// # Errors
    ///
    /// `UNAUTHENTICATED` when a token is configured and the request carries none, another scheme,
    /// or a different token.
    pub fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        let Some(expected) = self.token.as_deref() else {
            return Ok(());
        };
        let Some(value) = metadata.get("authorization") else {
            return Err(Status::unauthenticated(
                "missing bearer token: send metadata `authorization: Bearer <admin token>`",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                Status::unauthenticated(
                    "invalid bearer token: expected metadata `authorization: Bearer <admin token>`",
                )
            })?;
        if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
            Ok(())
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// The token is never printed.
impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

/// Refuses to serve the admin API on a non-loopback address without a token, since anyone who
/// can reach the port could then edit journeys and read profiles.
///
/// # Errors
///
/// [`ConfigError::Unsafe`] naming the address and how to fix it.
#[allow(clippy::ref_option)] // The shape callers hold: `&config.admin_token`.
pub fn check_bind(addr: &SocketAddr, token: &Option<String>) -> Result<(), ConfigError> {
    let has_token = token.as_deref().is_some_and(|t| !t.is_empty());
    if has_token || addr.ip().to_canonical().is_loopback() {
        return Ok(());
    }
    Err(ConfigError::Unsafe(format!(
        "refusing to listen on {addr} without an admin token: anyone who can reach this address \
         could use the admin API; set JOURNEYS_ADMIN_TOKEN (or --admin-token, or admin_token in \
         the config file), or listen on a loopback address such as 127.0.0.1"
    )))
}

/// Compares in time that depends only on the length of `expected` (the secret's length is
/// fixed per server), never on where the first differing byte is.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = u8::from(expected.len() != presented.len());
    for (i, &e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= std::hint::black_box(e ^ p);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic::service::Interceptor as _;

    use super::*;

    fn request_with(authorization: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii metadata"));
        }
        request
    }

    #[test]
    fn without_a_token_everything_passes() {
        let mut auth = AdminAuth::new(None);
        assert!(auth.call(request_with(None)).is_ok());
        assert!(auth.call(request_with(Some("Bearer anything"))).is_ok());
        let mut auth = AdminAuth::new(Some(String::new()));
        assert!(!auth.is_enabled());
        assert!(auth.call(request_with(None)).is_ok());
    }

    #[test]
    fn the_right_token_passes() {
        let mut auth = AdminAuth::new(Some("s3cret".to_owned()));
        assert!(auth.call(request_with(Some("Bearer s3cret"))).is_ok());
        assert!(auth.call(request_with(Some("bearer s3cret"))).is_ok());
    }

    #[test]
    fn a_missing_token_is_unauthenticated() {
        let mut auth = AdminAuth::new(Some("s3cret".to_owned()));
        let status = auth.call(request_with(None)).expect_err("must be rejected");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            status.message().starts_with("missing bearer token"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_wrong_token_or_scheme_is_unauthenticated() {
        let mut auth = AdminAuth::new(Some("s3cret".to_owned()));
        for value in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer ",
            "Basic czNjcmV0Og==",
            "s3cret",
        ] {
            let status = auth.call(request_with(Some(value))).expect_err(value);
            assert_eq!(status.code(), Code::Unauthenticated, "{value}");
            assert!(
                status.message().starts_with("invalid bearer token"),
                "{value}: {}",
                status.message()
            );
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let auth = AdminAuth::new(Some("s3cret".to_owned()));
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn loopback_binds_need_no_token() {
        for addr in ["127.0.0.1:50051", "[::1]:50051", "[::ffff:127.0.0.1]:50051"] {
            let addr: SocketAddr = addr.parse().expect("addr");
            assert!(check_bind(&addr, &None).is_ok(), "{addr}");
        }
    }

    #[test]
    fn non_loopback_binds_need_a_token() {
        let addr: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        let err = check_bind(&addr, &None).expect_err("must refuse");
        let message = err.to_string();
        assert!(message.contains("0.0.0.0:50051"), "{message}");
        assert!(message.contains("JOURNEYS_ADMIN_TOKEN"), "{message}");
        assert!(check_bind(&addr, &Some(String::new())).is_err());
        assert!(check_bind(&addr, &Some("t".to_owned())).is_ok());
        let addr: SocketAddr = "[::]:50051".parse().expect("addr");
        assert!(check_bind(&addr, &None).is_err());
    }
}
