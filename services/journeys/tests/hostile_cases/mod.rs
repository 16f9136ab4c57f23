//! The hostile-input suite's machinery: the table's case type, the server under test with its
//! fixtures, the per-case "still answers" check and the final "nothing acknowledged is lost"
//! check. The cases themselves are in the submodules, one per surface.

mod control;
mod grpc;
mod http;
mod journeys;
mod port;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use journeys_data_plane::DataPlane;
use journeys_engine::{Ack, EventSink, OVERLOADED};
use journeys_proto::v1 as pb;
use journeys_runtime::config::Config;
use journeys_testkit::Sink;
use journeys_tests::{Stack, StackClients, StackOptions};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The admin token of the server under test (control-plane calls carry it).
pub const ADMIN_TOKEN: &str = "hostile-admin-token-3c1f";
/// The longest any one case may take; none comes near it unless the server hangs.
const CASE_PATIENCE: Duration = Duration::from_secs(60);
/// The longest an error message may be: precise, never a dump of the input.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// What a case got: the status (`"400"`, a gRPC code such as `"InvalidArgument"`, an ack
/// status such as `"REJECTED"`, `"Ok"`, or `"closed"` when the server closed the connection
/// without answering) and the message (the whole HTTP response, the gRPC message, or the
/// ack's code and message).
#[derive(Debug, Clone)]
pub struct Got {
    pub status: String,
    pub message: String,
}

impl Got {
    pub fn new(status: impl Into<String>, message: impl Into<String>) -> Got {
        Got {
            status: status.into(),
            message: message.into(),
        }
    }

    /// A gRPC call's outcome: `"Ok"` with the reply's debug form, or the code and message.
    pub fn grpc<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> Got {
        match result {
            Ok(reply) => Got::new("Ok", format!("{:?}", reply.into_inner())),
            Err(status) => Got::new(format!("{:?}", status.code()), status.message()),
        }
    }

    /// An ack: its status name and `code: message`.
    pub fn ack(ack: &pb::Ack) -> Got {
        let status = pb::AckStatus::try_from(ack.status)
            .map_or("UNKNOWN", |s| s.as_str_name())
            .trim_start_matches("ACK_STATUS_")
            .to_owned();
        Got::new(status, format!("{}: {}", ack.code, ack.message))
    }
}

type CaseFuture = Pin<Box<dyn Future<Output = anyhow::Result<Got>> + Send>>;
type Run = Box<dyn Fn(Arc<Ctx>) -> CaseFuture + Send + Sync>;

/// One row of the table: its input (the `run` closure sends it) and what it must get.
pub struct Case {
    pub name: String,
    pub status: String,
    pub message: String,
    run: Run,
}

/// A case named `name` that must get `status` and a message containing `message`.
pub fn case<F, R>(name: impl Into<String>, status: &str, message: &str, run: F) -> Case
where
    F: Fn(Arc<Ctx>) -> R + Send + Sync + 'static,
    R: Future<Output = anyhow::Result<Got>> + Send + 'static,
{
    Case {
        name: name.into(),
        status: status.to_owned(),
        message: message.to_owned(),
        run: Box::new(move |ctx| Box::pin(run(ctx))),
    }
}

/// The server under test and its fixtures, shared by every case.
pub struct Ctx {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// Clients carrying the admin token.
    pub clients: StackClients,
    /// The write key of source `web`, and of a second source `app`.
    pub key: String,
    pub key2: String,
    /// The write key of a revoked source.
    pub revoked: String,
    /// A data plane over the same store whose engine answers every event `overloaded`.
    pub overloaded_http: SocketAddr,
    pub overloaded_grpc: SocketAddr,
    /// Where the webhook destination `hook` delivers.
    pub sink_url: String,
    /// User ids whose identify events were acknowledged by a case: their profiles must exist.
    pub acked_profiles: Mutex<BTreeSet<String>>,
    /// User ids whose `probe` track events were acknowledged by a case: the probe journey's
    /// send for each must reach the sink.
    pub sent: Mutex<BTreeSet<String>>,
    /// How many `probe` events cases had acknowledged (not counting duplicates).
    pub probe_events: std::sync::atomic::AtomicUsize,
}

