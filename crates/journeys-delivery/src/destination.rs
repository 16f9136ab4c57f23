//! Destinations as the dispatcher needs them (webhooks, destination functions): stored
//! settings parsed and checked once, then cached briefly so that a busy dispatcher does not
//! read the store per send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use tokio::time::Instant;

use journeys_store::{
    DestinationKind, DestinationRecord, FunctionSettings, Store, StoreError, WebhookSettings,
};
use serde_json::Value;

use crate::error::DeliveryError;
use crate::function::FunctionCode;

/// A destination of either kind, ready to deliver to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Webhook(WebhookDestination),
    Function(FunctionDestination),
}

impl Target {
    fn from_record(
        record: &DestinationRecord,
        default_timeout: Duration,
        max_timeout: Duration,
    ) -> Result<Self, DeliveryError> {
        match record.kind {
            DestinationKind::Webhook => Ok(Self::Webhook(WebhookDestination::from_record(
                record,
                default_timeout,
                max_timeout,
            )?)),
            DestinationKind::Function => {
                Ok(Self::Function(FunctionDestination::from_record(record)?))
            }
        }
    }
}

/// A destination function: its code (with the key its evaluated form is cached under), the
/// `settings` its handlers get (secrets merged in) and its invocation timeout.
#[derive(Debug, Clone)]
pub(crate) struct FunctionDestination {
    pub id: String,
    pub code: FunctionCode,
    pub settings: Value,
    pub timeout: Duration,
}

impl FunctionDestination {
    fn from_record(record: &DestinationRecord) -> Result<Self, DeliveryError> {
        let settings =
            FunctionSettings::of(record).map_err(|e| DeliveryError::InvalidDestination {
                id: record.id.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            id: record.id.clone(),
            code: FunctionCode::new(&settings.code),
            settings: settings.runtime_settings(),
            timeout: settings.timeout(
                FunctionSettings::DEFAULT_TIMEOUT,
                FunctionSettings::MAX_TIMEOUT,
            ),
        })
    }
}

/// Where and how to send a destination's requests.
#[derive(Debug, Clone)]
pub(crate) struct WebhookDestination {
    /// Base URL (`http` or `https`, with a host, without credentials); a send's path is
    /// appended.
    pub url: String,
    /// Configured extra headers, already valid; `Authorization: Basic` from credentials in the
    /// stored URL (`https://user:password@host/`) unless a configured header sets it.
    pub headers: HeaderMap,
    /// HMAC key; `None` disables signing.
    pub signing_secret: Option<Vec<u8>>,
    pub timeout: Duration,
}

impl WebhookDestination {
    /// Parses and checks a destination row; `default_timeout` replaces an unset or zero timeout
    /// and `max_timeout` caps it.
    pub fn from_record(
        record: &DestinationRecord,
        default_timeout: Duration,
        max_timeout: Duration,
    ) -> Result<Self, DeliveryError> {
        let invalid = |reason: String| DeliveryError::InvalidDestination {
            id: record.id.clone(),
            reason,
        };
        let settings = WebhookSettings::of(record).map_err(|e| invalid(e.to_string()))?;
        // Errors quote the URL masked: it may carry credentials.
        let shown = mask_url_credentials(&settings.url);
        let (url, credentials) = split_credentials(&settings.url);
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid(format!("url {shown:?}: {e}")))?;
        let scheme_ok = uri.scheme() == Some(&Scheme::HTTP) || uri.scheme() == Some(&Scheme::HTTPS);
        if !scheme_ok || uri.host().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "url {shown:?} is not an absolute http(s) URL"
            )));
        }
        let mut headers = HeaderMap::with_capacity(settings.headers.len());
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(format!("header name {name:?} is not valid")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| invalid(format!("value of header {name} is not valid")))?;
            headers.append(name, value);
        }
        if let Some(credentials) = credentials
            && !headers.contains_key(AUTHORIZATION)
        {
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|_| invalid("the URL's credentials are not valid".to_owned()))?;
            headers.insert(AUTHORIZATION, value);
        }
        let timeout = settings.timeout(default_timeout, max_timeout);
        Ok(Self {
            url,
            headers,
            signing_secret: Some(settings.signing_secret)
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            timeout,
        })
    }

    /// The request URI: the base URL with `path` appended, with exactly one `/` between them.
    pub fn uri_for(&self, path: &str) -> Result<Uri, DeliveryError> {
        let url = join(&self.url, path);
        url.parse()
            .map_err(|e| DeliveryError::InvalidRequest(format!("url {url:?}: {e}")))
    }
}

