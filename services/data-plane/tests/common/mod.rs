//! Shared test harness: a scripted in-memory event sink, a data plane serving on 127.0.0.1:0
//! over a real store with one source, and small HTTP and gRPC client helpers.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{HeaderMap, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use journeys_core::model::Event;
use journeys_data_plane::{DataPlane, WriteKeys, hash_write_key};
use journeys_engine::{Ack, AckStatus, EventSink};
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use journeys_runtime::grpc::ServeError;
use journeys_store::{SourceRecord, Store};
use journeys_testkit::TestDb;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// The write key of the source every harness creates.
pub const WRITE_KEY: &str = "wk_test_3f9a1c7e5b2d4a60";

/// A sink that records every event it is given and acknowledges according to the event's
/// `properties.outcome` (`duplicate`, or a rejection code such as `rate_limited`), after
/// `properties.delay_ms` milliseconds when set. Everything else is accepted.
#[derive(Clone, Default)]
pub struct FakeSink {
    events: Arc<Mutex<Vec<Event>>>,
    calls: Arc<Mutex<usize>>,
}

impl FakeSink {
    /// Every event submitted so far, in submission order.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Message ids of [`FakeSink::events`].
    pub fn ids(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.message_id).collect()
    }

    /// How many times `submit` was called.
    pub fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

impl EventSink for FakeSink {
    fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send {
        // Recorded at the first poll, before any waiting: "the sink took it".
        let events_log = self.events.clone();
        let calls = self.calls.clone();
        async move {
            *calls.lock().unwrap() += 1;
            events_log.lock().unwrap().extend(events.iter().cloned());
            let delay = events
                .iter()
                .filter_map(|e| e.properties.get("delay_ms").and_then(Value::as_u64))
                .max();
            if let Some(ms) = delay {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            events
                .into_iter()
                .map(|e| {
                    let outcome = e.properties.get("outcome").and_then(Value::as_str);
                    match outcome {
                        None => Ack::accepted(e.message_id),
                        Some("duplicate") => Ack {
                            message_id: e.message_id,
                            status: AckStatus::Duplicate,
                        },
                        Some(code) => Ack::rejected(e.message_id, code, format!("scripted {code}")),
                    }
                })
                .collect()
        }
    }
}

/// A data plane serving on ephemeral ports over a test database, with one active source for
/// [`WRITE_KEY`]. The database itself belongs to the test's backend run.
pub struct Harness {
    pub db: Store,
    pub sink: FakeSink,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub source_id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Harness {
    /// Serves with the default write-key cache.
    pub async fn start(db: &TestDb) -> Harness {
        let keys = WriteKeys::new(db.store().clone());
        Harness::start_with(db, keys).await
    }

    /// Serves with write keys cached for `ttl` (unknown keys for `ttl` too).
    pub async fn start_with_ttl(db: &TestDb, ttl: Duration) -> Harness {
        let keys = WriteKeys::with_ttl(db.store().clone(), ttl, ttl);
        Harness::start_with(db, keys).await
    }

    async fn start_with(db: &TestDb, keys: WriteKeys) -> Harness {
        let source_id = create_source(db, WRITE_KEY).await;
        let sink = FakeSink::default();
        let plane = DataPlane::with_write_keys(sink.clone(), keys);
        let grpc_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            plane
                .serve(grpc_listener, http_listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Harness {
            db: db.store().clone(),
            sink,
            grpc,
            http,
            source_id,
            stop: Some(stop),
            task,
        }
    }

    /// Revokes the harness's source in the store.
    pub async fn revoke(&self) {
        self.db
            .sources()
            .revoke(&self.source_id, chrono::Utc::now())
            .await
            .unwrap();
    }

    /// Stops the servers, asserting they stop cleanly.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("data plane stops within the drain timeout")
            .unwrap();
        result.expect("data plane stops without error");
    }

    pub async fn grpc_client(&self) -> IngestServiceClient<Channel> {
        IngestServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }
}

/// Stores an active source whose write key is `key`; returns its id.
pub async fn create_source(db: &TestDb, key: &str) -> String {
    let record = SourceRecord {
        id: journeys_store::new_id(),
        name: format!("source {}", &key[..10]),
        key_hash: hash_write_key(key),
        key_prefix: key[..8].to_owned(),
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    db.sources().insert(&record).await.unwrap().id
}

/// `Basic base64("<key>:")`.
pub fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// `bytes` gzip-compressed.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// What an HTTP call returned; `body` is `Null` when it was not JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error body's `code`.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

/// Sends `method path` with `headers` and `body` to `addr`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = client
        .request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// `POST path` with `body` as JSON, authenticated with `key` by HTTP Basic when given.
pub async fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &Value) -> Reply {
    let auth = key.map(basic);
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    request(
        addr,
        "POST",
        path,
        &headers,
        serde_json::to_vec(body).unwrap(),
    )
    .await
}
