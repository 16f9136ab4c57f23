//! The partition log against a real NATS JetStream server, when `JOURNEYS_TEST_NATS_URL`
//! names one (`nats://127.0.0.1:4222`); each test uses a stream of its own and deletes it.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use journeys_log::{Entry, LogConfig, LogError, PartitionLog, Reader, Record};

/// Environment variable naming a NATS server with JetStream for tests.
const NATS_URL_ENV: &str = "JOURNEYS_TEST_NATS_URL";

/// Bound on every single wait: a local server answers in milliseconds.
const BOUND: Duration = Duration::from_secs(10);

fn nats_url() -> Option<String> {
    let url = std::env::var(NATS_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        eprintln!("{NATS_URL_ENV} unset: NATS test skipped");
    }
    url
}

/// A stream name no other test (or test process) uses.
fn unique_stream() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(16);
    format!("jtest_{hex}")
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {BOUND:?}"))
}

/// Deletes the stream `name` when dropped, so that a failing test leaves nothing behind (a
/// passing one deletes it itself, through the API under test).
struct Cleanup {
    url: String,
    name: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Inside the test's runtime nothing may block on a future: a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(&url).await {
                    let jetstream = async_nats::jetstream::new(client);
                    let _ = tokio::time::timeout(BOUND, jetstream.delete_stream(&name)).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A log on a fresh stream, or `None` when no server is configured.
async fn fresh_log(partitions: u32) -> Option<(PartitionLog, Cleanup)> {
    let url = nats_url()?;
    let name = unique_stream();
    let cleanup = Cleanup {
        url: url.clone(),
        name: name.clone(),
    };
    let log = bounded("connect", PartitionLog::connect(&url, &name, partitions))
        .await
        .unwrap();
    Some((log, cleanup))
}

async fn publish(log: &PartitionLog, partition: u32, msg_id: &str) -> u64 {
    let published = bounded(
        "publish",
        log.publish(partition, msg_id, Bytes::from(format!("body of {msg_id}"))),
    )
    .await
    .unwrap();
    assert!(!published.duplicate, "{msg_id}");
    published.seq
}

/// The next `n` entries of `reader`.
async fn take(reader: &mut Reader, n: usize) -> Vec<Entry> {
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let entry = bounded("the next entry", reader.next())
            .await
            .expect("the reader ended")
            .unwrap();
        entries.push(entry);
    }
    entries
}

/// Nothing more arrives on `reader` for a moment.
async fn assert_quiet(reader: &mut Reader) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), reader.next()).await {
        panic!("unexpected entry: {item:?}");
    }
}

fn ids(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.msg_id.as_str()).collect()
}