/// What responses, logs and errors show instead of URL credentials.
pub const CREDENTIALS_MASK: &str = "********";

/// The `user:password@` part of `url`'s authority: its byte range, and where the password
/// starts (`None` without a password). `None` when the URL has no credentials.
fn userinfo_range(url: &str) -> Option<(std::ops::Range<usize>, Option<usize>)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':').map(|c| start + c + 1);
    Some((start..start + at, colon))
}

/// `url` with its credentials masked: `https://user:********@host/` for a password,
/// `https://********@host/` for a user name alone (often a token); other URLs unchanged.
#[must_use]
pub fn mask_url_credentials(url: &str) -> String {
    match userinfo_range(url) {
        None => url.to_owned(),
        Some((range, Some(password))) => {
            format!(
                "{}{CREDENTIALS_MASK}{}",
                &url[..password],
                &url[range.end..]
            )
        }
        Some((range, None)) => format!(
            "{}{CREDENTIALS_MASK}{}",
            &url[..range.start],
            &url[range.end..]
        ),
    }
}

/// `url` without its `user:password@`, and the decoded `user:password` when there was one.
fn split_credentials(url: &str) -> (String, Option<String>) {
    match userinfo_range(url) {
        None => (url.to_owned(), None),
        Some((range, _)) => {
            let userinfo = percent_decode(&url[range.clone()]);
            let bare = format!("{}{}", &url[..range.start], &url[range.end + 1..]);
            let credentials = if userinfo.contains(':') {
                userinfo
            } else {
                format!("{userinfo}:")
            };
            (bare, Some(credentials))
        }
    }
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn join(base: &str, path: &str) -> String {
    if path.is_empty() {
        return base.to_owned();
    }
    if path.starts_with('?') {
        return format!("{base}{path}");
    }
    match (base.ends_with('/'), path.starts_with('/')) {
        (true, true) => format!("{base}{}", &path[1..]),
        (false, false) => format!("{base}/{path}"),
        _ => format!("{base}{path}"),
    }
}

/// Destinations read recently, by id. Settings changes show up within `ttl`.
#[derive(Debug)]
pub(crate) struct DestinationCache {
    ttl: Duration,
    default_timeout: Duration,
    max_timeout: Duration,
    entries: Mutex<HashMap<String, (Instant, Arc<Target>)>>,
}

impl DestinationCache {
    pub fn new(ttl: Duration, default_timeout: Duration, max_timeout: Duration) -> Self {
        Self {
            ttl,
            default_timeout,
            max_timeout,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The destination `id`, from the cache when read less than `ttl` ago.
    ///
    /// Only usable destinations are cached: a missing or broken one is read again next time, so
    /// that fixing it takes effect at once.
    pub async fn get(&self, store: &Store, id: &str) -> Result<Arc<Target>, DeliveryError> {
        let now = Instant::now();
        if let Some((read_at, destination)) = self.lock().get(id)
            && now.duration_since(*read_at) < self.ttl
        {
            return Ok(Arc::clone(destination));
        }
        self.refresh(store, id).await
    }

    /// Reads the destination from the store, bypassing (and updating) the cache.
    pub async fn refresh(&self, store: &Store, id: &str) -> Result<Arc<Target>, DeliveryError> {
        let record = match store.destinations().get(id).await {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => {
                self.lock().remove(id);
                return Err(DeliveryError::UnknownDestination(id.to_owned()));
            }
            Err(err) => return Err(err.into()),
        };
        let destination = match Target::from_record(&record, self.default_timeout, self.max_timeout)
        {
            Ok(destination) => Arc::new(destination),
            Err(err) => {
                self.lock().remove(id);
                return Err(err);
            }
        };
        let mut entries = self.lock();
        // Drop stale entries now and then so deleted destinations do not pile up.
        if entries.len() > 1024 {
            let ttl = self.ttl;
            entries.retain(|_, (read_at, _)| read_at.elapsed() < ttl);
        }
        entries.insert(id.to_owned(), (Instant::now(), Arc::clone(&destination)));
        Ok(destination)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<Target>)>> {
        // The map is valid whatever a panicking holder did to it: entries are replaced whole.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use journeys_store::DestinationKind;
    use serde_json::json;

    use super::*;

    fn record(settings: serde_json::Value) -> DestinationRecord {
        DestinationRecord::new("d", DestinationKind::Webhook, settings, Utc::now())
    }

    fn parse(settings: serde_json::Value) -> Result<WebhookDestination, DeliveryError> {
        WebhookDestination::from_record(
            &record(settings),
            Duration::from_secs(10),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn reads_the_stored_settings() {
        let d = parse(json!({
            "url": "https://hooks.example.com/in",
            "headers": {"X-Api-Key": "k1", "x-other": "v"},
            "signing_secret": "s3cret",
            "timeout_ms": 2500
        }))
        .unwrap();
        assert_eq!(d.url, "https://hooks.example.com/in");
        assert_eq!(d.headers.get("x-api-key").unwrap(), "k1");
        assert_eq!(d.headers.len(), 2);
        assert_eq!(d.signing_secret.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(d.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn defaults_and_caps() {
        let d = parse(json!({"url": "http://127.0.0.1:9/x", "signing_secret": ""})).unwrap();
        assert_eq!(d.signing_secret, None);
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert!(d.headers.is_empty());
        let d = parse(json!({"url": "http://h/", "timeout_ms": 0})).unwrap();
        assert_eq!(d.timeout, Duration::from_secs(10));
        let d = parse(json!({"url": "http://h/", "timeout_ms": 3_600_000})).unwrap();
        assert_eq!(d.timeout, Duration::from_secs(60));
    }

    #[test]
    fn rejects_unusable_settings() {
        for settings in [
            json!({}),
            json!({"url": 5}),
            json!({"url": "not a url"}),
            json!({"url": "/relative"}),
            json!({"url": "ftp://h/x"}),
            json!({"url": "http://h", "headers": {"bad name": "v"}}),
            json!({"url": "http://h", "headers": {"x": "line\nbreak"}}),
        ] {
            let err = parse(settings.clone()).unwrap_err();
            assert!(
                matches!(err, DeliveryError::InvalidDestination { .. }),
                "{settings}: {err}"
            );
        }
    }

    #[test]
    fn url_credentials_become_basic_auth_and_are_masked() {
        let d = parse(json!({"url": "https://us%40er:p%3Ass@hooks.example.com/in"})).unwrap();
        assert_eq!(d.url, "https://hooks.example.com/in");
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(
            d.headers.get(AUTHORIZATION).unwrap(),
            &format!("Basic {expected}")
        );
        // A configured Authorization header wins.
        let d = parse(json!({"url": "https://u:p@h/", "headers": {"Authorization": "Bearer t"}}))
            .unwrap();
        assert_eq!(d.headers.get(AUTHORIZATION).unwrap(), "Bearer t");
        assert_eq!(
            mask_url_credentials("https://user:s3cret@h:8080/in?x=a@b"),
            "https://user:********@h:8080/in?x=a@b"
        );
        assert_eq!(
            mask_url_credentials("https://tok3n@h/in"),
            "https://********@h/in"
        );
        assert_eq!(mask_url_credentials("https://h/a@b"), "https://h/a@b");
        let err = parse(json!({"url": "ftp://user:s3cret@h/"})).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn paths_join_with_one_slash() {
        assert_eq!(join("http://h/in", "a"), "http://h/in/a");
        assert_eq!(join("http://h/in", "/a"), "http://h/in/a");
        assert_eq!(join("http://h/in/", "/a"), "http://h/in/a");
        assert_eq!(join("http://h/in/", "a"), "http://h/in/a");
        assert_eq!(join("http://h/in", ""), "http://h/in");
        assert_eq!(join("http://h/in", "?x=1"), "http://h/in?x=1");
        let d = parse(json!({"url": "http://h:8080/in"})).unwrap();
        assert_eq!(
            d.uri_for("/track").unwrap().to_string(),
            "http://h:8080/in/track"
        );
        assert!(matches!(
            d.uri_for("bad path with spaces"),
            Err(DeliveryError::InvalidRequest(_))
        ));
    }
}
