//! Write keys: finding the key in a request (HTTP Basic, gRPC metadata, the JSON body) and
//! resolving it to an active source through the store, with a short-lived cache.
//!
//! Every request is authenticated, so lookups are cached; the cache lives only a few seconds so
//! that revoking a source takes effect within seconds on every data-plane process, without any
//! notification channel between control plane and data plane. Unknown keys are cached too
//! (more briefly), so a client hammering with a bad key does not hammer the store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use hashlink::LruCache;
use http::HeaderMap;
use journeys_store::{SourceRecord, Store, StoreError};
use tokio::time::Instant;

/// Re-exported from the store, which owns how write keys are kept.
pub use journeys_store::hash_write_key;

/// How long a resolved key stays valid without asking the store: the longest a revoked source
/// keeps working.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(5);

/// How long an unknown or revoked key is remembered as such: the longest a newly created source
/// can be refused after a failed attempt with its key.
pub const DEFAULT_NEGATIVE_KEY_TTL: Duration = Duration::from_secs(1);

/// Entries per cache (known keys, unknown keys) unless configured otherwise (`write_key_cache_size`,
/// [`WriteKeys::with_capacity`]); past it the least recently used entry of that
/// cache makes room, so a flood of random keys cannot grow memory without bound and the keys
/// in use stay cached. Known and unknown keys are cached apart: a flood of unknown keys never
/// evicts the sources that are really sending.
pub const MAX_CACHED_KEYS: usize = 10_000;

/// The gRPC metadata (and HTTP header) carrying a bare write key.
pub const WRITE_KEY_HEADER: &str = "x-write-key";

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No write key anywhere in the request.
    #[error(
        "missing write key: send it as the HTTP Basic user name with an empty password, or as writeKey in the body"
    )]
    Missing,
    /// No active source has this key (unknown, or revoked).
    #[error("invalid write key: no active source has it")]
    Invalid,
    /// The store could not be asked; the client may retry.
    #[error("write keys cannot be checked right now")]
    Unavailable,
}

impl AuthError {
    /// Stable code for error bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_write_key",
            AuthError::Invalid => "invalid_write_key",
            AuthError::Unavailable => journeys_engine::UNAVAILABLE,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    source: Option<Arc<SourceRecord>>,
    expires: Instant,
}

/// Resolves write keys to active sources. Cheap to clone: clones share the cache.
#[derive(Debug, Clone)]
pub struct WriteKeys {
    store: Store,
    ttl: Duration,
    negative_ttl: Duration,
    /// Keyed by the key's hash, so raw keys are not kept in memory longer than a request.
    cache: Arc<Mutex<Caches>>,
}

/// Known keys (with their source) and unknown ones, each a bounded LRU of its own.
#[derive(Debug)]
struct Caches {
    known: LruCache<String, Entry>,
    unknown: LruCache<String, Entry>,
}

impl Caches {
    fn new(capacity: usize) -> Caches {
        Caches {
            known: LruCache::new(capacity),
            unknown: LruCache::new(capacity),
        }
    }

    fn get(&mut self, hash: &str, now: Instant) -> Option<Option<Arc<SourceRecord>>> {
        let entry = match self.known.get(hash) {
            Some(entry) => Some(entry),
            None => self.unknown.get(hash),
        };
        entry
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.source.clone())
    }

    fn insert(&mut self, hash: String, entry: Entry) {
        if entry.source.is_some() {
            self.unknown.remove(&hash);
            self.known.insert(hash, entry);
        } else {
            self.known.remove(&hash);
            self.unknown.insert(hash, entry);
        }
    }
}

impl WriteKeys {
    /// Resolves through `store` with the default cache lifetimes.
    #[must_use]
    pub fn new(store: Store) -> WriteKeys {
        WriteKeys::with_ttl(store, DEFAULT_KEY_TTL, DEFAULT_NEGATIVE_KEY_TTL)
    }

    /// Resolves through `store`, caching found keys for `ttl` and unknown ones for
    /// `negative_ttl`.
    #[must_use]
    pub fn with_ttl(store: Store, ttl: Duration, negative_ttl: Duration) -> WriteKeys {
        WriteKeys::with_capacity(store, ttl, negative_ttl, MAX_CACHED_KEYS)
    }

    /// [`WriteKeys::with_ttl`] keeping at most `capacity` known and `capacity` unknown keys.
    #[must_use]
    pub fn with_capacity(
        store: Store,
        ttl: Duration,
        negative_ttl: Duration,
        capacity: usize,
    ) -> WriteKeys {
        WriteKeys {
            store,
            ttl,
            negative_ttl,
            cache: Arc::new(Mutex::new(Caches::new(capacity.max(1)))),
        }
    }

    /// The active source whose write key is `key`.
    ///
    /// # Errors
    /// [`AuthError::Missing`] for an empty key, [`AuthError::Invalid`] when no active source has
    /// it, [`AuthError::Unavailable`] when the store cannot be reached (not cached).
    pub async fn resolve(&self, key: &str) -> Result<Arc<SourceRecord>, AuthError> {
        if key.is_empty() {
            return Err(AuthError::Missing);
        }
        let hash = hash_write_key(key);
        let now = Instant::now();
        let cached = self.lock().get(&hash, now);
        if let Some(source) = cached {
            return source.ok_or(AuthError::Invalid);
        }
        let found = self
            .store
            .sources()
            .find_active_by_key_hash(&hash)
            .await
            .map_err(|err: StoreError| {
                tracing::warn!(error = %err, "write key lookup failed");
                AuthError::Unavailable
            })?
            .map(Arc::new);
        let ttl = if found.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        self.lock().insert(
            hash,
            Entry {
                source: found.clone(),
                expires: Instant::now() + ttl,
            },
        );
        found.ok_or(AuthError::Invalid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Caches> {
        // The map holds no invariant a panicking holder could break.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The write key in `authorization: Basic base64("<key>:")` (the password is ignored) or in
/// `x-write-key`, whichever is present; `None` when neither is.
#[must_use]
pub fn write_key_from_headers(headers: &HeaderMap) -> Option<String> {
    let basic = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    if basic.is_some() {
        return basic;
    }
    headers
        .get(WRITE_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

/// The user name of an HTTP Basic credential, or `None` when it is not one.
fn parse_basic(value: &str) -> Option<String> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _)| user);
    (!user.is_empty()).then(|| user.to_owned())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn basic_user_name_is_the_key() {
        assert_eq!(parse_basic(&basic("wk_1:")), Some("wk_1".to_owned()));
        assert_eq!(parse_basic(&basic("wk_1")), Some("wk_1".to_owned()));
        assert_eq!(parse_basic(&basic("wk_1:ignored")), Some("wk_1".to_owned()));
        assert_eq!(
            parse_basic(&format!("basic  {}", &basic("k:")[6..])),
            Some("k".to_owned())
        );
        assert_eq!(parse_basic(&basic(":")), None);
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[test]
    fn headers_basic_or_x_write_key() {
        let mut headers = HeaderMap::new();
        assert_eq!(write_key_from_headers(&headers), None);
        headers.insert(WRITE_KEY_HEADER, HeaderValue::from_static("k2"));
        assert_eq!(write_key_from_headers(&headers), Some("k2".to_owned()));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&basic("k1:")).unwrap(),
        );
        assert_eq!(write_key_from_headers(&headers), Some("k1".to_owned()));
    }
}
