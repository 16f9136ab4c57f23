//! Housekeeping jobs on every configured backend: expired dedupe keys, finished instances past
//! retention, instances past their maximum lifetime, and the cron schedule running them.

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

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use journeys_scheduler::HousekeepingConfig;
use journeys_store::{Changes, InstanceState, Store};
use serde_json::json;

use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};

use common::{
    CHECKOUT_STARTED, NUDGE, count, destination, engine, hold_journey, instance_of, raw, scheduler,
    sends, submit_all, test_config, timers_left,
};

async fn remember(store: &Store, keys: &[(&str, DateTime<Utc>)]) {
    let changes = Changes {
        dedupe: keys
            .iter()
            .map(|(id, at)| ((*id).to_owned(), *at))
            .collect(),
        ..Changes::default()
    };
    store
        .batches()
        .commit(&changes)
        .await
        .expect("store dedupe keys");
}

async fn remembered(store: &Store, keys: &[&str]) -> HashSet<String> {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    store
        .batches()
        .seen_message_ids(&keys, Utc::now() - TimeDelta::days(30))
        .await
        .expect("seen ids")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_purge_and_expire_what_is_due() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let now = Utc::now();
        remember(
            &store,
            &[
                ("old", now - TimeDelta::hours(25)),
                ("fresh", now - TimeDelta::hours(1)),
            ],
        )
        .await;

        let destination = destination(&store).await;
        let hold = publish(
            &store,
            &hold_journey(&destination, Duration::from_secs(3600)),
        )
        .await;
        let engine = engine(&store).await;
        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;
        let entries: Vec<_> = (0..7)
            .map(|i| {
                track(
                    &format!("u{i}"),
                    CHECKOUT_STARTED,
                    &format!("start-{i}"),
                    json!({"session_id": "s"}),
                )
            })
            .collect();
        submit_all(&engine, entries).await;
        let housekeeping = scheduler.housekeeping();

        // Dedupe keys older than the 24 h window go; newer ones stay.
        assert_eq!(housekeeping.purge_dedupe(now).await.expect("purge"), 1);
        assert_eq!(
            remembered(&store, &["old", "fresh"]).await,
            HashSet::from(["fresh".to_owned()])
        );

        // Nothing is past its lifetime yet.
        assert_eq!(housekeeping.expire_instances(now).await.expect("expire"), 0);
        // A year and a day later every instance is, and each is ended exactly once.
        let next_year = now + TimeDelta::days(366);
        assert_eq!(
            housekeeping
                .expire_instances(next_year)
                .await
                .expect("expire"),
            7
        );
        assert_eq!(
            housekeeping
                .expire_instances(next_year)
                .await
                .expect("expire"),
            0
        );
        for i in 0..7 {
            let detail = store
                .instances()
                .get(&instance_of(&hold, &format!("start-{i}")))
                .await
                .expect("instance");
            assert_eq!(detail.instance.state, InstanceState::Exited);
            let exit = detail
                .timeline
                .iter()
                .find(|t| t.kind == "exited")
                .expect("an exit in the timeline");
            assert_eq!(
                exit.detail,
                json!({"code": "lifetime_reached"}),
                "its own exit reason, not an operator's"
            );
        }
        // The holds' timers went with them, and nothing was sent.
        assert_eq!(timers_left(&counts, &hold).await, 0);
        assert_eq!(sends(&counts, &hold, NUDGE).await, 0);

        // Finished instances stay through the retention and go after it.
        let ended = Utc::now();
        assert_eq!(
            housekeeping
                .purge_finished_instances(ended + TimeDelta::days(89))
                .await
                .expect("purge"),
            0
        );
        assert_eq!(
            housekeeping
                .purge_finished_instances(ended + TimeDelta::days(91))
                .await
                .expect("purge"),
            7
        );
        assert!(
            store
                .instances()
                .get(&instance_of(&hold, "start-0"))
                .await
                .is_err()
        );
        let timeline_left = count(&counts, "SELECT COUNT(*) FROM timeline", &[]).await;
        assert_eq!(timeline_left, 0);

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_schedule_runs_the_jobs() {
    each_backend(async |db| {
        let store = db.store().clone();
        remember(&store, &[("stale", Utc::now() - TimeDelta::days(2))]).await;
        let engine = engine(&store).await;
        let config = journeys_scheduler::SchedulerConfig {
            housekeeping: HousekeepingConfig {
                // Every second, so the test does not wait for a minute boundary.
                schedule: "* * * * * *".to_owned(),
                ..HousekeepingConfig::default()
            },
            ..test_config()
        };
        let scheduler = scheduler(&store, &engine, engine.clone(), config).await;
        eventually("the scheduled purge", Duration::from_secs(30), || async {
            remembered(&store, &["stale"])
                .await
                .is_empty()
                .then_some(())
        })
        .await;

        scheduler.shutdown().await;
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_bad_cron_expression_is_refused() {
    let db = journeys_testkit::TestDb::sqlite().await.expect("db");
    let engine = engine(db.store()).await;
    let config = journeys_scheduler::SchedulerConfig {
        housekeeping: HousekeepingConfig {
            schedule: "every minute please".to_owned(),
            ..HousekeepingConfig::default()
        },
        ..test_config()
    };
    let started = journeys_scheduler::Scheduler::start(
        db.store().clone(),
        engine.clone(),
        engine.clone(),
        config,
    )
    .await;
    assert!(started.is_err());
    engine.shutdown().await;
    db.close().await.expect("drop test database");
}
