//! Several schedulers on one database fire each timer exactly once.
//!
//! On MariaDB three Engine + Scheduler pairs, each on its own store connection pool, compete
//! for 10,000 timers through `SKIP LOCKED` claims. SQLite is single-process by design, so
//! there one scheduler fires them all.

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

mod common;

use std::time::Duration;

use journeys_store::Backend;
use serde_json::json;

use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};

use common::{
    DELAY_SEND, SIGNED_UP, count, delay_journey, destination, engine, raw, scheduler, sends,
    submit_all, test_config, timers_left,
};

const TIMERS: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedulers_sharing_a_database_fire_every_timer_exactly_once() {
    each_backend(async |db| {
        let replicas = if db.backend() == Backend::MySql { 3 } else { 1 };
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let journey = publish(&store, &delay_journey(&destination, Duration::from_secs(2))).await;

        let ingest = engine(&store).await;
        let events: Vec<_> = (0..TIMERS)
            .map(|i| {
                track(
                    &format!("user-{i}"),
                    SIGNED_UP,
                    &format!("m-{i}"),
                    json!({}),
                )
            })
            .collect();
        submit_all(&ingest, events).await;
        ingest.shutdown().await;
        assert_eq!(timers_left(&counts, &journey).await, TIMERS as i64);

        // Small claim and fire batches, so that the replicas interleave.
        let config = journeys_scheduler::SchedulerConfig {
            claim_batch: 200,
            fire_batch: 100,
            ..test_config()
        };
        let mut pairs = Vec::new();
        for _ in 0..replicas {
            let replica_store = journeys_store::Store::connect(db.url())
                .await
                .expect("replica store");
            let engine = engine(&replica_store).await;
            let scheduler =
                scheduler(&replica_store, &engine, engine.clone(), config.clone()).await;
            pairs.push((replica_store, engine, scheduler));
        }

        eventually("every timer fired", Duration::from_secs(300), || async {
            (sends(&counts, &journey, DELAY_SEND).await >= TIMERS as i64).then_some(())
        })
        .await;
        // Past every lease: a timer claimed twice would have fired twice by now.
        tokio::time::sleep(config.lease + Duration::from_secs(1)).await;

        let outbox_rows = sends(&counts, &journey, DELAY_SEND).await;
        let distinct = count(
            &counts,
            "SELECT COUNT(DISTINCT instance_id) FROM outbox WHERE journey_id = ?",
            &[&journey],
        )
        .await;
        // Each send counted once by the journey counters (the timeline keeps one compact row
        // per transition, so sends are not rows of their own there).
        let counted_sends = count(
            &counts,
            "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM journey_counters \
             WHERE journey_id = ? AND kind = 'send' AND step_key = ?",
            &[&journey, DELAY_SEND],
        )
        .await;
        assert_eq!(outbox_rows, TIMERS as i64, "{}", db.backend());
        assert_eq!(distinct, TIMERS as i64, "{}", db.backend());
        assert_eq!(counted_sends, TIMERS as i64, "{}", db.backend());
        assert_eq!(timers_left(&counts, &journey).await, 0);

        let mut applied = 0;
        let mut per_replica = Vec::new();
        for (replica_store, engine, scheduler) in pairs {
            let stats = scheduler.stats();
            applied += stats.applied;
            per_replica.push((stats.applied, stats.discarded));
            scheduler.shutdown().await;
            engine.shutdown().await;
            replica_store.close().await.expect("close replica store");
        }
        eprintln!(
            "{}: {replicas} scheduler(s) fired {TIMERS} timers: (applied, discarded) per replica {per_replica:?}",
            db.backend()
        );
        assert_eq!(applied, TIMERS as u64);

        counts.close().await.expect("close");
    })
    .await;
}
