//! Faults with real processes (issue 15), on MariaDB:
//!
//! - a private `mariadbd` on its own port and data directory is killed while a client streams
//!   events and started again; ingest answers UNAVAILABLE (gRPC) and 503 (HTTP) during the
//!   outage, resumes after it, and every acknowledged event is in the store afterwards;
//! - a destination flaps between 500s, answers after its timeout and 200s, while another
//!   destination gets its sends before the flapping one recovers; every send succeeds once
//!   per Idempotency-Key and none is sent again after its success;
//! - the stand-alone scheduler (real `journeys serve` processes: a data-plane node and a
//!   scheduler) is SIGKILLed while abandoned-checkout timeouts are coming due and restarted;
//!   every non-buyer is nudged exactly once (one Idempotency-Key each; an at-least-once resend
//!   under the same key counts once), no buyer is. Over the store alone, and, when
//!   `JOURNEYS_TEST_NATS_URL` is set, through the NATS partition log.
//!
//! Skipped, saying so, unless `JOURNEYS_TEST_MYSQL_URL` is set (and, for the first,
//! `/usr/sbin/mariadbd` and `mariadb-install-db` are installed). Every process and directory is removed on drop, also
//! when the test fails.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use journeys_proto::v1 as pb;
use journeys_testkit::sink::Received;
use journeys_tests::ingest::{IngestStream, identify};
use journeys_tests::{Stack, StackOptions};
use serde_json::json;
use tokio::time::Instant;

const MARIADBD: &str = "/usr/sbin/mariadbd";
/// How long one event may wait for its answer; the store's own timeouts are shorter.
const ANSWER_PATIENCE: Duration = Duration::from_secs(30);

/// A private MariaDB server: its own data directory and port, killed and removed on drop.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateMariaDb {
    /// A fresh server with database `journeys`, or `None` (and why, on stderr) when this
    /// machine cannot run one.
    async fn start_if_possible() -> anyhow::Result<Option<PrivateMariaDb>> {
        if std::env::var_os("JOURNEYS_TEST_MYSQL_URL").is_none() {
            eprintln!(
                "skipped: JOURNEYS_TEST_MYSQL_URL is not set (the fault tests run on MariaDB)"
            );
            return Ok(None);
        }
        if !Path::new(MARIADBD).exists() || which("mariadb-install-db").is_none() {
            eprintln!("skipped: {MARIADBD} or mariadb-install-db is not installed");
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        let install = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(
            install.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut db = PrivateMariaDb {
            dir,
            port,
            child: None,
        };
        db.start().await?;
        let created = Command::new("mariadb")
            .args(["--host=127.0.0.1", "--user=root", &format!("--port={port}")])
            .args(["-e", "CREATE DATABASE journeys"])
            .output()?;
        anyhow::ensure!(
            created.status.success(),
            "CREATE DATABASE failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        Ok(Some(db))
    }

    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/journeys", self.port)
    }

    /// Starts `mariadbd` on the data directory and waits until it accepts connections.
    async fn start(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("mariadbd.log"))?;
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("pid").display()
            ))
            .args([
                "--user=root",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=32M",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let answers = Command::new("mariadb-admin")
                .args([
                    "--host=127.0.0.1",
                    "--user=root",
                    &format!("--port={}", self.port),
                ])
                .arg("ping")
                .output()
                .is_ok_and(|o| o.status.success());
            if answers && tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!(
            "mariadbd did not answer on {addr} within 60 s; log:\n{}",
            std::fs::read_to_string(self.dir.path().join("mariadbd.log")).unwrap_or_default()
        )
    }

    /// SIGKILL: the server is gone at once, as in a crash.
    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        let _ = self.kill();
        // The temporary directory removes itself.
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.exists())
    })
}

/// What one event got.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Accepted,
    /// A retryable refusal: an ack with code `unavailable`, or the stream ended UNAVAILABLE.
    Unavailable,
    Other(String),
}

