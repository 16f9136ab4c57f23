//! Webhook destinations as the client needs them: stored settings parsed and checked once,
//! then cached briefly so that a busy dispatcher does not read the store per send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use tokio::time::Instant;

use journeys_store::{DestinationRecord, Store, StoreError, WebhookSettings};

use crate::error::DeliveryError;

/// Where and how to send a destination's requests.
#[derive(Debug, Clone)]
pub(crate) struct WebhookDestination {
    /// Base URL (`http` or `https`, with a host); a send's path is appended.
    pub url: String,
    /// Configured extra headers, already valid.
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
        let uri: Uri = settings
            .url
            .parse()
            .map_err(|e| invalid(format!("url {:?}: {e}", settings.url)))?;
        let scheme_ok = uri.scheme() == Some(&Scheme::HTTP) || uri.scheme() == Some(&Scheme::HTTPS);
        if !scheme_ok || uri.host().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "url {:?} is not an absolute http(s) URL",
                settings.url
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
        let timeout = settings.timeout(default_timeout, max_timeout);
        Ok(Self {
            url: settings.url,
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
    entries: Mutex<HashMap<String, (Instant, Arc<WebhookDestination>)>>,
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
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Arc<WebhookDestination>, DeliveryError> {
        let now = Instant::now();
        if let Some((read_at, destination)) = self.lock().get(id)
            && now.duration_since(*read_at) < self.ttl
        {
            return Ok(Arc::clone(destination));
        }
        self.refresh(store, id).await
    }

    /// Reads the destination from the store, bypassing (and updating) the cache.
    pub async fn refresh(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Arc<WebhookDestination>, DeliveryError> {
        let record = match store.destinations().get(id).await {
            Ok(record) => record,
            Err(StoreError::NotFound { .. }) => {
                self.lock().remove(id);
                return Err(DeliveryError::UnknownDestination(id.to_owned()));
            }
            Err(err) => return Err(err.into()),
        };
        let destination = match WebhookDestination::from_record(
            &record,
            self.default_timeout,
            self.max_timeout,
        ) {
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

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<WebhookDestination>)>> {
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
