//! Crash safety of the real `journeys dev` binary, on every backend: SIGKILL while a client
//! streams events over gRPC, restart on the same database, and every acknowledged event has
//! its instance and its webhook arrives at least once (repeats only with the same `messageId`).
//!
//! The journey delays its send by a few seconds, longer than the streaming phase, so that
//! every webhook is produced after the restart (by timers that survived the crash) rather than
//! by a dispatcher that dies mid-send (a send in flight at a crash is retried once the dead
//! dispatcher's claimant lease runs out: `crates/journeys-delivery/tests/delivery.rs` shows that).

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use journeys_proto::v1 as pb;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{IngestStream, track};
use journeys_tests::stack::wait_serving;
use journeys_tests::{StackClients, on_each_backend};
use serde_json::json;
use tokio::time::Instant;

/// How long each entered instance waits before its send.
const DELAY_SECS: u64 = 5;
/// Streaming lasts at least this long before the kill (and ends well before the first delay
/// comes due, so no timer fired and no send was in flight when the process died).
const STREAM_FOR: Duration = Duration::from_secs(1);
/// Acknowledgements to see before the kill, so that the test checks something.
const MIN_ACKED: usize = 50;
/// Events sent per millisecond tick while streaming (about 2,000 per second).
const EVENTS_PER_TICK: usize = 2;
/// How long the webhooks may take after the restart. Normally the delay plus a few seconds;
/// generous enough to cover the two-minute delivery lease should a slow machine let a send
/// start before the kill.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(150);

/// A `journeys dev` child process, killed (SIGKILL) when dropped.
struct Dev {
    child: Child,
    grpc: SocketAddr,
    log: PathBuf,
}

impl Dev {
    /// Starts `journeys dev` on `database_url` and free ports; waits until it is SERVING.
    async fn start(database_url: &str, run: &str) -> anyhow::Result<Dev> {
        let [grpc, http] = free_ports()?;
        let log =
            std::env::temp_dir().join(format!("journeys-crash-{}-{run}.log", std::process::id()));
        let out = File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_journeys"))
            .args(["dev", "--database-url", database_url])
            .args(["--grpc-addr", &grpc.to_string()])
            .args(["--http-addr", &http.to_string()])
            .arg("--allow-short-durations")
            .env_remove("JOURNEYS_ADMIN_TOKEN")
            .env_remove("JOURNEYS_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut dev = Dev { child, grpc, log };
        let child = &mut dev.child;
        let started = wait_serving(grpc, || child.try_wait().map_or(true, |s| s.is_some())).await;
        if let Err(err) = started {
            anyhow::bail!("{err}; log:\n{}", dev.log_text());
        }
        Ok(dev)
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM, and expect a clean exit within 30 s.
    async fn terminate(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(
                    status.success(),
                    "journeys dev exited with {status} after SIGTERM; log:\n{}",
                    self.log_text()
                );
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "journeys dev did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Two ports that were free a moment ago (bound together, read, released).
fn free_ports() -> anyhow::Result<[SocketAddr; 2]> {
    let first = std::net::TcpListener::bind("127.0.0.1:0")?;
    let second = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok([first.local_addr()?, second.local_addr()?])
}

/// Streams events (`n` = 0, 1, …, one profile each) on `stream` until told to stop, while
/// recording every ACCEPTED message id; returns the accepted ids and how many were sent.
async fn stream_until_killed(
    stream: IngestStream,
    kill_now: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<(BTreeSet<String>, usize)> {
    let mut stream = stream;
    let started = Instant::now();
    let mut accepted = BTreeSet::new();
    let mut sent = 0usize;
    let mut kill_now = Some(kill_now);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for _ in 0..EVENTS_PER_TICK {
                    let event = track(
                        &format!("user-{sent}"),
                        "tick",
                        &format!("crash-{sent}"),
                        &json!({"n": sent}),
                    );
                    if stream.send(event).await.is_err() {
                        return Ok((accepted, sent));
                    }
                    sent += 1;
                }
            }
            acks = stream.next_acks() => match acks {
                Ok(Some(acks)) => {
                    for ack in acks {
                        anyhow::ensure!(
                            ack.status == pb::AckStatus::Accepted as i32,
                            "unexpected ack {ack:?}"
                        );
                        accepted.insert(ack.message_id);
                    }
                }
                // The process died: the stream ends with an error or just ends.
                Ok(None) | Err(_) => return Ok((accepted, sent)),
            },
        }
        if accepted.len() >= MIN_ACKED
            && started.elapsed() >= STREAM_FOR
            && let Some(kill) = kill_now.take()
        {
            let _ = kill.send(());
        }
    }
}

#[tokio::test]
async fn acknowledged_events_survive_a_sigkill_mid_stream() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let dev = Dev::start(&url, "first").await?;
        let mut c = StackClients::connect(dev.grpc, None).await?;
        let key = c.create_source("crash").await?;
        c.webhook("hook", &sink.url(), None).await?;
        c.register_events(&["tick"]).await?;
        c.publish(&json!({"journey": {
            "id": "ticks",
            "name": "Forward ticks after a moment",
            "entry": {"event": "tick"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "n",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait", "delay": {"duration": format!("{DELAY_SECS}s"), "next": "forward"}},
                {"key": "forward", "name": "Forward", "send": {
                    "destination_id": "hook",
                    "mapping": {
                        "message_id": {"@path": "$.messageId"},
                        "n": {"@path": "$.properties.journey_context.tick.n"}
                    }
                }}
            ]
        }}))
        .await?;

        // Stream; once enough is acknowledged, SIGKILL while the client keeps sending.
        let stream = IngestStream::open(&mut c.ingest, &key).await?;
        let (kill_now, killed) = tokio::sync::oneshot::channel();
        let streaming = tokio::spawn(stream_until_killed(stream, kill_now));
        tokio::time::timeout(Duration::from_secs(60), killed)
            .await
            .map_err(|_| anyhow::anyhow!("too few acknowledgements to start the crash"))??;
        dev.kill()?;
        let (accepted, sent) = streaming.await??;
        assert!(
            accepted.len() < sent,
            "the kill came mid-stream: {} of {sent} acknowledged",
            accepted.len()
        );

        // Restart on the same database.
        let dev = Dev::start(&url, "second").await?;
        let mut c = StackClients::connect(dev.grpc, None).await?;
        let instances = c.instances_of("ticks", "").await?;
        let entered: BTreeMap<String, String> = instances
            .iter()
            .map(|i| (i.unique_value.clone(), i.id.clone()))
            .collect();
        assert_eq!(entered.len(), instances.len(), "one instance per event");
        let missing: Vec<&String> = accepted
            .iter()
            .filter(|id| {
                let n = id.trim_start_matches("crash-");
                !entered.contains_key(n)
            })
            .collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged events lost their instance, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );

