//! Destination functions next to webhooks, through the real dispatcher: `N` queued sends to a
//! webhook destination, then `N` to a function destination whose `onTrack` does one `fetch` to
//! the same sink, then `N` to a function that only validates the event (no `fetch`: the
//! function's own cost apart from its round trip), each drained by a fresh dispatcher (SQLite
//! store, default function workers).
//! Prints sends per second of wall time and per second of process CPU time (user + system of
//! the whole process, the in-process sink included): the second is the per-core figure. The
//! sink only counts (a recording sink's bookkeeping would dominate the profile).
//!
//! `cargo bench -p journeys-delivery --bench functions -- [N]` (default 20,000).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use journeys_delivery::function::FunctionLimits;
use journeys_delivery::{AddressPolicy, DeliveryConfig, Dispatcher};
use journeys_store::{
    Changes, DestinationKind, DestinationRecord, FunctionSettings, OutboxRecord, OutboxStatus,
    Store,
};
use journeys_testkit::TestDb;
use journeys_testkit::journeys::webhook_destination;
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FUNCTION: &str = r"
async function onTrack(event, settings) {
  const res = await fetch(settings.url, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: event.userId, event: event.event, plan: event.properties.plan })
  })
  if (res.status >= 500) throw new RetryError(`upstream ${res.status}`)
  if (!res.ok) throw new ValidationError(`rejected ${res.status}`)
}
";

/// Validates and returns: a send whose only work is the invocation.
const FUNCTION_NO_FETCH: &str = r"
async function onTrack(event, settings) {
  if (!event.userId) throw new ValidationError('userId is required')
  if (!event.properties || !event.properties.plan) throw new ValidationError('plan is required')
}
";

/// User + system CPU time of this process so far (`/proc/self/stat`, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the state field.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// An HTTP/1.1 server on `127.0.0.1` answering 200 `{"ok":true}` and counting requests.
struct Sink {
    base: String,
    count: Arc<AtomicUsize>,
}

impl Sink {
    async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let counted = Arc::clone(&counted);
                        async move {
                            let _ = req.into_body().collect().await;
                            counted.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                Bytes::from_static(b"{\"ok\":true}"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Sink { base, count }
    }

    fn url_at(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    async fn wait_for(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} sends arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn row(destination_id: &str) -> OutboxRecord {
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

async fn enqueue(store: &Store, destination_id: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let rows = chunk.iter().map(|_| row(destination_id)).collect();
        store
            .batches()
            .commit(&Changes {
                outbox_new: rows,
                ..Changes::default()
            })
            .await
            .expect("commit outbox rows");
    }
}

/// How a drain knows it is over.
#[derive(Clone, Copy)]
enum Until {
    /// The sink has seen one more request per send.
    Requests,
    /// No row is pending any more (a send that makes no request).
    Marked,
}

/// Waits until no outbox row is pending.
async fn wait_marked(store: &Store, within: Duration) {
    let deadline = Instant::now() + within;
    while store
        .outbox()
        .next_due_at()
        .await
        .expect("pending rows")
        .is_some()
    {
        assert!(Instant::now() < deadline, "sends still pending");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drains `n` queued sends to `destination_id` with a fresh dispatcher; the sink has seen
/// `before` requests already. Returns (wall, CPU) time.
async fn drain(
    store: &Store,
    sink: &Sink,
    destination_id: &str,
    n: usize,
    until: Until,
) -> (Duration, Duration) {
    let before = sink.count();
    enqueue(store, destination_id, n).await;
    let config = DeliveryConfig {
        address_policy: AddressPolicy::allow_loopback(),
        functions: FunctionLimits::default(),
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(store.clone(), config);
    // Warm the engine (and evaluate the code once) outside the measurement, as a running
    // node has.
    let _engine = dispatcher.functions();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (wall, cpu) = (Instant::now(), cpu_time());
    let running = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));
    match until {
        Until::Requests => sink.wait_for(before + n, Duration::from_secs(600)).await,
        Until::Marked => wait_marked(store, Duration::from_secs(600)).await,
    }
    let measured = (wall.elapsed(), cpu_time().saturating_sub(cpu));
    let _ = stop.send(());
    running.await.expect("dispatcher");
    measured
}

/// A function destination `name` running `code` with `settings.url` = `url`.
async fn function_destination(store: &Store, name: &str, code: &str, url: &str) -> String {
    let settings = FunctionSettings {
        code: code.to_owned(),
        settings: json!({ "url": url })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..FunctionSettings::default()
    };
    store
        .destinations()
        .insert(&DestinationRecord::new(
            name,
            DestinationKind::Function,
            settings.to_json(),
            Utc::now(),
        ))
        .await
        .expect("function destination")
        .id
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let db = TestDb::sqlite().await.expect("sqlite store");
        let store = db.store().clone();
        let sink = Sink::start().await;
        let webhook = webhook_destination(
            &store,
            json!({"url": sink.url_at("/hook"), "headers": {}, "timeout_ms": 5000}),
        )
        .await;
        let url = sink.url_at("/fn");
        let function = function_destination(&store, "bench function", FUNCTION, &url).await;
        let no_fetch =
            function_destination(&store, "bench function, no fetch", FUNCTION_NO_FETCH, &url).await;
        let runs = [
            ("webhook", &webhook, Until::Requests),
            ("function", &function, Until::Requests),
            ("fn-nofetch", &no_fetch, Until::Marked),
        ];
        // A short warm-up of each path, then the measured runs.
        for (_, id, until) in runs {
            drain(&store, &sink, id, 500, until).await;
        }
        println!(
            "sends: {n} per destination, SQLite outbox, {} function workers",
            FunctionLimits::default().workers
        );
        println!(
            "kind        wall s   sends/s (wall)   CPU s   sends per CPU-second   CPU per send"
        );
        for (kind, id, until) in runs {
            let (wall, cpu) = drain(&store, &sink, id, n, until).await;
            println!(
                "{kind:<11} {:>6.2}   {:>14.0}   {:>5.2}   {:>20.0}   {:>9.0} µs",
                wall.as_secs_f64(),
                n as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64(),
                n as f64 / cpu.as_secs_f64().max(0.01),
                cpu.as_secs_f64() * 1e6 / n as f64,
            );
        }
        let failed = store
            .outbox()
            .list_dead(None, None, 10, None)
            .await
            .expect("dead letters");
        assert!(
            failed.items.is_empty(),
            "no send failed: {:?}",
            failed.items
        );
        db.close().await.expect("close store");
    });
}
