//! End-to-end delivery: a real dispatcher over a real store (SQLite, and MySQL when
//! `JOURNEYS_TEST_MYSQL_URL` is set) sending to a real HTTP sink on `127.0.0.1:0`.

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

mod support;

use std::time::Duration;

use chrono::Utc;
use hmac::{KeyInit, Mac};
use serde_json::json;
use tokio::time::Instant;

use journeys_delivery::{AddressPolicy, DeliveryConfig, DeliveryError, Dispatcher};
use journeys_store::OutboxStatus;
use journeys_testkit::{Reply, Sink, each_backend};
use sea_orm::{ConnectionTrait, Database, TransactionTrait};

use support::{destination, enqueue, fast_config, outbox_row, spawn, wait_row};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_the_same_idempotency_key() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        sink.script(vec![
            Reply::status(500),
            Reply::status(500).body("still down"),
        ]);
        let dest = destination(
            db,
            &sink.url_at("/hooks"),
            json!({"headers": {"X-Api-Key": "k-1"}}),
        )
        .await;
        let row = outbox_row(&dest);
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let received = sink.wait_for(3, PATIENCE).await;
        let stored = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        assert!(stored.sent_at.is_some());
        assert_eq!(received.len(), 3, "{} on {}", received.len(), db.backend());
        for request in &received {
            assert_eq!(request.method, "POST");
            assert_eq!(request.path, "/hooks/track");
            assert_eq!(
                request.header("idempotency-key"),
                Some(row.message_id.as_str())
            );
            assert_eq!(request.body["messageId"], row.message_id.as_str());
            assert_eq!(request.body, row.payload);
            assert_eq!(request.header("content-type"), Some("application/json"));
            assert_eq!(request.header("x-api-key"), Some("k-1"));
            let agent = request.header("user-agent").unwrap_or_default();
            assert!(agent.starts_with("journeys/"), "{agent}");
        }
        // Nothing more once it is sent.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.requests().len(), 3);

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_dead_letter_at_once_and_replay_delivers() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(400).body("{\"error\":\"bad field\"}")]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let row = outbox_row(&dest);
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let dead = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Dead).await;
        assert_eq!(dead.attempts, 1);
        assert!(dead.dead_at.is_some());
        let error = dead.last_error.unwrap_or_default();
        assert!(
            error.contains("400") && error.contains("bad field"),
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.requests().len(), 1, "a 400 is final");
        let listed = db
            .outbox()
            .list_dead(Some(&dest), None, 10, None)
            .await
            .unwrap();
        assert_eq!(
            listed.items.iter().map(|r| &r.id).collect::<Vec<_>>(),
            [&row.id]
        );

        // The destination is fixed; replay delivers once, with the original message id.
        assert_eq!(
            db.outbox()
                .replay(std::slice::from_ref(&row.id), Utc::now())
                .await
                .unwrap(),
            1
        );
        waker.wake();
        let received = sink.wait_for(2, PATIENCE).await;
        wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(sink.requests().len(), 2);
        assert_eq!(
            received[1].header("idempotency-key"),
            Some(row.message_id.as_str())
        );
        assert_eq!(received[1].body["messageId"], row.message_id.as_str());

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_waits_for_retry_after() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(429).header("retry-after", "1")]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let row = outbox_row(&dest);
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let received = sink.wait_for(2, PATIENCE).await;
        let waited = received[1].at - received[0].at;
        assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
        let stored = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        assert!(stored.sent_at.is_some());

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_signed_and_carry_the_trace() {
    const SECRET: &str = "whsec_test_123";
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    each_backend(async |db| {
        let sink = Sink::start().await;
        let dest = destination(
            db,
            &sink.url_at("/hooks"),
            json!({"signing_secret": SECRET}),
        )
        .await;
        let mut row = outbox_row(&dest);
        row.traceparent = Some(TRACEPARENT.to_owned());
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let received = sink.wait_for(1, PATIENCE).await;
        let request = &received[0];
        assert_eq!(request.header("traceparent"), Some(TRACEPARENT));
        let signature = request.header("journeys-signature").expect("signed");
        let (t, v1) = parse_signature(signature);
        assert!((Utc::now().timestamp() - t).abs() < 60, "timestamp {t}");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&request.raw);
        assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
        // A different body does not verify.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.{{}}").as_bytes());
        assert_ne!(v1, hex::encode(mac.finalize().into_bytes()));

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_without_a_secret() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        let dest = destination(db, &sink.url_at("/hooks"), json!({"signing_secret": ""})).await;
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let outcome = dispatcher
            .deliver_once(&dest, "POST", "/t", &json!({"a": 1}), "m-1")
            .await
            .unwrap();
        assert_eq!(outcome.status, 200);
        let received = sink.wait_for(1, PATIENCE).await;
        assert_eq!(received[0].header("journeys-signature"), None);
        assert_eq!(received[0].header("traceparent"), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_send_and_mark_repeats_once_with_the_same_key() {
    each_backend(async |db| {
        // The first request hangs: the dispatcher that sent it "crashes" before any answer.
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(200).delay(Duration::from_secs(30))]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let row = outbox_row(&dest);
        let config = DeliveryConfig {
            lease: Duration::from_millis(800),
            max_idle_wait: Duration::from_millis(100),
            ..fast_config()
        };
        enqueue(db, vec![row.clone()]).await;

        let crashing = Dispatcher::new(db.store().clone(), config.clone());
        let (_stop, crashed) = spawn(crashing);
        sink.wait_for(1, PATIENCE).await;
        crashed.abort();
        assert!(crashed.await.unwrap_err().is_cancelled());

        // A new process takes over once the lease has expired.
        let restarted = Dispatcher::new(db.store().clone(), config);
        let (stop, task) = spawn(restarted);
        let received = sink.wait_for(2, PATIENCE).await;
        wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        // Claimed shortly before the first request arrived, so the lease ends a little less
        // than 800 ms after it; nobody may take the row before.
        let gap = received[1].at - received[0].at;
        assert!(gap >= Duration::from_millis(600), "repeated after {gap:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let received = sink.requests();
        assert_eq!(received.len(), 2, "exactly one repeat");
        for request in &received {
            assert_eq!(
                request.header("idempotency-key"),
                Some(row.message_id.as_str())
            );
            assert_eq!(request.body["messageId"], row.message_id.as_str());
        }

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_dispatchers_claims_go_to_another_within_seconds_not_after_the_lease() {
    each_backend(async |db| {
        let b = db.backend();
        // The first dispatcher's requests hang: it is killed with its rows claimed.
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(200).delay(Duration::from_secs(60)); 3]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let rows: Vec<_> = (0..3).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        // Claims of two minutes, as in production; claimant leases of a second.
        let config = |node: &str| DeliveryConfig {
            node_id: node.to_owned(),
            claimant_ttl: Duration::from_secs(1),
            max_idle_wait: Duration::from_millis(100),
            ..fast_config()
        };
        assert_eq!(config("a").lease, Duration::from_secs(120));
        let (_stop_a, a) = spawn(Dispatcher::new(db.store().clone(), config("a")));
        sink.wait_for(3, PATIENCE).await;

        // While a lives, b leaves its claims alone, well past a's claimant lease.
        let (stop_b, task_b) = spawn(Dispatcher::new(db.store().clone(), config("b")));
        tokio::time::sleep(Duration::from_millis(2_000)).await;
        assert_eq!(
            sink.count(),
            3,
            "{b}: a live dispatcher's rows are not taken"
        );

        // a is killed: b delivers its rows once a's claimant lease has run out.
        a.abort();
        assert!(a.await.unwrap_err().is_cancelled());
        let killed = Instant::now();
        let received = sink.wait_for(6, PATIENCE).await;
        let took = killed.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{b}: delivered {took:?} after the kill"
        );
        for row in &rows {
            wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
            let keys = received
                .iter()
                .filter(|r| r.header("idempotency-key") == Some(row.message_id.as_str()))
                .count();
            assert_eq!(keys, 2, "{b}: sent once by each, with the same key");
        }
        drop(stop_b);
        task_b.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_frees_the_sends_it_cut_off_for_others_at_once() {
    each_backend(async |db| {
        let b = db.backend();
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(200).delay(Duration::from_secs(60)); 2]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let rows: Vec<_> = (0..2).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        // Claimant leases of a minute: only the hand-over at shutdown can free the rows soon.
        let config = |node: &str| DeliveryConfig {
            node_id: node.to_owned(),
            claimant_ttl: Duration::from_secs(60),
            shutdown_grace: Duration::from_millis(200),
            max_idle_wait: Duration::from_millis(100),
            ..fast_config()
        };
        let (stop_a, a) = spawn(Dispatcher::new(db.store().clone(), config("a")));
        sink.wait_for(2, PATIENCE).await;
        let (stop_b, task_b) = spawn(Dispatcher::new(db.store().clone(), config("b")));

        drop(stop_a);
        a.await.unwrap();
        let stopped = Instant::now();
        sink.wait_for(4, PATIENCE).await;
        let took = stopped.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{b}: delivered {took:?} after the stop"
        );
        for row in &rows {
            wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        }
        drop(stop_b);
        task_b.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_records_every_outcome_and_nothing_is_sent_again() {
    each_backend(async |db| {
        let b = db.backend();
        let sink = Sink::start().await;
        // One answer is slow: its delivery is still in flight when the shutdown starts.
        sink.script(vec![Reply::status(200).delay(Duration::from_millis(500))]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        // Outcomes wait a minute for company, so only the shutdown can record them; a short
        // lease, so that an unrecorded row would be sent again soon after.
        let config = DeliveryConfig {
            mark_delay: Duration::from_secs(60),
            lease: Duration::from_millis(700),
            max_idle_wait: Duration::from_millis(100),
            ..fast_config()
        };
        let rows: Vec<_> = (0..5).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let process = run_as_a_process(db.url().to_owned(), config.clone(), stopped);
        sink.wait_for(5, PATIENCE).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        for row in &rows {
            let stored = db.outbox().get(&row.id).await.unwrap();
            assert_eq!(
                stored.status,
                OutboxStatus::Pending,
                "{b}: not recorded yet"
            );
        }

        drop(stop);
        tokio::task::spawn_blocking(move || process.join())
            .await
            .unwrap()
            .unwrap();
        for row in &rows {
            let stored = db.outbox().get(&row.id).await.unwrap();
            assert_eq!(
                stored.status,
                OutboxStatus::Sent,
                "{b}: recorded at shutdown"
            );
            assert!(stored.sent_at.is_some(), "{b}");
        }

        // A restart long after the lease would have run out sends nothing again.
        let (stop, task) = spawn(Dispatcher::new(db.store().clone(), config));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(sink.count(), 5, "{b}: delivered rows are not sent again");
        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_outcomes_is_recorded_without_waiting() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(503).body("down"); 4]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let config = DeliveryConfig {
            mark_batch: 4,
            mark_delay: Duration::from_secs(60),
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), config);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        // Four first attempts fail (a batch of retries), their retries succeed (a batch of
        // sends): both batches are full, so neither waits for the minute.
        let rows: Vec<_> = (0..4).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        waker.wake();
        sink.wait_for(8, PATIENCE).await;
        for row in &rows {
            let sent = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
            assert_eq!(sent.attempts, 1, "one failed attempt recorded");
            assert_eq!(sent.last_error.as_deref(), Some("HTTP 503: down"));
        }
        assert_eq!(sink.settle(Duration::from_millis(200)).await.len(), 8);

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_delivers_without_waiting_for_a_poll() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        // A poll so slow that only the wake can explain a quick delivery.
        let config = DeliveryConfig {
            max_idle_wait: Duration::from_secs(60),
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), config);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        // Let it find nothing and fall asleep.
        tokio::time::sleep(Duration::from_millis(300)).await;

        for _ in 0..3 {
            let before = sink.requests().len();
            let row = outbox_row(&dest);
            enqueue(db, vec![row]).await;
            let woken = Instant::now();
            waker.wake();
            let received = sink.wait_for(before + 1, PATIENCE).await;
            let latency = received[before].at - woken;
            assert!(
                latency < Duration::from_millis(500),
                "delivered {latency:?} after the wake on {}",
                db.backend()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

/// A due row that another transaction held locked while the claim looked (a batch of marks
/// scanning past it, a purge) is sent as soon as that lock goes, not at the next idle poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_while_the_claim_looked_is_sent_when_the_lock_goes_not_at_the_poll() {
    each_backend(async |db| {
        if !db.url().starts_with("mysql") {
            // SQLite has one writer: a claim never passes over a locked row.
            return;
        }
        let sink = Sink::start().await;
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let config = DeliveryConfig {
            max_idle_wait: Duration::from_secs(60),
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), config);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let row = outbox_row(&dest);
        enqueue(db, vec![row.clone()]).await;
        let other = Database::connect(db.url()).await.unwrap();
        let open = other.begin().await.unwrap();
        open.execute_unprepared(&format!(
            "SELECT id FROM outbox WHERE id = '{}' FOR UPDATE",
            row.id
        ))
        .await
        .unwrap();
        waker.wake();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            sink.requests().is_empty(),
            "sent while another held its row"
        );

        let released = Instant::now();
        open.rollback().await.unwrap();
        let received = sink.wait_for(1, PATIENCE).await;
        let latency = received[0].at - released;
        assert!(
            latency < Duration::from_secs(5),
            "sent {latency:?} after the lock went"
        );
        wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;

        other.close().await.unwrap();
        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_committed_without_a_wake_are_found_by_the_idle_poll() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let config = DeliveryConfig {
            max_idle_wait: Duration::from_millis(200),
            ..fast_config()
        };
        let (stop, task) = spawn(Dispatcher::new(db.store().clone(), config));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rows: Vec<_> = (0..20).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        let received = sink.wait_for(20, PATIENCE).await;
        let mut keys: Vec<_> = received
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect();
        keys.sort();
        let mut expected: Vec<_> = rows.iter().map(|r| r.message_id.clone()).collect();
        expected.sort();
        assert_eq!(keys, expected);
        for row in &rows {
            wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        }

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_run_in_parallel_up_to_the_bound() {
    each_backend(async |db| {
        let slow = Reply::status(200).delay(Duration::from_millis(300));
        let sink = Sink::start().await;
        sink.script(vec![slow; 12]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let config = DeliveryConfig {
            max_in_flight: 4,
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), config);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        let rows: Vec<_> = (0..12).map(|_| outbox_row(&dest)).collect();
        enqueue(db, rows.clone()).await;
        waker.wake();

        sink.wait_for(12, PATIENCE).await;
        for row in &rows {
            wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        }
        let peak = sink.peak_concurrency();
        assert!(
            peak > 1,
            "rows of one destination go in parallel (peak {peak})"
        );
        assert!(peak <= 4, "at most 4 in flight (peak {peak})");

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_holds_only_its_share_and_others_keep_flowing() {
    each_backend(async |db| {
        let hanging = Sink::start().await;
        hanging.answer_by_default(Reply::status(200).delay(Duration::from_secs(30)));
        let healthy = Sink::start().await;
        let stuck = destination(db, &hanging.url_at("/hooks"), json!({"timeout_ms": 30_000})).await;
        let fine = destination(db, &healthy.url_at("/hooks"), json!({})).await;
        let config = DeliveryConfig {
            max_in_flight: 8,
            max_in_flight_per_destination: 2,
            claim_batch: 8,
            shutdown_grace: Duration::from_millis(100),
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), config);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        // The hanging destination's rows come due first, more of them than every slot.
        let mut rows: Vec<_> = (0..20).map(|_| outbox_row(&stuck)).collect();
        let early = Utc::now() - chrono::TimeDelta::seconds(5);
        for row in &mut rows {
            row.next_attempt_at = early;
        }
        enqueue(db, rows).await;
        waker.wake();
        hanging.wait_for(2, PATIENCE).await;
        let healthy_rows: Vec<_> = (0..5).map(|_| outbox_row(&fine)).collect();
        enqueue(db, healthy_rows.clone()).await;
        waker.wake();

        // The healthy destination gets its sends while the hanging one still holds its two.
        healthy.wait_for(5, PATIENCE).await;
        for row in &healthy_rows {
            wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        }
        assert_eq!(
            hanging.count(),
            2,
            "{}: the hanging destination has only its share in flight",
            db.backend()
        );
        assert_eq!(hanging.peak_concurrency(), 2);

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_are_retried() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        sink.script(vec![Reply::status(200).delay(Duration::from_secs(5))]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({"timeout_ms": 200})).await;
        let row = outbox_row(&dest);
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let received = sink.wait_for(2, PATIENCE).await;
        let sent = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Sent).await;
        assert!(received[1].at - received[0].at >= Duration::from_millis(200));
        assert_eq!(
            received[1].header("idempotency-key"),
            Some(row.message_id.as_str())
        );
        let error = sent.last_error.unwrap_or_default();
        assert!(error.contains("timed out"), "{error}");

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_destinations_are_dead_lettered() {
    each_backend(async |db| {
        let row = outbox_row("0190f0f0-0000-7000-8000-000000000000");
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();

        let dead = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Dead).await;
        let error = dead.last_error.unwrap_or_default();
        assert!(
            error.contains("destination") && error.contains("not found"),
            "{error}"
        );
        assert_eq!(dead.attempts, 0, "no request was made");

        drop(stop);
        task.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_once_reports_what_the_destination_answered() {
    each_backend(async |db| {
        let big = "x".repeat(70 * 1024);
        let sink = Sink::start().await;
        sink.script(vec![
            Reply::status(201).body("{\"ok\":true}"),
            Reply::status(503).body("maintenance"),
            Reply::status(200).body(big),
        ]);
        let dest = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let dispatcher = Dispatcher::new(db.store().clone(), fast_config());
        let payload = json!({"type": "track", "event": "Test", "messageId": "test-1"});

        let outcome = dispatcher
            .deliver_once(&dest, "POST", "/test", &payload, "test-1")
            .await
            .unwrap();
        assert_eq!(outcome.status, 201);
        assert_eq!(outcome.body, "{\"ok\":true}");
        assert!(!outcome.truncated);
        assert!(outcome.latency > Duration::ZERO);
        let received = sink.wait_for(1, PATIENCE).await;
        assert_eq!(received[0].path, "/hooks/test");
        assert_eq!(received[0].header("idempotency-key"), Some("test-1"));
        assert_eq!(received[0].body, payload);

        // No retries: a 503 is reported as it is.
        let outcome = dispatcher
            .deliver_once(&dest, "POST", "/test", &payload, "test-1")
            .await
            .unwrap();
        assert_eq!(
            (outcome.status, outcome.body.as_str()),
            (503, "maintenance")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(sink.requests().len(), 2);

        let outcome = dispatcher
            .deliver_once(&dest, "PUT", "/test", &payload, "test-1")
            .await
            .unwrap();
        assert_eq!(outcome.body.len(), 64 * 1024);
        assert!(outcome.truncated);
        assert_eq!(sink.requests()[2].method, "PUT");

        let missing = dispatcher
            .deliver_once("nope", "POST", "/", &payload, "test-1")
            .await
            .unwrap_err();
        assert!(
            matches!(missing, DeliveryError::UnknownDestination(_)),
            "{missing}"
        );

        // Nothing listens on a port whose listener was closed.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_url = format!("http://{}/hooks", closed.local_addr().unwrap());
        drop(closed);
        let gone = destination(db, &closed_url, json!({})).await;
        let err = dispatcher
            .deliver_once(&gone, "POST", "/", &payload, "test-1")
            .await
            .unwrap_err();
        assert!(matches!(err, DeliveryError::Transport(_)), "{err}");
        assert!(err.is_transient());
    })
    .await;
}

/// Runs a dispatcher as a service process does: on a runtime of its own with a store connection
/// of its own, the runtime (and whatever task is left on it) gone as soon as `run` returns.
fn run_as_a_process(
    url: String,
    config: DeliveryConfig,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = journeys_store::Store::connect(&url).await.unwrap();
            Dispatcher::new(store, config)
                .run(async {
                    let _ = stop.await;
                })
                .await;
        });
    })
}

/// `t=<unix>,v1=<hex>` into its parts.
fn parse_signature(header: &str) -> (i64, String) {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse().ok(),
            Some(("v1", value)) => v1 = Some(value.to_owned()),
            _ => panic!("unexpected part {part:?} in {header:?}"),
        }
    }
    (t.expect("t="), v1.expect("v1="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_refused_addresses_are_dead_lettered_without_a_request() {
    each_backend(async |db| {
        let sink = Sink::start().await;
        let port = sink.addr().port();
        // The production default: global addresses only.
        let config = DeliveryConfig {
            address_policy: AddressPolicy::default(),
            ..fast_config()
        };
        let literal = destination(db, &sink.url_at("/hooks"), json!({})).await;
        let by_name = destination(db, &format!("http://localhost:{port}/hooks"), json!({})).await;
        let decimal = destination(db, &format!("http://2130706433:{port}/"), json!({})).await;
        let metadata = destination(db, "http://169.254.169.254/latest/meta-data/", json!({})).await;
        let unspecified = destination(db, &format!("http://0.0.0.0:{port}/"), json!({})).await;
        let dispatcher = Dispatcher::new(db.store().clone(), config);

        for (dest, why) in [
            (&literal, "127.0.0.1 is a loopback address"),
            (&by_name, "localhost: 127.0.0.1 is a loopback address"),
            (&decimal, "127.0.0.1 is a loopback address"),
            (&metadata, "169.254.169.254 is a link-local address"),
            (&unspecified, "0.0.0.0 is an unspecified"),
        ] {
            let err = dispatcher
                .deliver_once(dest, "POST", "/track", &json!({}), "m-1")
                .await
                .expect_err(dest);
            assert!(
                matches!(&err, DeliveryError::AddressDenied(m) if m.contains(why)),
                "{dest}: {err}"
            );
            assert!(!err.is_transient(), "a refused address is final");
        }

        // From the outbox: dead-lettered at the first attempt, with the reason.
        let row = outbox_row(&by_name);
        let waker = dispatcher.waker();
        let (stop, task) = spawn(dispatcher);
        enqueue(db, vec![row.clone()]).await;
        waker.wake();
        let dead = wait_row(db, &row.id, PATIENCE, |r| r.status == OutboxStatus::Dead).await;
        assert_eq!(dead.attempts, 1);
        let error = dead.last_error.unwrap_or_default();
        assert!(
            error.contains("destination address refused") && error.contains("loopback"),
            "{error}"
        );
        assert_eq!(sink.count(), 0, "no request was made");
        drop(stop);
        task.await.unwrap();

        // Allowed on the allow-list.
        let allowed = DeliveryConfig {
            address_policy: AddressPolicy::new(&["127.0.0.0/8"]).unwrap(),
            ..fast_config()
        };
        let dispatcher = Dispatcher::new(db.store().clone(), allowed);
        for dest in [&literal, &by_name, &decimal] {
            let outcome = dispatcher
                .deliver_once(dest, "POST", "/track", &json!({}), "m-2")
                .await
                .unwrap();
            assert_eq!(outcome.status, 200, "{dest}");
        }
        assert_eq!(sink.count(), 3);
        sink.stop().await;
    })
    .await;
}
