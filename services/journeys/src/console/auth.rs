//! Who may use the console, with the admin API's rule: when an admin token is configured, the
//! token (entered once in the log-in form, then kept in an `HttpOnly`, `SameSite=Strict`
//! cookie) is checked on every page and action with the gRPC services' own check and sent as
//! their bearer token; without a token, only loopback clients are served (the gRPC API then
//! listens on loopback only), and only under a loopback host name, so that a web page cannot
//! rebind its own name to this machine and read the console.
//!
//! Every form carries a CSRF token that must equal the session's cookie (double submit), and
//! a cross-site `Origin` is refused outright.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use journeys_runtime::auth::AdminAuth;
use tonic::metadata::MetadataMap;

use super::Console;
use super::html::{csrf_field, esc};

/// The cookie holding the admin token (hex, so that any token fits a cookie).
const TOKEN_COOKIE: &str = "journeys_console_token";
/// The cookie holding the CSRF token forms must repeat.
const CSRF_COOKIE: &str = "journeys_console_csrf";

/// What the guard learnt about the request, for pages and actions.
#[derive(Clone, Debug)]
pub struct Session {
    /// The admin token the client logged in with (none when no token is configured).
    pub token: Option<String>,
    /// The CSRF token forms post back.
    pub csrf: String,
}

/// The console's admission rule, applied to every route.
pub async fn guard(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = request.headers();
    if !console.auth.is_enabled() {
        let loopback_peer = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
        if !loopback_peer || !loopback_host(headers) {
            return refused(
                StatusCode::FORBIDDEN,
                "This console answers loopback clients only, because no admin token is \
                 configured. Set JOURNEYS_ADMIN_TOKEN to use it from elsewhere.",
            );
        }
    }
    if request.method() != Method::GET && request.method() != Method::HEAD && cross_site(headers) {
        return refused(StatusCode::FORBIDDEN, "Cross-site requests are refused.");
    }
    let cookies = cookies(headers);
    let (csrf, new_csrf) = match cookies.iter().find(|(k, _)| k == CSRF_COOKIE) {
        Some((_, v)) if v.len() >= 32 => (v.clone(), false),
        _ => (uuid::Uuid::new_v4().simple().to_string(), true),
    };
    let path = request.uri().path().to_owned();
    let public = path == "/console/login" || path.starts_with("/console/assets/");
    let token = cookies
        .iter()
        .find(|(k, _)| k == TOKEN_COOKIE)
        .and_then(|(_, v)| unhex(v));
    let token = match (console.auth.is_enabled(), token) {
        (false, _) => None,
        (true, Some(token)) if accepted(&console.auth, &token) => Some(token),
        (true, _) if public => None,
        (true, _) => {
            if path.ends_with(".json") {
                return refused(StatusCode::UNAUTHORIZED, "Log in first.");
            }
            return with_csrf_cookie(
                Redirect::to("/console/login").into_response(),
                &csrf,
                new_csrf,
            );
        }
    };
    request.extensions_mut().insert(Session {
        token,
        csrf: csrf.clone(),
    });
    let mut response = next.run(request).await;
    protect(&mut response);
    with_csrf_cookie(response, &csrf, new_csrf)
}

