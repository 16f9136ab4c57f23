//! The cross-process fairness watermark ([`StoreWatermark`]) on every configured backend: a
//! data-plane replica's heartbeat in the store, far behind, holds hold-until timeouts back
//! while delays fire; once the heartbeat advances, or the replica stops beating and its lease
//! runs out, the timeouts fire.

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

use chrono::{TimeDelta, Utc};
use journeys_runtime::shutdown::Shutdown;
use journeys_scheduler::StoreWatermark;
use journeys_store::Store;
use serde_json::json;
use tokio::task::JoinHandle;

use journeys_testkit::clock::ManualClock;
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};

use common::{
    CHECKOUT_STARTED, DELAY_SEND, NUDGE, SIGNED_UP, delay_journey, destination, engine,
    hold_journey, instance_of, raw, scheduler, sends, submit_all, test_config, timers_left,
};

const WAIT: Duration = Duration::from_secs(60);

/// How a replica's heartbeat ends in a scenario.
#[derive(Clone, Copy, Debug)]
enum CatchUp {
    /// The replica keeps beating and its watermark advances to now.
    Advance,
    /// The replica stops beating (killed) and drops out after the lease.
    GoStale,
}

/// A pretend data-plane replica beating the instant `watermark` reads every 50 ms.
fn replica(store: &Store, watermark: ManualClock, stop: &Shutdown) -> JoinHandle<()> {
    let store = store.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        while !stop.is_triggered() {
            let now = Utc::now();
            let mark = watermark.now();
            store
                .watermarks()
                .beat("replica-1", mark, now)
                .await
                .expect("beat");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn scenario(catch_up: CatchUp) {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let second = Duration::from_secs(1);
        let delayed = publish(&store, &delay_journey(&destination, second)).await;
        let hold = publish(&store, &hold_journey(&destination, second)).await;
        let engine = engine(&store).await;

        // A replica lagging far behind: nothing it received in the last hour is committed.
        let watermark = ManualClock::frozen_at(Utc::now() - TimeDelta::hours(1));
        let beating = Shutdown::new();
        let beats = replica(&store, watermark.clone(), &beating);
        let stop = Shutdown::new();
        let (source, refresh) = StoreWatermark::start_with(
            store.clone(),
            engine.clone(),
            Duration::from_millis(500),
            Duration::from_millis(25),
            stop.wait(),
        )
        .await;
        let scheduler = scheduler(&store, &engine, source, test_config()).await;
        submit_all(
            &engine,
            vec![
                track("a", SIGNED_UP, "delay-a", json!({})),
                track(
                    "c",
                    CHECKOUT_STARTED,
                    "hold-c",
                    json!({"session_id": "idle"}),
                ),
            ],
        )
        .await;

        // The delay fires regardless of the watermark.
        eventually("the delay fired", WAIT, || async {
            (sends(&counts, &delayed, DELAY_SEND).await == 1).then_some(())
        })
        .await;
        // The hold is past its deadline, yet it has not timed out.
        let hold_due = store
            .timers()
            .list_for_instance(&instance_of(&hold, "hold-c"))
            .await
            .expect("timers")
            .first()
            .expect("hold timer")
            .due_at;
        let past_deadline = (hold_due + TimeDelta::milliseconds(500) - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(past_deadline).await;
        assert_eq!(sends(&counts, &hold, NUDGE).await, 0, "{catch_up:?}");
        assert_eq!(timers_left(&counts, &hold).await, 1, "{catch_up:?}");

        match catch_up {
            CatchUp::Advance => {
                watermark.follow_wall_clock();
            }
            CatchUp::GoStale => {
                beating.trigger();
                beats.await.expect("replica task");
            }
        }
        eventually("the hold timed out", WAIT, || async {
            (sends(&counts, &hold, NUDGE).await == 1).then_some(())
        })
        .await;
        assert_eq!(timers_left(&counts, &hold).await, 0, "{catch_up:?}");

        beating.trigger();
        scheduler.shutdown().await;
        stop.trigger();
        refresh.await.expect("refresh task");
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_holds_a_timeout_until_its_heartbeat_advances() {
    scenario(CatchUp::Advance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_beating_drops_out_after_its_lease() {
    scenario(CatchUp::GoStale).await;
}

#[tokio::test]
async fn with_no_live_replica_the_engine_watermark_counts() {
    use journeys_scheduler::WatermarkSource;
    each_backend(async |db| {
        let store = db.store().clone();
        let engine = engine(&store).await;
        let stop = Shutdown::new();
        let (source, refresh) =
            StoreWatermark::start(store.clone(), engine.clone(), stop.wait()).await;
        assert_eq!(source.low(), None);
        let before = Utc::now();
        assert!(source.watermark() >= before);

        // A replica that stopped beating long ago does not count either.
        let old = Utc::now() - TimeDelta::minutes(10);
        store
            .watermarks()
            .beat("gone", old, old)
            .await
            .expect("beat");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(source.low(), None);
        assert!(source.watermark() >= before);

        stop.trigger();
        refresh.await.expect("refresh task");
        engine.shutdown().await;
    })
    .await;
}