impl Ctx {
    /// Clients carrying the admin token (a cheap clone).
    pub fn c(&self) -> StackClients {
        self.clients.clone()
    }

    /// Records that a `probe` track event of `user_id` was acknowledged (as new, not as a
    /// duplicate).
    pub fn sent(&self, user_id: &str) {
        self.sent.lock().unwrap().insert(user_id.to_owned());
        self.probe_events
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Records that an identify event of `user_id` was acknowledged.
    pub fn acked(&self, user_id: &str) {
        self.acked_profiles
            .lock()
            .unwrap()
            .insert(user_id.to_owned());
    }
}

/// An engine stand-in that answers every event `overloaded`, as the engine does past its
/// in-flight bound.
#[derive(Clone)]
struct Overloaded;

impl EventSink for Overloaded {
    fn submit(
        &self,
        events: Vec<journeys_core::model::Event>,
    ) -> impl Future<Output = Vec<Ack>> + Send {
        let acks = events
            .into_iter()
            .map(|e| {
                Ack::rejected(
                    e.message_id,
                    OVERLOADED,
                    "too many events in flight; retry later",
                )
            })
            .collect();
        std::future::ready(acks)
    }
}

fn configure(config: &mut Config) {
    // The sink listens on 127.0.0.1: only that address is allowed, so every other spelling
    // of loopback, and every other non-global address, is refused.
    config.destination_allow = vec!["127.0.0.1/32".to_owned()];
    config.max_catalog_events = 400;
}

/// Runs every case against a fresh server over `url`; how many ran.
pub async fn run_suite(url: &str) -> anyhow::Result<usize> {
    let sink = Sink::start().await;
    let stack = Stack::start(
        url,
        StackOptions {
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            allow_short_durations: true,
            configure: Some(configure),
            ..StackOptions::default()
        },
    )
    .await?;
    let (overloaded_stop, overloaded) = start_overloaded(url).await?;
    let ctx = Arc::new(setup(&stack, &sink, overloaded).await?);

    // Cases that wait out the server's timeouts run beside the rest from the start.
    let slow: Vec<_> = port::slow_cases()
        .into_iter()
        .map(|case| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let got = tokio::time::timeout(CASE_PATIENCE, (case.run)(ctx)).await;
                (case.name.clone(), check(&case, got))
            })
        })
        .collect();
    let cases: Vec<Case> = [
        http::cases(),
        port::cases(),
        grpc::cases(),
        control::cases(),
        journeys::cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut failures = Vec::new();
    let mut ran = slow.len();
    let mut probes = 0;
    for case in cases {
        ran += 1;
        let got = tokio::time::timeout(CASE_PATIENCE, (case.run)(ctx.clone())).await;
        if let Err(failure) = check(&case, got) {
            failures.push(failure);
        }
        // The server still answers: health, a control-plane call, and an event is acked.
        if let Err(err) = still_answers(&ctx, probes).await {
            failures.push(format!(
                "after {}: the server no longer answers: {err:#}",
                case.name
            ));
            break;
        }
        probes += 1;
    }
    for task in slow {
        let (name, outcome) = task.await?;
        if let Err(failure) = outcome {
            failures.push(failure);
        }
        let _ = name;
    }
    if failures.is_empty()
        && let Err(err) = nothing_acked_is_lost(&ctx, &sink, probes).await
    {
        failures.push(format!("acknowledged events were lost: {err:#}"));
    }
    let _ = overloaded_stop.send(());
    stack.stop().await?;
    sink.stop().await;
    anyhow::ensure!(
        failures.is_empty(),
        "{} of {ran} hostile cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(ran)
}

/// Whether `got` is what `case` expects; the failure names the case, the expectation and
/// what came instead.
fn check(
    case: &Case,
    got: Result<anyhow::Result<Got>, tokio::time::error::Elapsed>,
) -> Result<(), String> {
    let got = match got {
        Err(_) => {
            return Err(format!(
                "{}: no outcome within {CASE_PATIENCE:?}",
                case.name
            ));
        }
        Ok(Err(err)) => return Err(format!("{}: could not run: {err:#}", case.name)),
        Ok(Ok(got)) => got,
    };
    let fits = got.status == case.status && got.message.contains(&case.message);
    // An error's message names the problem; it never dumps the input back.
    let precise = got.message.len() <= MAX_MESSAGE_BYTES
        || got.status == "Ok"
        || got.status.starts_with(char::is_numeric);
    if fits && precise {
        return Ok(());
    }
    let mut shown = got.message.clone();
    if shown.len() > 600 {
        let mut end = 600;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str(&format!("… ({} bytes)", got.message.len()));
    }
    Err(format!(
        "{}: expected {} with {:?}, got {} with {shown:?}",
        case.name, case.status, case.message, got.status
    ))
}

/// Creates the fixtures: sources, the webhook destination, a probe journey that sends each
/// probe event to the sink, and a draft journey cases can edit.
async fn setup(
    stack: &Stack,
    sink: &Sink,
    overloaded: (SocketAddr, SocketAddr),
) -> anyhow::Result<Ctx> {
    let mut c = stack.clients().await?;
    let key = c.create_source("web").await?;
    let key2 = c.create_source("app").await?;
    let (revoked_id, revoked) = c.create_source_with_id("revoked").await?;
    c.sources
        .revoke_source(pb::RevokeSourceRequest { id: revoked_id })
        .await?;
    c.webhook("hook", &sink.url(), None).await?;
    c.register_events(&["probe", "signup", "checkout_started", "purchase_completed"])
        .await?;
    c.publish(&json!({"journey": {
        "id": "probes", "name": "Probes reach the sink",
        "entry": {"event": "probe"}, "entry_rule": "ENTER_ONCE",
        "start_step": "send",
        "steps": [{"key": "send", "name": "Send", "send": {"destination_id": "hook"}}]
    }}))
    .await?;
    c.journeys
        .create_journey(journeys_tests::journey_request_from_json(
            &json!({"journey": {
                "id": "draft", "name": "A draft",
                "entry": {"event": "signup"}, "entry_rule": "ENTER_ONCE",
                "start_step": "send",
                "steps": [{"key": "send", "name": "Send", "send": {"destination_id": "hook"}}]
            }}),
        )?)
        .await?;
    let http = stack.http_base();
    let http: SocketAddr = http.trim_start_matches("http://").parse()?;
    Ok(Ctx {
        http,
        grpc: stack.grpc_addr(),
        clients: c,
        key,
        key2,
        revoked,
        overloaded_http: overloaded.0,
        overloaded_grpc: overloaded.1,
        sink_url: sink.url(),
        acked_profiles: Mutex::new(BTreeSet::new()),
        sent: Mutex::new(BTreeSet::new()),
        probe_events: std::sync::atomic::AtomicUsize::new(0),
    })
}

/// A data plane over the store at `url` whose engine answers `overloaded`: its HTTP and gRPC
/// addresses.
async fn start_overloaded(
    url: &str,
) -> anyhow::Result<(oneshot::Sender<()>, (SocketAddr, SocketAddr))> {
    let store = journeys_store::Store::connect(url).await?;
    let plane = DataPlane::new(Overloaded, store);
    let grpc = TcpListener::bind("127.0.0.1:0").await?;
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = (http.local_addr()?, grpc.local_addr()?);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        plane
            .serve(grpc, http, async {
                let _ = stopped.await;
            })
            .await
    });
    Ok((stop, addrs))
}