#[tokio::test]
async fn partitions_keep_their_own_order_and_entries() {
    let Some((log, _cleanup)) = fresh_log(4).await else {
        return;
    };
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push((publish(&log, 1, &format!("a{i}")).await, 1));
        seqs.push((publish(&log, 2, &format!("b{i}")).await, 2));
    }
    // Stream sequences increase across partitions.
    assert!(seqs.windows(2).all(|w| w[0].0 < w[1].0), "{seqs:?}");

    let mut one = bounded("read", log.read(1, 0)).await.unwrap();
    let entries = take(&mut one, 5).await;
    assert_eq!(ids(&entries), ["a0", "a1", "a2", "a3", "a4"]);
    let expected: Vec<u64> = seqs.iter().filter(|s| s.1 == 1).map(|s| s.0).collect();
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), expected);
    assert_eq!(entries[3].payload, Bytes::from("body of a3"));
    assert_quiet(&mut one).await;

    let mut two = bounded("read", log.read(2, 1)).await.unwrap();
    assert_eq!(
        ids(&take(&mut two, 5).await),
        ["b0", "b1", "b2", "b3", "b4"]
    );
    // A partition nobody wrote to reads nothing; an entry published later arrives.
    let mut three = bounded("read", log.read(3, 1)).await.unwrap();
    assert_quiet(&mut three).await;
    let late = publish(&log, 3, "c0").await;
    let entries = take(&mut three, 1).await;
    assert_eq!((entries[0].seq, entries[0].msg_id.as_str()), (late, "c0"));

    drop((one, two, three));
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn a_message_id_is_stored_once_and_its_duplicate_says_so() {
    let Some((log, _cleanup)) = fresh_log(2).await else {
        return;
    };
    let first = publish(&log, 0, "web:m1").await;
    let again = bounded("publish", log.publish(0, "web:m1", Bytes::from("resent")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, first);
    // The same id in a batch is a duplicate too; a new id is not.
    let batch = vec![
        Record {
            partition: 0,
            msg_id: "web:m1".to_owned(),
            payload: Bytes::from("resent again"),
        },
        Record {
            partition: 0,
            msg_id: "web:m2".to_owned(),
            payload: Bytes::from("second"),
        },
    ];
    let acks = bounded("batch", log.publish_batch(&batch)).await.unwrap();
    assert_eq!((acks[0].seq, acks[0].duplicate), (first, true));
    assert!(!acks[1].duplicate);

    let mut reader = bounded("read", log.read(0, 1)).await.unwrap();
    let entries = take(&mut reader, 2).await;
    assert_eq!(ids(&entries), ["web:m1", "web:m2"]);
    assert_eq!(entries[0].payload, Bytes::from("body of web:m1"));
    assert_quiet(&mut reader).await;

    drop(reader);
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn a_batch_is_pipelined_and_acknowledged_in_order() {
    let Some((log, _cleanup)) = fresh_log(8).await else {
        return;
    };
    let records: Vec<Record> = (0..500)
        .map(|i| Record {
            partition: i % 8,
            msg_id: format!("batch:{i}"),
            payload: Bytes::from(format!("event {i}")),
        })
        .collect();
    let acks = bounded("batch", log.publish_batch(&records)).await.unwrap();
    assert_eq!(acks.len(), 500);
    assert!(acks.iter().all(|a| !a.duplicate));
    // One stream, so the acknowledged sequences are 1..=500 in the records' order.
    assert_eq!(
        acks.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (1..=500).collect::<Vec<u64>>()
    );
    let mut reader = bounded("read", log.read(5, 1)).await.unwrap();
    let entries = take(&mut reader, 500 / 8).await;
    let expected: Vec<String> = (0..500)
        .filter(|i| i % 8 == 5)
        .map(|i| format!("batch:{i}"))
        .collect();
    assert_eq!(ids(&entries), expected);
    assert_quiet(&mut reader).await;

    // A record out of range fails the whole batch before anything is sent.
    let bad = vec![
        Record {
            partition: 0,
            msg_id: "fine".to_owned(),
            payload: Bytes::new(),
        },
        Record {
            partition: 8,
            msg_id: "out of range".to_owned(),
            payload: Bytes::new(),
        },
    ];
    let err = log.publish_batch(&bad).await.unwrap_err();
    assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("partition: 8"), "{err}");
    assert_eq!(bounded("tail", log.tail(0)).await.unwrap(), 497);

    drop(reader);
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn reading_from_a_middle_sequence_starts_there() {
    let Some((log, _cleanup)) = fresh_log(2).await else {
        return;
    };
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(publish(&log, 1, &format!("e{i}")).await);
        publish(&log, 0, &format!("other{i}")).await;
    }
    let mut reader = bounded("read", log.read(1, seqs[3])).await.unwrap();
    let entries = take(&mut reader, 3).await;
    assert_eq!(ids(&entries), ["e3", "e4", "e5"]);
    assert_eq!(entries[0].seq, seqs[3]);
    assert_quiet(&mut reader).await;
    // A start between two of the partition's entries begins at the next one.
    let mut between = bounded("read", log.read(1, seqs[3] + 1)).await.unwrap();
    assert_eq!(ids(&take(&mut between, 2).await), ["e4", "e5"]);
    // A start past the tail waits for what comes.
    let mut ahead = bounded("read", log.read(1, seqs[5] + 1)).await.unwrap();
    assert_quiet(&mut ahead).await;
    publish(&log, 1, "e6").await;
    assert_eq!(ids(&take(&mut ahead, 1).await), ["e6"]);

    drop((reader, between, ahead));
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn trim_removes_only_the_partitions_committed_entries() {
    let Some((log, _cleanup)) = fresh_log(2).await else {
        return;
    };
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(publish(&log, 0, &format!("t{i}")).await);
        publish(&log, 1, &format!("keep{i}")).await;
    }
    // The owner committed up to t2: trim below t3.
    let purged = bounded("trim", log.trim(0, seqs[3])).await.unwrap();
    assert_eq!(purged, 3);
    let mut reader = bounded("read", log.read(0, 0)).await.unwrap();
    assert_eq!(ids(&take(&mut reader, 2).await), ["t3", "t4"]);
    assert_quiet(&mut reader).await;
    // The other partition is untouched, and trimming again removes nothing more.
    let mut other = bounded("read", log.read(1, 0)).await.unwrap();
    assert_eq!(take(&mut other, 5).await.len(), 5);
    assert_eq!(bounded("trim", log.trim(0, seqs[3])).await.unwrap(), 0);
    // A bound of 0 or 1 removes nothing (to JetStream, 0 would mean everything).
    assert_eq!(bounded("trim", log.trim(1, 0)).await.unwrap(), 0);
    assert_eq!(bounded("trim", log.trim(1, 1)).await.unwrap(), 0);
    assert_eq!(
        take(&mut bounded("read", log.read(1, 0)).await.unwrap(), 5)
            .await
            .len(),
        5
    );

    drop((reader, other));
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn tail_is_the_partitions_last_sequence() {
    let Some((log, _cleanup)) = fresh_log(3).await else {
        return;
    };
    assert_eq!(bounded("tail", log.tail(0)).await.unwrap(), 0);
    publish(&log, 0, "x0").await;
    let last = publish(&log, 0, "x1").await;
    let other = publish(&log, 1, "y0").await;
    assert_eq!(bounded("tail", log.tail(0)).await.unwrap(), last);
    assert_eq!(bounded("tail", log.tail(1)).await.unwrap(), other);
    assert_eq!(bounded("tail", log.tail(2)).await.unwrap(), 0);
    // Trimmed to empty: nothing is pending, so the lag against any `last_seq` is 0.
    bounded("trim", log.trim(0, last + 1)).await.unwrap();
    assert_eq!(bounded("tail", log.tail(0)).await.unwrap(), 0);

    let err = log.tail(3).await.unwrap_err();
    assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}");
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn connecting_again_reuses_the_stream_and_its_entries() {
    let Some(url) = nats_url() else {
        return;
    };
    let stream = unique_stream();
    let _cleanup = Cleanup {
        url: url.clone(),
        name: stream.clone(),
    };
    // Processes starting together on a new stream all come up, sharing it.
    let (first, second, third) = bounded(
        "connect",
        futures::future::join3(
            PartitionLog::connect(&url, &stream, 4),
            PartitionLog::connect(&url, &stream, 4),
            PartitionLog::connect(&url, &stream, 4),
        ),
    )
    .await;
    let (first, second, third) = (first.unwrap(), second.unwrap(), third.unwrap());
    let seq = publish(&first, 2, "kept").await;
    assert_eq!(bounded("tail", second.tail(2)).await.unwrap(), seq);
    let again = bounded("publish", third.publish(2, "kept", Bytes::new()))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.seq, seq);
    // A process connecting later finds the entries.
    let later = bounded("connect", PartitionLog::connect(&url, &stream, 4))
        .await
        .unwrap();
    let mut reader = bounded("read", later.read(2, 1)).await.unwrap();
    assert_eq!(ids(&take(&mut reader, 1).await), ["kept"]);
    drop(reader);

    bounded("delete", first.delete_stream()).await.unwrap();
    // Deleting a stream that is gone is fine.
    bounded("delete", second.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn past_the_configured_duplicate_window_an_id_is_new_again() {
    let Some(url) = nats_url() else {
        return;
    };
    let stream = unique_stream();
    let _cleanup = Cleanup {
        url: url.clone(),
        name: stream.clone(),
    };
    let config = LogConfig {
        duplicate_window: Duration::from_secs(1),
        ..LogConfig::new(stream, 2)
    };
    let log = bounded("connect", PartitionLog::connect_with(&url, config))
        .await
        .unwrap();
    let first = publish(&log, 0, "again").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = publish(&log, 0, "again").await;
    assert!(second > first);
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn a_stream_made_for_other_subjects_is_refused() {
    let Some(url) = nats_url() else {
        return;
    };
    let stream = unique_stream();
    let _cleanup = Cleanup {
        url: url.clone(),
        name: stream.clone(),
    };
    // A stream of that name made by something else, with other subjects.
    let client = async_nats::connect(&url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    bounded(
        "create",
        jetstream.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{stream}.other.>")],
            ..Default::default()
        }),
    )
    .await
    .unwrap();

    let err = bounded("connect", PartitionLog::connect(&url, &stream, 4))
        .await
        .unwrap_err();
    match &err {
        LogError::StreamMismatch {
            stream: name,
            expected,
            found,
        } => {
            assert_eq!(name, &stream);
            assert_eq!(expected, &format!("{stream}.ev.*"));
            assert_eq!(found, &[format!("{stream}.other.>")]);
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(!err.is_retryable());
    bounded("delete", jetstream.delete_stream(&stream))
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_arguments_are_refused_before_anything_is_sent() {
    let Some(url) = nats_url() else {
        return;
    };
    for (stream, partitions, field) in [
        ("", 4, "stream"),
        ("has.dot", 4, "stream"),
        ("has space", 4, "stream"),
        ("wild*", 4, "stream"),
        ("fine", 0, "partitions"),
    ] {
        let err = PartitionLog::connect(&url, stream, partitions)
            .await
            .unwrap_err();
        assert!(matches!(err, LogError::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains(field), "{err}");
    }

    let (log, _cleanup) = fresh_log(2).await.unwrap();
    for msg_id in ["", "  ", "a\r\nInjected: header"] {
        let err = log.publish(0, msg_id, Bytes::new()).await.unwrap_err();
        assert!(
            matches!(&err, LogError::InvalidArgument(m) if m.contains("msg_id")),
            "{err:?}"
        );
    }
    let err = log.publish(2, "m", Bytes::new()).await.unwrap_err();
    assert!(err.to_string().contains("partition: 2"), "{err}");
    assert!(log.read(2, 1).await.is_err());
    assert!(log.trim(2, 5).await.is_err());
    assert_eq!(bounded("tail", log.tail(0)).await.unwrap(), 0);
    bounded("delete", log.delete_stream()).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let config = LogConfig {
        request_timeout: Duration::from_secs(2),
        ..LogConfig::new("journeys", 4)
    };
    let err = bounded(
        "connect",
        PartitionLog::connect_with("nats://127.0.0.1:1", config),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, LogError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_dropped_reader_removes_its_consumer() {
    let Some(url) = nats_url() else {
        return;
    };
    let stream = unique_stream();
    let _cleanup = Cleanup {
        url: url.clone(),
        name: stream.clone(),
    };
    let log = bounded("connect", PartitionLog::connect(&url, &stream, 2))
        .await
        .unwrap();
    publish(&log, 0, "r0").await;
    let mut reader = bounded("read", log.read(0, 1)).await.unwrap();
    take(&mut reader, 1).await;

    let client = async_nats::connect(&url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let mut info = jetstream.get_stream(&stream).await.unwrap();
    assert_eq!(info.info().await.unwrap().state.consumer_count, 1);
    drop(reader);
    // Well before the server's 30 s inactivity threshold.
    bounded("consumer removal", async {
        while info.info().await.unwrap().state.consumer_count > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    bounded("delete", log.delete_stream()).await.unwrap();
}

/// A `nats-server -js` of this test's own, on a free port with a store directory of its own,
/// that can be stopped and started again (the shared server must not be).
struct PrivateServer {
    binary: std::path::PathBuf,
    port: u16,
    store: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateServer {
    /// `None` when no `nats-server` binary is installed.
    fn start() -> Option<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = std::env::temp_dir().join(unique_stream());
        let mut server = Self {
            binary,
            port,
            store,
            child: None,
        };
        server.resume();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn resume(&mut self) {
        let child = std::process::Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Publishes until NATS accepts, within [`BOUND`]s.
async fn publish_when_back(log: &PartitionLog, msg_id: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + BOUND * 3;
    loop {
        match log.publish(0, msg_id, Bytes::new()).await {
            Ok(published) => return published.seq,
            Err(err) if err.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("{msg_id} never published: {err:?}"),
        }
    }
}

#[tokio::test]
async fn an_outage_is_unavailable_and_reading_resumes_after_it() {
    if nats_url().is_none() {
        return;
    }
    let Some(mut server) = PrivateServer::start() else {
        eprintln!("no nats-server binary: outage test skipped");
        return;
    };
    let config = LogConfig {
        request_timeout: Duration::from_secs(1),
        ..LogConfig::new("outage", 2)
    };
    // The server takes a moment to listen.
    let log = bounded("connect", async {
        loop {
            match PartitionLog::connect_with(&server.url(), config.clone()).await {
                Ok(log) => break log,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    let before = publish_when_back(&log, "before").await;
    let mut reader = bounded("read", log.read(0, 1)).await.unwrap();
    assert_eq!(take(&mut reader, 1).await[0].seq, before);

    server.stop();
    let err = bounded("publish", log.publish(0, "during", Bytes::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::Unavailable(_)), "{err:?}");
    let err = bounded("tail", log.tail(0)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");

    server.resume();
    let after = publish_when_back(&log, "after").await;
    assert!(after > before);
    // The reader recovers by itself and goes on after what it yielded: never `before` again.
    // The publish that timed out may have been stored after all (sent on reconnect).
    let resumed = tokio::time::timeout(BOUND * 4, async {
        let mut seen = Vec::new();
        while let Some(item) = reader.next().await {
            match item {
                Ok(entry) => {
                    let last = entry.msg_id == "after";
                    seen.push(entry);
                    if last {
                        break;
                    }
                }
                Err(err) => assert!(err.is_retryable(), "{err:?}"),
            }
        }
        seen
    })
    .await
    .expect("the reader did not resume");
    assert!(
        resumed
            .iter()
            .all(|e| e.seq > before && e.msg_id != "before"),
        "{resumed:?}"
    );
    assert!(
        resumed.windows(2).all(|w| w[0].seq < w[1].seq),
        "{resumed:?}"
    );
    assert!(
        ids(&resumed)
            .iter()
            .all(|id| *id == "during" || *id == "after"),
        "{resumed:?}"
    );
    drop(reader);
    bounded("delete", log.delete_stream()).await.unwrap();
}
