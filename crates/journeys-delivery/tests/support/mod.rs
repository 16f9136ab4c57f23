//! Test support: a real HTTP webhook sink on `127.0.0.1:0` that records every request and
//! answers from a script, plus builders for destinations and outbox rows.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use journeys_delivery::{DeliveryConfig, RetryPolicy};
use journeys_store::{
    Changes, DestinationKind, DestinationRecord, OutboxRecord, OutboxStatus, Store,
};

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the sink received JSON")
    }
}

/// What the sink answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

#[derive(Default)]
struct SinkState {
    received: Mutex<Vec<Received>>,
    /// Answers for the next requests, in order; then 200.
    script: Mutex<VecDeque<Reply>>,
    arrived: Notify,
    /// Requests being answered now, and the most at any time.
    active: AtomicUsize,
    peak: AtomicUsize,
}

/// The webhook sink. Dropping it stops the server.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// A sink answering `script` in order, then 200.
    pub async fn start(script: Vec<Reply>) -> Self {
        let state = Arc::new(SinkState {
            script: Mutex::new(script.into()),
            ..SinkState::default()
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sink");
        let addr = listener.local_addr().expect("sink address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("sink server");
        });
        Self {
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// The most requests the sink was answering at the same time.
    pub fn peak_concurrency(&self) -> usize {
        self.state.peak.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived, failing the test after `within`.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.state.arrived.notified();
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "expected {n} requests within {within:?}, got {}",
                    self.received().len()
                );
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(state): State<Arc<SinkState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.received.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let active = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    state.peak.fetch_max(active, Ordering::SeqCst);
    state.arrived.notify_waiters();
    let scripted = state.script.lock().unwrap().pop_front();
    let reply = scripted.unwrap_or_else(|| Reply::status(200));
    tokio::time::sleep(reply.delay).await;
    state.active.fetch_sub(1, Ordering::SeqCst);
    let mut response = (
        StatusCode::from_u16(reply.status).expect("scripted status"),
        reply.body,
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("scripted header"));
    }
    response
}

/// Millisecond backoff so that retry tests take milliseconds, not seconds.
pub fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            factor: 2,
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(5),
        },
        ..DeliveryConfig::default()
    }
}

/// Stores a webhook destination pointing at `url` and returns its id.
pub async fn destination(store: &Store, url: &str, extra: Value) -> String {
    let mut settings = json!({"url": url, "headers": {}, "timeout_ms": 5000});
    if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            settings.insert(k.clone(), v.clone());
        }
    }
    let record = DestinationRecord::new(
        format!("sink-{}", journeys_store::new_id()),
        DestinationKind::Webhook,
        settings,
        Utc::now(),
    );
    store
        .destinations()
        .insert(&record)
        .await
        .expect("insert destination")
        .id
}

/// A pending send to `destination_id`, due now, whose payload carries its `messageId`.
pub fn outbox_row(destination_id: &str) -> OutboxRecord {
    let now = Utc::now();
    let message_id = format!("msg-{}", journeys_store::new_id());
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: journeys_store::new_id(),
        profile_id: "user-1".to_owned(),
        journey_id: journeys_store::new_id(),
        step_key: "welcome-abc123".to_owned(),
        destination_id: destination_id.to_owned(),
        message_id: message_id.clone(),
        method: "POST".to_owned(),
        path: "/track".to_owned(),
        payload: json!({
            "type": "track",
            "event": "Welcome",
            "userId": "user-1",
            "messageId": message_id,
            "properties": {"plan": "pro"}
        }),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        traceparent: None,
        created_at: now,
        sent_at: None,
        dead_at: None,
    }
}

/// Commits `rows` the way the data plane does: through the runtime's one transaction.
pub async fn enqueue(store: &Store, rows: Vec<OutboxRecord>) {
    store
        .runtime()
        .commit(&Changes {
            outbox_new: rows,
            ..Changes::default()
        })
        .await
        .expect("commit outbox rows");
}

/// Polls the row until `done` holds, failing the test after `within`.
pub async fn wait_row(
    store: &Store,
    id: &str,
    within: Duration,
    done: impl Fn(&OutboxRecord) -> bool,
) -> OutboxRecord {
    let deadline = Instant::now() + within;
    loop {
        let row = store.outbox().get(id).await.expect("read outbox row");
        if done(&row) {
            return row;
        }
        assert!(
            Instant::now() < deadline,
            "outbox row never reached the expected state: {row:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs a dispatcher until the returned sender is dropped or fired.
pub fn spawn(
    dispatcher: journeys_delivery::Dispatcher,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(dispatcher.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}