/// Headers every console response carries: its own script and style only (so that markup
/// slipping through could run nothing), never inside another site's frame (no clickjacking),
/// no referrer leaving it, and no caching of pages that show profiles.
fn protect(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// Whether `token` passes the gRPC services' own admin check.
fn accepted(auth: &AdminAuth, token: &str) -> bool {
    let Ok(value) = format!("Bearer {token}").parse() else {
        return false;
    };
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", value);
    auth.check(&metadata).is_ok()
}

fn with_csrf_cookie(mut response: Response, csrf: &str, new: bool) -> Response {
    if new
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={csrf}; Path=/console; HttpOnly; SameSite=Strict"
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn refused(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// Whether the request names this machine by a loopback name or address.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Whether a browser said the request comes from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site == "cross-site" || site == "same-site")
    {
        return true;
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    origin != "null" && !origin_host.eq_ignore_ascii_case(host)
}

/// The request's cookies as (name, value) pairs.
fn cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn hex(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> Option<String> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Whether a posted form's CSRF token is the session's.
pub fn csrf_ok(session: &Session, posted: &str) -> bool {
    !posted.is_empty() && posted == session.csrf
}

/// `GET /console/login`.
pub async fn login_form(
    State(console): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
) -> Response {
    if !console.auth.is_enabled() || session.token.is_some() {
        return Redirect::to("/console/").into_response();
    }
    login_page(&session, None, StatusCode::OK)
}

fn login_page(session: &Session, error: Option<&str>, status: StatusCode) -> Response {
    let error = error.map_or_else(String::new, |e| {
        format!(
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
            esc(e)
        )
    });
    let body = format!(
        "<h1>Log in</h1>{error}\
         <form method=\"post\" action=\"/console/login\" class=\"login\">{csrf}\
         <label for=\"token\">Admin token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Log in</button></form>\
         <p class=\"hint\">The token configured as <code>JOURNEYS_ADMIN_TOKEN</code> on this node.</p>",
        csrf = csrf_field(session),
    );
    let anonymous = Session {
        token: None,
        csrf: session.csrf.clone(),
    };
    (
        status,
        axum::response::Html(super::html::page(
            &anonymous,
            super::html::Section::None,
            "Log in",
            &body,
        )),
    )
        .into_response()
}

/// The log-in form's fields.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

/// `POST /console/login`: checks the token as the gRPC services do and keeps it in a cookie.
pub async fn login(
    State(console): State<Console>,
    axum::Extension(session): axum::Extension<Session>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return login_page(
            &session,
            Some("The form expired; please try again."),
            StatusCode::FORBIDDEN,
        );
    }
    if !console.auth.is_enabled() {
        return Redirect::to("/console/").into_response();
    }
    if !accepted(&console.auth, &form.token) {
        return login_page(
            &session,
            Some("That is not the admin token."),
            StatusCode::UNAUTHORIZED,
        );
    }
    let mut response = Redirect::to("/console/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{TOKEN_COOKIE}={}; Path=/console; HttpOnly; SameSite=Strict",
        hex(&form.token)
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The CSRF field of a form that carries nothing else.
#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: forgets the token.
pub async fn logout(
    axum::Extension(session): axum::Extension<Session>,
    axum::Form(form): axum::Form<CsrfOnly>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return refused(StatusCode::FORBIDDEN, "The form expired; please try again.");
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "journeys_console_token=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn only_loopback_host_names_pass_without_a_token() {
        for host in [
            "127.0.0.1:8088",
            "localhost:8088",
            "[::1]:8088",
            "LOCALHOST",
        ] {
            assert!(loopback_host(&headers(&[("host", host)])), "{host}");
        }
        for host in ["evil.example:8088", "10.0.0.1:8088", "[2001:db8::1]:80"] {
            assert!(!loopback_host(&headers(&[("host", host)])), "{host}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let same = headers(&[
            ("host", "127.0.0.1:8088"),
            ("origin", "http://127.0.0.1:8088"),
        ]);
        assert!(!cross_site(&same));
        let other = headers(&[
            ("host", "127.0.0.1:8088"),
            ("origin", "https://evil.example"),
        ]);
        assert!(cross_site(&other));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
    }

    #[test]
    fn any_token_survives_its_cookie() {
        let token = "a b;c=d\"é";
        assert_eq!(unhex(&hex(token)).as_deref(), Some(token));
        assert_eq!(unhex("zz"), None);
    }

    #[test]
    fn the_grpc_check_decides_which_token_is_accepted() {
        let auth = AdminAuth::new(Some("s3cret".to_owned()));
        assert!(accepted(&auth, "s3cret"));
        assert!(!accepted(&auth, "s3cre"));
        assert!(!accepted(&auth, ""));
    }
}
