//! A real HTTP webhook receiver for the end-to-end tests: it listens on `127.0.0.1:0`, records
//! every request (method, path, headers, body, arrival time) and answers from a script.
//!
//! The script is one queue of statuses for the whole sink, consumed one per request, then a
//! default (200 unless changed): `sink.script([500, 500])` makes the next two requests fail and
//! later ones succeed. Tests that need different behaviour per destination start one sink per
//! destination.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hmac::{KeyInit, Mac};
use journeys_runtime::shutdown::Shutdown;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
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
    /// A header as text (empty when absent or not text).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> &str {
        self.header("idempotency-key")
    }

    /// A string field of the JSON body (empty when absent).
    pub fn str_field(&self, name: &str) -> &str {
        self.body
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// Whether `Journeys-Signature` is a valid HMAC-SHA256 of this body under `secret`,
    /// checked independently of the product's signing code.
    pub fn signed_with(&self, secret: &str) -> bool {
        let header = self.header("journeys-signature");
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

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    script: VecDeque<u16>,
    default_status: Option<u16>,
}

struct Shared {
    log: Mutex<Log>,
    arrived: Notify,
}

impl Shared {
    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A webhook receiver on `127.0.0.1`. Stops when dropped.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Sink {
    /// Starts a sink answering 200 `{"ok": true}` to every request.
    pub async fn start() -> anyhow::Result<Sink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            arrived: Notify::new(),
        });
        let router = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let shutdown = Shutdown::new();
        let stop = shutdown.wait();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        });
        Ok(Sink {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues statuses for the next requests, one each, after those already queued.
    pub fn script(&self, statuses: impl IntoIterator<Item = u16>) {
        self.shared.log().script.extend(statuses);
    }

    /// The status for requests once the script is used up.
    pub fn answer_by_default(&self, status: u16) {
        self.shared.log().default_status = Some(status);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.log().received.clone()
    }

    /// How many requests arrived so far.
    pub fn count(&self) -> usize {
        self.shared.log().received.len()
    }

    /// Waits until at least `n` requests arrived and returns all of them; fails after
    /// `timeout`, saying how many came.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before looking, so an arrival in between is not missed.
            let arrived = self.shared.arrived.notified();
            let received = self.requests();
            if received.len() >= n {
                return Ok(received);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.requests();
                if received.len() >= n {
                    return Ok(received);
                }
                anyhow::bail!(
                    "the sink received {} of {n} expected requests within {timeout:?}: {:?}",
                    received.len(),
                    received.iter().map(|r| &r.body).collect::<Vec<_>>()
                );
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

    /// Stops the server.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shutdown.trigger();
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
    let status = {
        let mut log = shared.log();
        let status = log.script.pop_front().or(log.default_status).unwrap_or(200);
        log.received.push(Received {
            method,
            path: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), ToString::to_string),
            headers,
            body,
            raw,
            at,
            answered: status,
        });
        status
    };
    shared.arrived.notify_waiters();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(json!({"ok": status.is_success()}))).into_response()
}