/// `/health` answers 200, a control-plane call answers, and probe event `n` is acknowledged.
async fn still_answers(ctx: &Ctx, n: usize) -> anyhow::Result<()> {
    let health = raw(ctx.http, get_request("/health", &[])).await;
    anyhow::ensure!(
        health.status == "200" && health.message.contains("\"ok\""),
        "/health answered {health:?}"
    );
    ctx.c()
        .sources
        .list_sources(pb::ListSourcesRequest::default())
        .await?;
    let probe = json!({"userId": format!("probe-{n}"), "event": "probe", "messageId": format!("probe-{n}")});
    let reply = raw(
        ctx.http,
        post_request("/v1/track", &keyed(&ctx.key), &serde_json::to_vec(&probe)?),
    )
    .await;
    anyhow::ensure!(reply.status == "200", "probe {n} answered {reply:?}");
    Ok(())
}

/// Every probe's send reached the sink, the catalog counts every probe event, and every
/// profile an accepted identify wrote exists.
async fn nothing_acked_is_lost(ctx: &Ctx, sink: &Sink, probes: usize) -> anyhow::Result<()> {
    let mut users: Vec<String> = (0..probes).map(|n| format!("probe-{n}")).collect();
    users.extend(ctx.sent.lock().unwrap().iter().cloned());
    let received = sink.wait_for(users.len(), Duration::from_secs(60)).await;
    let bodies: Vec<String> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.raw).into_owned())
        .collect();
    let missing: Vec<&String> = users
        .iter()
        .filter(|user| {
            let quoted = serde_json::to_string(user).unwrap_or_default();
            !bodies.iter().any(|b| b.contains(&quoted))
        })
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the sends of {missing:?} never reached the sink ({} of {} did)",
        received.len(),
        users.len()
    );
    let probes = probes + ctx.probe_events.load(std::sync::atomic::Ordering::SeqCst);
    let mut c = ctx.c();
    let catalog = c
        .catalog
        .list_events(pb::ListEventsRequest {})
        .await?
        .into_inner();
    let counted = catalog
        .events
        .iter()
        .find(|e| e.name == "probe")
        .map_or(0, |e| e.count);
    anyhow::ensure!(
        counted == i64::try_from(probes)?,
        "the catalog counts {counted} probe events, {probes} were acknowledged"
    );
    let users: Vec<String> = ctx.acked_profiles.lock().unwrap().iter().cloned().collect();
    for user in users {
        c.profiles
            .get_profile(pb::GetProfileRequest {
                user_id: user.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("profile {user:?} of an acknowledged event: {e}"))?;
    }
    Ok(())
}

/// The `authorization` header of a write key.
pub fn keyed(key: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", journeys_tests::http::basic_auth(key))]
}

/// An HTTP/1.1 POST of `body` to `path` with these headers (plus host, a JSON content type
/// unless given, content-length and `connection: close`).
pub fn post_request(path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("content-type: application/json\r\n");
    }
    if !headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    }) {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    request
}

/// An HTTP/1.1 GET of `path` with these headers (plus host and `connection: close`).
pub fn get_request(path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Sends `request` as is on a fresh connection and reads the answer until the server closes
/// it: the status code (`"closed"` when none came) and the whole response as text.
pub async fn raw(addr: SocketAddr, request: Vec<u8>) -> Got {
    let Ok(mut tcp) = TcpStream::connect(addr).await else {
        return Got::new("refused", "could not connect");
    };
    // The server may answer (and stop reading) before the whole request is written.
    let _ = tcp.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(45), tcp.read_to_end(&mut answer)).await;
    response(&answer)
}

/// The status and text of a raw HTTP response.
pub fn response(answer: &[u8]) -> Got {
    let text = String::from_utf8_lossy(answer).into_owned();
    let status = text
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("closed")
        .to_owned();
    Got::new(status, text)
}
