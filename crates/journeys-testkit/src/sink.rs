//! One real HTTP webhook receiver for every test: it listens on `127.0.0.1:0`, records every
//! request (method, path, headers, body, arrival time, the status it answered) and answers
//! from a script.
//!
//! The script is one queue of [`Reply`]s for the whole sink, consumed one per request, then a
//! default (200 `{"ok": true}` unless changed): `sink.script([500, 500])` makes the next two
//! requests fail and later ones succeed. A reply can carry headers, a body and a delay before
//! it is sent. Tests that need different behaviour per destination start one sink per
//! destination.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query, e.g. `/hooks/forms`.
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// The body as sent.
    pub raw: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// The status the sink answered with.
    pub answered: u16,
}

impl Received {
    /// A header as text; `None` when absent or not text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Idempotency-Key` header (empty when absent).
    #[must_use]
    pub fn idempotency_key(&self) -> &str {
        self.header("idempotency-key").unwrap_or_default()
    }

    /// A string field of the JSON body (empty when absent).
    #[must_use]
    pub fn str_field(&self, name: &str) -> &str {
        self.body
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether `Journeys-Signature` is a valid HMAC-SHA256 of this body under `secret`,
    /// checked independently of the product's signing code.
    #[must_use]
    pub fn signed_with(&self, secret: &str) -> bool {
        let header = self.header("journeys-signature").unwrap_or_default();
        let mut t = None;
        let mut v1 = None;
        for part in header.split(',') {
            match part.split_once('=') {
                Some(("t", value)) => t = Some(value),
                Some(("v1", value)) => v1 = Some(value),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return false;
        };
        let Ok(mut mac) = hmac::Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
            return false;
        };
        mac.update(t.as_bytes());
        mac.update(b".");
        mac.update(&self.raw);
        hex::encode(mac.finalize().into_bytes()) == v1
    }
}

/// What the sink answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// The body; `None` answers `{"ok": <status is 2xx>}` as JSON.
    pub body: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// An answer with `status` and the default body.
    #[must_use]
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
            delay: Duration::ZERO,
        }
    }

    /// This answer with `body` instead of the default.
    #[must_use]
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// This answer with one more header.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// This answer sent only after `delay`.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl From<u16> for Reply {
    fn from(status: u16) -> Self {
        Reply::status(status)
    }
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    default_reply: Option<Reply>,
    /// Requests being answered now, and the most at any time.
    active: usize,
    peak: usize,
}

struct Shared {
    log: Mutex<Log>,
    arrived: Notify,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A webhook receiver on `127.0.0.1`. Stops when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sink {
    /// Starts a sink answering 200 `{"ok": true}` to every request.
    ///
    /// # Panics
    /// When no port on `127.0.0.1` can be bound: the test cannot run.
    pub async fn start() -> Sink {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(err) => panic!("cannot bind the webhook sink: {err}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(err) => panic!("the webhook sink has no address: {err}"),
        };
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            arrived: Notify::new(),
        });
        let router = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Sink {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` on this sink, e.g. `http://127.0.0.1:41234/hooks`.
    #[must_use]
    pub fn url_at(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues answers for the next requests, one each, after those already queued. Plain
    /// status codes work too: `sink.script([500, 500])`.
    pub fn script<R: Into<Reply>>(&self, replies: impl IntoIterator<Item = R>) {
        self.shared
            .log()
            .script
            .extend(replies.into_iter().map(Into::into));
    }

    /// The answer once the script is used up.
    pub fn answer_by_default(&self, reply: impl Into<Reply>) {
        self.shared.log().default_reply = Some(reply.into());
    }

    /// Every request received so far, in arrival order.
    #[must_use]
    pub fn requests(&self) -> Vec<Received> {
        self.shared.log().received.clone()
    }

    /// How many requests arrived so far.
    #[must_use]
    pub fn count(&self) -> usize {
        self.shared.log().received.len()
    }

    /// The most requests the sink was answering at the same time.
    #[must_use]
    pub fn peak_concurrency(&self) -> usize {
        self.shared.log().peak
    }

    /// Waits until at least `n` requests arrived and returns all of them.
    ///
    /// # Panics
    /// After `timeout`, saying how many came.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before looking, so an arrival in between is not missed.
            let arrived = self.shared.arrived.notified();
            let received = self.requests();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.requests();
                assert!(
                    received.len() >= n,
                    "the sink received {} of {n} expected requests within {timeout:?}: {:?}",
                    received.len(),
                    received.iter().map(|r| &r.body).collect::<Vec<_>>()
                );
                return received;
            }
        }
    }

    /// Waits until no request arrived for `quiet` and returns everything received. Use after
    /// the expected requests are in, to catch unexpected late ones.
    pub async fn settle(&self, quiet: Duration) -> Vec<Received> {
        loop {
            let before = self.count();
            tokio::time::sleep(quiet).await;
            if self.count() == before {
                return self.requests();
            }
        }
    }

    /// Stops the server after the requests in flight are answered.
    ///
    /// # Panics
    /// When the server failed.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => panic!("the webhook sink failed: {err}"),
                Err(err) => panic!("the webhook sink task failed: {err}"),
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let at = Instant::now();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let reply = {
        let mut log = shared.log();
        let reply = log
            .script
            .pop_front()
            .or_else(|| log.default_reply.clone())
            .unwrap_or_else(|| Reply::status(200));
        log.received.push(Received {
            method,
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), ToString::to_string),
            headers,
            body,
            raw,
            at,
            answered: reply.status,
        });
        log.active += 1;
        log.peak = log.peak.max(log.active);
        reply
    };
    shared.arrived.notify_waiters();
    tokio::time::sleep(reply.delay).await;
    shared.log().active -= 1;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match reply.body {
        Some(body) => (status, body).into_response(),
        None => (status, axum::Json(json!({"ok": status.is_success()}))).into_response(),
    };
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}