        // Every instance (so every acknowledged event) gets its webhook, at least once.
        let expected: BTreeSet<String> = entered.keys().cloned().collect();
        let received = eventually(
            "a webhook for every instance",
            DELIVERY_TIMEOUT,
            || {
                let sink = &sink;
                let expected = &expected;
                async move {
                    let received = sink.requests();
                    let delivered: BTreeSet<String> =
                        received.iter().map(|r| r.body["n"].to_string()).collect();
                    Ok::<_, anyhow::Error>(expected.is_subset(&delivered).then_some(received))
                }
            },
        )
        .await;
        let mut ids_by_n: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for request in &received {
            let message_id = request.str_field("message_id");
            assert_eq!(request.idempotency_key(), message_id);
            ids_by_n
                .entry(request.body["n"].to_string())
                .or_default()
                .insert(message_id.to_owned());
        }
        let delivered: BTreeSet<String> = ids_by_n.keys().cloned().collect();
        assert_eq!(delivered, expected, "webhooks only for instances that exist");
        assert!(
            ids_by_n.values().all(|ids| ids.len() == 1),
            "repeats carry the same messageId"
        );
        let completed = eventually("every instance completed", Duration::from_secs(20), || {
            let mut c = c.clone();
            async move {
                let all = c.instances_of("ticks", "").await?;
                Ok::<_, anyhow::Error>(all
                    .iter()
                    .all(|i| i.state == pb::InstanceState::Completed as i32)
                    .then_some(all.len()))
            }
        })
        .await;
        assert_eq!(completed, expected.len());
        let timers = c
            .scheduler
            .get_scheduler_stats(pb::GetSchedulerStatsRequest {})
            .await?
            .into_inner();
        assert_eq!(timers.pending_timers, 0, "every delay fired: {timers:?}");
        eprintln!(
            "crash test: {sent} sent, {} acknowledged, {} entered, {} webhooks",
            accepted.len(),
            expected.len(),
            received.len()
        );
        dev.terminate().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