/// Sends identify `n` on `stream` (reopening it when needed) and waits for its answer.
async fn send(
    client: &mut journeys_proto::v1::ingest_service_client::IngestServiceClient<
        tonic::transport::Channel,
    >,
    key: &str,
    stream: &mut Option<IngestStream>,
    n: usize,
) -> Answer {
    if stream.is_none() {
        match IngestStream::open(client, key).await {
            Ok(opened) => *stream = Some(opened),
            Err(err) => return classify_error(&err),
        }
    }
    let open = stream.as_mut().expect("opened above");
    let event = identify(&format!("f-{n}"), &format!("f-{n}"), &json!({"n": n}));
    if let Err(err) = open.send(event).await {
        *stream = None;
        return Answer::Other(format!("send failed: {err}"));
    }
    match tokio::time::timeout(ANSWER_PATIENCE, open.acks(1, ANSWER_PATIENCE)).await {
        Err(_) => {
            *stream = None;
            Answer::Other("no answer within the patience".to_owned())
        }
        Ok(Err(err)) => {
            *stream = None;
            classify_error(&err)
        }
        Ok(Ok(acks)) => {
            let ack = &acks[0];
            if ack.status == pb::AckStatus::Accepted as i32 {
                Answer::Accepted
            } else if ack.code == "unavailable" {
                Answer::Unavailable
            } else {
                Answer::Other(format!("{ack:?}"))
            }
        }
    }
}

