//! Faults with real processes (issue 15), on MariaDB:
//!
//! - a private `mariadbd` on its own port and data directory is killed while a client streams
//!   events and started again; ingest answers UNAVAILABLE (gRPC) and 503 (HTTP) during the
//!   outage, resumes after it, and every acknowledged event is in the store afterwards;
//! - a destination flaps between 500s, answers after its timeout and 200s, while another
//!   destination gets its sends before the flapping one recovers; every send succeeds once
//!   per Idempotency-Key and none is sent again after its success.
//!
//! Skipped, saying so, unless `JOURNEYS_TEST_MYSQL_URL` is set and `/usr/sbin/mariadbd` (and
//! `mariadb-install-db`) are installed. Every process and directory is removed on drop, also
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
