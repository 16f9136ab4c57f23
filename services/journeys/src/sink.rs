//! The demo webhook sink of `journeys dev`: `POST /dev/sink` (any sub-path) on the HTTP port
//! accepts every delivery, logs it, and keeps the last [`KEPT`] for `GET /dev/sink`, which
//! lists them oldest first as indented JSON (readable straight from `curl`).
//!
//! It lets the README walk-through show a payload arriving with nothing else installed: point
//! a destination at `http://127.0.0.1:8088/dev/sink`. It exists only in `journeys dev`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Json};
use axum::routing::{any, get};
use serde_json::{Value, json};

/// How many deliveries `GET /dev/sink` shows.
pub const KEPT: usize = 100;

#[derive(Clone, Default)]
struct Received(Arc<Mutex<VecDeque<Value>>>);

/// The sink's routes, to merge into the HTTP router.
pub fn router() -> Router {
    Router::new()
        .route("/dev/sink", get(list).post(receive))
        .route("/dev/sink/{*path}", any(receive))
        .with_state(Received::default())
}

async fn receive(
    State(received): State<Received>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let body: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let entry = json!({
        "received_at": chrono::Utc::now().to_rfc3339(),
        "method": method.as_str(),
        "path": uri.path(),
        "idempotency_key": header("idempotency-key"),
        "signature": header("journeys-signature"),
        "body": body,
    });
    tracing::info!(target: "journeys::dev_sink", delivery = %entry, "webhook received");
    let mut kept = received.0.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() == KEPT {
        kept.pop_front();
    }
    kept.push_back(entry);
    Json(json!({"ok": true}))
}

async fn list(State(received): State<Received>) -> impl IntoResponse {
    let kept = Value::Array(
        received
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect(),
    );
    // Serialising a `Value` cannot fail; the fallback only keeps the handler panic-free.
    let mut text = serde_json::to_string_pretty(&kept).unwrap_or_else(|_| "[]".to_owned());
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text)
}