fn classify_error(err: &anyhow::Error) -> Answer {
    match err.downcast_ref::<tonic::Status>() {
        Some(status) if status.code() == tonic::Code::Unavailable => Answer::Unavailable,
        _ => Answer::Other(format!("{err:#}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_mid_stream_answers_unavailable_then_resumes_and_loses_nothing_acked()
-> anyhow::Result<()> {
    let Some(mut db) = PrivateMariaDb::start_if_possible().await? else {
        return Ok(());
    };
    let stack = Stack::start(&db.url(), StackOptions::default()).await?;
    let mut c = stack.clients().await?;
    let key = c.create_source("faults").await?;
    let http = stack.http();
    let mut client = c.ingest.clone();
    let mut stream = None;
    let mut acked = Vec::new();
    let mut n = 0;

    // Before: every event is acknowledged.
    for _ in 0..30 {
        let answer = send(&mut client, &key, &mut stream, n).await;
        anyhow::ensure!(
            answer == Answer::Accepted,
            "before the outage, event {n}: {answer:?}"
        );
        acked.push(n);
        n += 1;
    }

    // The database dies mid-stream: gRPC answers UNAVAILABLE and HTTP 503, retryably.
    db.kill()?;
    let (mut grpc_unavailable, mut http_503) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(grpc_unavailable && http_503) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no UNAVAILABLE / 503 within 90 s of the outage (gRPC {grpc_unavailable}, HTTP {http_503})"
        );
        match send(&mut client, &key, &mut stream, n).await {
            Answer::Accepted => acked.push(n),
            Answer::Unavailable => grpc_unavailable = true,
            Answer::Other(other) => anyhow::bail!("during the outage, event {n}: {other}"),
        }
        n += 1;
        let reply = http
            .post_json(
                "/v1/identify",
                Some(&key),
                &json!({"userId": format!("f-{n}"), "messageId": format!("f-{n}"), "traits": {"n": n}}),
            )
            .await?;
        match reply.status.as_u16() {
            200 => acked.push(n),
            503 => {
                anyhow::ensure!(
                    reply.headers.contains_key("retry-after"),
                    "a 503 without Retry-After: {:?}",
                    reply.headers
                );
                http_503 = true;
            }
            other => anyhow::bail!("during the outage, HTTP answered {other}: {:?}", reply.body),
        }
        n += 1;
    }

    // After the restart ingest resumes on its own.
    db.start().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut resumed = 0;
    while resumed < 20 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "ingest did not resume within 120 s of the restart ({resumed} accepted)"
        );
        match send(&mut client, &key, &mut stream, n).await {
            Answer::Accepted => {
                acked.push(n);
                resumed += 1;
            }
            Answer::Unavailable => tokio::time::sleep(Duration::from_millis(500)).await,
            Answer::Other(other) => {
                eprintln!("while resuming, event {n}: {other}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        n += 1;
    }

    // Nothing acknowledged is lost.
    for i in &acked {
        let profile = c
            .profiles
            .get_profile(pb::GetProfileRequest {
                user_id: format!("f-{i}"),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("acknowledged event f-{i} is lost: {e}"))?
            .into_inner();
        let traits = format!("{:?}", profile.traits);
        anyhow::ensure!(traits.contains("\"n\""), "f-{i}: {traits}");
    }
    eprintln!(
        "{} acknowledged events, all present, of {n} sent",
        acked.len()
    );
    drop(stream);
    stack.stop().await?;
    Ok(())
}

/// The webhook destination `id` at `url`, giving up on an attempt after `timeout`.
async fn webhook(
    c: &mut journeys_tests::StackClients,
    id: &str,
    url: &str,
    timeout: &str,
) -> anyhow::Result<()> {
    let request: pb::CreateDestinationRequest = journeys_tests::request_from_json(
        &json!({"destination": {"id": id, "name": format!("Webhook {id}"),
            "webhook": {"url": url, "timeout": timeout}}}),
        "journeys.v1.CreateDestinationRequest",
    )?;
    c.destinations.create_destination(request).await?;
    Ok(())
}

fn fast_retries(config: &mut journeys_runtime::config::Config) {
    config.retry_backoff_base_ms = 100;
    config.retry_backoff_max_secs = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_destination_delays_no_other_loses_nothing_and_succeeds_once_per_key()
-> anyhow::Result<()> {
    use journeys_testkit::sink::{Reply, Sink};
    const USERS: usize = 20;
    let Some(db) = journeys_testkit::TestDb::mysql().await? else {
        eprintln!("skipped: JOURNEYS_TEST_MYSQL_URL is not set (the fault tests run on MariaDB)");
        return Ok(());
    };
    let flappy = Sink::start().await;
    let healthy = Sink::start().await;
    // The first attempts fail: a 500, then an answer that comes after the 1 s timeout, in
    // turn; every attempt after those succeeds.
    flappy.script((0..USERS).flat_map(|_| {
        [
            Reply::status(500),
            Reply::status(202).delay(Duration::from_secs(4)),
        ]
    }));
    let stack = Stack::start(
        db.url(),
        StackOptions {
            allow_short_durations: true,
            configure: Some(fast_retries),
            ..StackOptions::default()
        },
    )
    .await?;
    let mut c = stack.clients().await?;
    let key = c.create_source("orders").await?;
    webhook(&mut c, "flappy", &flappy.url(), "1s").await?;
    webhook(&mut c, "healthy", &healthy.url(), "5s").await?;
    c.register_events(&["order"]).await?;
    for destination in ["flappy", "healthy"] {
        c.publish(&json!({"journey": {
            "id": format!("to-{destination}"), "name": format!("Orders to {destination}"),
            "entry": {"event": "order"}, "entry_rule": "ENTER_ONCE", "start_step": "send",
            "steps": [{"key": "send", "name": "Send", "send": {"destination_id": destination}}]
        }}))
        .await?;
    }
    let http = stack.http();
    for i in 0..USERS {
        let reply = http
            .post_json(
                "/v1/track",
                Some(&key),
                &json!({"userId": format!("o-{i}"), "messageId": format!("o-{i}"), "event": "order"}),
            )
            .await?;
        anyhow::ensure!(reply.status == 200, "order {i}: {:?}", reply.body);
    }

    // The healthy destination gets every send while the flapping one is still failing.
    let got = healthy.wait_for(USERS, Duration::from_secs(60)).await;
    anyhow::ensure!(
        got.len() == USERS,
        "the healthy destination got {} of {USERS}",
        got.len()
    );
    let succeeded_at_flappy = flappy
        .requests()
        .iter()
        .filter(|r| r.answered == 200)
        .count();
    anyhow::ensure!(
        succeeded_at_flappy < USERS,
        "the healthy destination waited for the flapping one ({succeeded_at_flappy} of its sends had succeeded)"
    );

    // The flapping destination gets every send in the end, each succeeding once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let requests = flappy.requests();
        let done: std::collections::BTreeSet<&str> = requests
            .iter()
            .filter(|r| r.answered == 200)
            .map(Received::idempotency_key)
            .collect();
        if done.len() == USERS {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {USERS} sends succeeded at the flapping destination within 120 s",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut by_key: std::collections::BTreeMap<String, Vec<Received>> =
        std::collections::BTreeMap::new();
    for request in flappy.requests() {
        by_key
            .entry(request.idempotency_key().to_owned())
            .or_default()
            .push(request);
    }
    anyhow::ensure!(
        by_key.len() == USERS,
        "{} keys at the flapping destination",
        by_key.len()
    );
    for (key, mut attempts) in by_key {
        anyhow::ensure!(!key.is_empty(), "a send without an Idempotency-Key");
        attempts.sort_by_key(|r| r.at);
        let successes = attempts.iter().filter(|r| r.answered == 200).count();
        anyhow::ensure!(successes == 1, "{key}: {successes} successful deliveries");
        anyhow::ensure!(
            attempts.last().is_some_and(|r| r.answered == 200),
            "{key}: sent again after it succeeded: {:?}",
            attempts.iter().map(|r| r.answered).collect::<Vec<_>>()
        );
    }
    let healthy_keys: std::collections::BTreeSet<String> = healthy
        .requests()
        .iter()
        .map(|r| r.idempotency_key().to_owned())
        .collect();
    anyhow::ensure!(
        healthy_keys.len() == USERS,
        "healthy: {} distinct keys",
        healthy_keys.len()
    );
    stack.stop().await?;
    flappy.stop().await;
    healthy.stop().await;
    db.close().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The scheduler SIGKILLed during an abandonment run.
//
// Which process fires timers in a split deployment (`journeys::node`): the data-plane node is a
// partition owner, and a stand-alone scheduler (`--roles scheduler,delivery`, what
// `journeys-scheduler` runs) claims due timers with a lease. Without a NATS log the scheduler
// fires each one itself, through its own engine, committing the transition and deleting the
// timer in one transaction (and its dispatcher sends the nudge at once); with a log
// (`--nats-url`) it publishes each due timer into its profile's partition (message id
// `timer:<id>:<due>`) and the partition's owner, the data-plane node, applies it. Either way the
// scheduler is the process that claims timers, and the one killed here.

/// How long a checkout waits for its purchase.
const HOLD_SECS: u64 = 3;
/// Checkouts, sent in waves so that their timeouts come due over a few seconds.
const CHECKOUTS: usize = 300;
const WAVES: usize = 6;
/// Every third customer buys (in the same batch, right after their checkout).
fn buys(u: usize) -> bool {
    u.is_multiple_of(3)
}
/// The whole scenario, processes included, ends within this or fails.
const SCENARIO_LIMIT: Duration = Duration::from_secs(110);

/// A `journeys serve` child process, killed (SIGKILL) and reaped when dropped.
struct Serve {
    child: Child,
    grpc: SocketAddr,
    log: PathBuf,
}

impl Serve {
    /// Starts `journeys serve` with `args` on `grpc` and waits until it reports SERVING (or
    /// fails at once with its log when it exits during start-up).
    async fn start(name: &str, grpc: SocketAddr, args: &[String]) -> anyhow::Result<Serve> {
        let log = std::env::temp_dir().join(format!(
            "journeys-faults-{}-{name}-{}.log",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_journeys"))
            .arg("serve")
            .args(args)
            .args(["--grpc-addr", &grpc.to_string()])
            .env_remove("JOURNEYS_ADMIN_TOKEN")
            .env_remove("JOURNEYS_CONFIG")
            .env_remove("JOURNEYS_NATS_URL")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut serve = Serve { child, grpc, log };
        let child = &mut serve.child;
        let started = journeys_tests::stack::wait_serving(grpc, || {
            child.try_wait().map_or(true, |s| s.is_some())
        })
        .await;
        if let Err(err) = started {
            anyhow::bail!("{name}: {err}; log:\n{}", serve.log_text());
        }
        Ok(serve)
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Fails, with the log, when the process has exited.
    fn ensure_running(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{name} exited with {status}; log:\n{}", self.log_text());
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The flags every process of the deployment shares: the store, the NATS log when there is one.
fn shared_args(database_url: &str, log: Option<&(String, String)>) -> Vec<String> {
    let mut args = vec![
        "--database-url".to_owned(),
        database_url.to_owned(),
        "--destination-allow".to_owned(),
        "127.0.0.1".to_owned(),
        "--allow-short-durations".to_owned(),
        "--partitions".to_owned(),
        "4".to_owned(),
    ];
    if let Some((url, stream)) = log {
        args.extend(["--nats-url".to_owned(), url.clone()]);
        args.extend(["--nats-stream".to_owned(), stream.clone()]);
    }
    args
}

/// The stand-alone scheduler (with delivery, as `journeys-scheduler` runs), node id `sched`.
async fn start_scheduler(
    grpc: SocketAddr,
    database_url: &str,
    log: Option<&(String, String)>,
) -> anyhow::Result<Serve> {
    let mut args = vec![
        "--roles".to_owned(),
        "scheduler,delivery".to_owned(),
        "--node-id".to_owned(),
        "sched".to_owned(),
        "--housekeeping-schedule".to_owned(),
        String::new(),
    ];
    args.extend(shared_args(database_url, log));
    Serve::start("scheduler", grpc, &args).await
}

fn checkout(u: usize) -> pb::Event {
    journeys_tests::ingest::track(
        &format!("c{u}"),
        "checkout_started",
        &format!("c{u}-checkout"),
        &json!({"session_id": format!("s{u}")}),
    )
}

fn purchase(u: usize) -> pb::Event {
    journeys_tests::ingest::track(
        &format!("c{u}"),
        "purchase_completed",
        &format!("c{u}-buy"),
        &json!({"session_id": format!("s{u}")}),
    )
}

/// Sends `events` in one `Batch` until each is acknowledged (accepted or duplicate); a
/// retryable refusal is sent again.
async fn deliver_all(
    client: &mut journeys_proto::v1::ingest_service_client::IngestServiceClient<
        tonic::transport::Channel,
    >,
    key: &str,
    mut events: Vec<pb::Event>,
) -> anyhow::Result<()> {
    while !events.is_empty() {
        let request = journeys_tests::ingest::keyed(
            pb::BatchRequest {
                events: events.clone(),
            },
            key,
        )?;
        let results = client.batch(request).await?.into_inner().results;
        let mut retry = Vec::new();
        for (event, ack) in events.into_iter().zip(results) {
            match pb::AckStatus::try_from(ack.status)? {
                pb::AckStatus::Accepted | pb::AckStatus::Duplicate => {}
                _ if ack.code == "unavailable" || ack.code == "overloaded" => retry.push(event),
                _ => anyhow::bail!("event {} refused: {ack:?}", event.message_id),
            }
        }
        events = retry;
        if !events.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The checkout journey: hold for the purchase, nudge on the timeout.
fn checkout_journey() -> serde_json::Value {
    json!({"journey": {
        "id": "checkout",
        "name": "Checkout nudge",
        "entry": {"event": "checkout_started"},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": "session_id",
        "start_step": "wait",
        "steps": [
            {"key": "wait", "name": "Wait for purchase", "hold_until": {
                "branches": [{"name": "Bought", "event": "purchase_completed", "next": "bought"}],
                "max_duration": format!("{HOLD_SECS}s"),
                "timeout_next": "nudge"
            }},
            {"key": "nudge", "name": "Nudge", "send": {
                "destination_id": "hook",
                "mapping": {"kind": "nudge", "user": {"@path": "$.userId"}},
                "next": "done"
            }},
            {"key": "bought", "name": "Bought", "end": {}},
            {"key": "done", "name": "Nudged", "end": {}}
        ]
    }})
}

/// The nudges the sink received, by user: the distinct Idempotency-Keys and the requests.
fn nudges_by_user(
    sink: &journeys_testkit::Sink,
) -> std::collections::BTreeMap<String, (std::collections::BTreeSet<String>, usize)> {
    let mut by_user: std::collections::BTreeMap<_, (std::collections::BTreeSet<String>, usize)> =
        std::collections::BTreeMap::new();
    for request in sink.requests() {
        let entry = by_user
            .entry(request.str_field("user").to_owned())
            .or_default();
        entry.0.insert(request.idempotency_key().to_owned());
        entry.1 += 1;
    }
    by_user
}

/// Waits (bounded) until `sink` holds a nudge for every user in `expected`.
async fn wait_for_nudges(
    sink: &journeys_testkit::Sink,
    expected: &std::collections::BTreeSet<String>,
    within: Duration,
    scheduler: &mut Serve,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let nudged = nudges_by_user(sink);
        if expected.iter().all(|u| nudged.contains_key(u)) {
            return Ok(());
        }
        scheduler.ensure_running("the restarted scheduler")?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} non-buyers were nudged within {within:?} of the restart",
            expected.iter().filter(|u| nudged.contains_key(*u)).count(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_sigkilled_mid_abandonment_run_loses_and_doubles_no_nudge() -> anyhow::Result<()>
{
    let Some(db) = journeys_testkit::TestDb::mysql().await? else {
        eprintln!("skipped: JOURNEYS_TEST_MYSQL_URL is not set (the fault tests run on MariaDB)");
        return Ok(());
    };
    let outcome = tokio::time::timeout(SCENARIO_LIMIT, scheduler_kill_scenario(db.url(), None))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "the scheduler-kill scenario did not finish within {SCENARIO_LIMIT:?}"
            ))
        });
    db.close().await?;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_sigkilled_mid_abandonment_run_through_the_partition_log_loses_and_doubles_no_nudge()
-> anyhow::Result<()> {
    let Ok(nats_url) = std::env::var("JOURNEYS_TEST_NATS_URL") else {
        eprintln!("skipped: JOURNEYS_TEST_NATS_URL is not set (this variant uses the NATS log)");
        return Ok(());
    };
    let Some(db) = journeys_testkit::TestDb::mysql().await? else {
        eprintln!("skipped: JOURNEYS_TEST_MYSQL_URL is not set (the fault tests run on MariaDB)");
        return Ok(());
    };
    let stream = format!("jf_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let log = (nats_url.clone(), stream.clone());
    let outcome = tokio::time::timeout(
        SCENARIO_LIMIT,
        scheduler_kill_scenario(db.url(), Some(&log)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "the scheduler-kill scenario did not finish within {SCENARIO_LIMIT:?}"
        ))
    });
    let partitions = journeys_engine::PartitionLog::connect(&nats_url, &stream, 4).await?;
    partitions.delete_stream().await?;
    db.close().await?;
    outcome
}

/// A data-plane node (`control-plane,data-plane,delivery`) and a stand-alone scheduler over one
/// MariaDB (and NATS log, when given); checkouts in waves, a third of them bought at once; the
/// scheduler is SIGKILLed once the first nudges arrived and timers are still pending, and
/// started again (same node id). Every non-buyer gets exactly one nudge, under one
/// Idempotency-Key; no buyer gets any.
async fn scheduler_kill_scenario(
    database_url: &str,
    log: Option<&(String, String)>,
) -> anyhow::Result<()> {
    let sink = journeys_testkit::Sink::start().await;
    let (front_grpc, front_http, sched_grpc) = (free_addr()?, free_addr()?, free_addr()?);
    let mut front_args = vec![
        "--roles".to_owned(),
        "control-plane,data-plane,delivery".to_owned(),
        "--node-id".to_owned(),
        "front".to_owned(),
        "--http-addr".to_owned(),
        front_http.to_string(),
    ];
    front_args.extend(shared_args(database_url, log));
    let mut front = Serve::start("data plane", front_grpc, &front_args).await?;
    let mut scheduler = start_scheduler(sched_grpc, database_url, log).await?;

    let mut c = journeys_tests::StackClients::connect(front.grpc, None).await?;
    let key = c.create_source("checkouts").await?;
    c.webhook("hook", &sink.url(), None).await?;
    c.register_events(&["checkout_started", "purchase_completed"])
        .await?;
    c.publish(&checkout_journey()).await?;

    // Checkouts in waves half a second apart; each buyer's purchase follows their checkout in
    // the same batch, so it is applied before the hold could run out.
    let mut ingest = c.ingest.clone();
    let per_wave = CHECKOUTS / WAVES;
    for wave in 0..WAVES {
        let mut events = Vec::new();
        for u in wave * per_wave..(wave + 1) * per_wave {
            events.push(checkout(u));
            if buys(u) {
                events.push(purchase(u));
            }
        }
        deliver_all(&mut ingest, &key, events).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Mid-run: the first nudges arrived and timers are still pending. SIGKILL the scheduler.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.count() == 0 {
        scheduler.ensure_running("the scheduler")?;
        front.ensure_running("the data-plane node")?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "no nudge arrived within 30 s of the last checkout"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pending = pending_timers(scheduler.grpc).await?;
    scheduler.kill()?;
    let before_kill = sink.count();
    anyhow::ensure!(
        pending > 0,
        "the kill came after every timer fired ({before_kill} nudges); nothing was tested"
    );

    // Started again under the same node id: claims the dead one held lapse after their lease
    // and are claimed again.
    let mut scheduler = start_scheduler(sched_grpc, database_url, log).await?;
    let expected: std::collections::BTreeSet<String> = (0..CHECKOUTS)
        .filter(|u| !buys(*u))
        .map(|u| format!("c{u}"))
        .collect();
    wait_for_nudges(&sink, &expected, Duration::from_secs(60), &mut scheduler).await?;
    // Late repeats (a doubled timer would show up here) have a moment to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let nudged = nudges_by_user(&sink);
    let buyers: Vec<&String> = nudged.keys().filter(|u| !expected.contains(*u)).collect();
    anyhow::ensure!(buyers.is_empty(), "buyers were nudged: {buyers:?}");
    let doubled: Vec<(&String, usize)> = nudged
        .iter()
        .filter(|(_, (keys, _))| keys.len() != 1)
        .map(|(u, (keys, _))| (u, keys.len()))
        .collect();
    anyhow::ensure!(
        doubled.is_empty(),
        "customers nudged under more than one Idempotency-Key (a timer fired twice): {doubled:?}"
    );
    // At-least-once delivery: a send in flight when the scheduler died is sent again under
    // the same key, which a receiver deduplicates; it counts once here.
    let repeats: usize = nudged.values().map(|(_, n)| n - 1).sum();
    let pending_after = pending_timers(scheduler.grpc).await?;
    anyhow::ensure!(
        pending_after == 0,
        "{pending_after} timers still pending after every nudge arrived"
    );
    eprintln!(
        "scheduler kill ({}): {pending} timers pending and {before_kill} nudges in at the kill; \
         {} customers nudged once each, {repeats} repeated sends under the same key",
        if log.is_some() {
            "NATS log"
        } else {
            "store only"
        },
        nudged.len()
    );
    drop(scheduler);
    drop(front);
    sink.stop().await;
    Ok(())
}

/// The scheduler's pending timers (`SchedulerService/GetSchedulerStats` on `addr`).
async fn pending_timers(addr: SocketAddr) -> anyhow::Result<i64> {
    let c = journeys_tests::StackClients::connect(addr, None).await?;
    let stats = c
        .scheduler
        .clone()
        .get_scheduler_stats(pb::GetSchedulerStatsRequest {})
        .await?
        .into_inner();
    Ok(stats.pending_timers)
}
