//! The demo webhook sink of `journeys dev`: `POST /dev/sink` (any sub-path) on the HTTP port
//! accepts every delivery, logs it, and keeps the last [`KEPT`] for `GET /dev/sink`, which
//! lists them oldest first as indented JSON (readable straight from `curl`).
//!
//! It lets the README walk-through show a payload arriving with nothing else installed: point
//! a destination at `http://127.0.0.1:8088/dev/sink`. It exists only in `journeys dev`.
//!
//! The list shows what was delivered, so it is guarded like the admin API: when an admin token
//! is configured, `GET /dev/sink` needs `Authorization: Bearer <admin token>` (401 otherwise);
//! without one the node refuses to serve the sink on anything but loopback (`check_bind`).
//! Deliveries (`POST`) need no token: they come from the engine's own dispatcher.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, get};
use journeys_runtime::auth::AdminAuth;
use serde_json::{Value, json};

/// How many deliveries `GET /dev/sink` shows.
pub const KEPT: usize = 100;

/// The deliveries kept, and who may list them.
#[derive(Clone, Default)]
struct Received {
    kept: Arc<Mutex<VecDeque<Value>>>,
    auth: AdminAuth,
}

/// The sink's routes, to merge into the HTTP router; `admin_token` is the node's (listing
/// requires it when set).
pub fn router(admin_token: Option<String>) -> Router {
    Router::new()
        .route("/dev/sink", get(list).post(receive))
        .route("/dev/sink/{*path}", any(receive))
        .with_state(Received {
            kept: Arc::default(),
            auth: AdminAuth::new(admin_token),
        })
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
    let mut kept = received.kept.lock().unwrap_or_else(PoisonError::into_inner);
    if kept.len() == KEPT {
        kept.pop_front();
    }
    kept.push_back(entry);
    Json(json!({"ok": true}))
}

async fn list(State(received): State<Received>, headers: HeaderMap) -> Response {
    // The admin API's own check, on the same `authorization` header.
    if let Err(status) = received
        .auth
        .check(&tonic::metadata::MetadataMap::from_headers(headers))
    {
        let body = json!({"code": "unauthenticated", "message": format!(
            "listing the dev sink needs the admin token: {}", status.message()
        )});
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
            Json(body),
        )
            .into_response();
    }
    let kept = Value::Array(
        received
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect(),
    );
    // Serialising a `Value` cannot fail; the fallback only keeps the handler panic-free.
    let mut text = serde_json::to_string_pretty(&kept).unwrap_or_else(|_| "[]".to_owned());
    text.push('\n');
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}
