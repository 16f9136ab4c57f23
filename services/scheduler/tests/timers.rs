//! Timers end to end on every configured backend: published journeys, entry events through the
//! engine, and a running scheduler firing delays and hold-until timeouts.

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
use journeys_scheduler::FnWatermark;
use serde_json::json;

use journeys_testkit::clock::ManualClock;
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};

use common::{
    CHECKOUT_STARTED, DELAY_SEND, NUDGE, PURCHASE_COMPLETED, SIGNED_UP, THANKS, delay_journey,
    destination, engine, hold_journey, instance_of, raw, scheduler, send_time, sends, sends_of,
    submit_all, test_config, timers_left,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_fires_after_its_duration() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let delay = Duration::from_secs(2);
        let journey = publish(&store, &delay_journey(&destination, delay)).await;
        let engine = engine(&store).await;
        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;

        let events: Vec<_> = (0..5)
            .map(|i| track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({})))
            .collect();
        submit_all(&engine, events).await;
        eventually("five sends after the delay", WAIT, || async {
            (sends(&counts, &journey, DELAY_SEND).await == 5).then_some(())
        })
        .await;

        for i in 0..5 {
            let instance = instance_of(&journey, &format!("m{i}"));
            let detail = store.instances().get(&instance).await.expect("instance");
            let entered = detail.instance.entered_at;
            let sent = send_time(&store, &instance)
                .await
                .expect("send on the timeline");
            assert!(
                sent - entered >= TimeDelta::from_std(delay).expect("delta"),
                "sent {sent} only {:?} after entering at {entered}",
                sent - entered
            );
            assert_eq!(
                detail.instance.state,
                journeys_store::InstanceState::Completed,
                "{backend}",
                backend = db.backend()
            );
        }
        assert_eq!(timers_left(&counts, &journey).await, 0);
        // The sends commit inside the engine call; the scheduler counts them when it returns.
        eventually("the scheduler to count the firings", WAIT, || async {
            (scheduler.stats().applied == 5).then_some(())
        })
        .await;
        let stats = scheduler.stats();
        assert_eq!(stats.applied, 5);
        assert_eq!(stats.fired_total, 5);
        assert_eq!(stats.lateness.count(), 5);

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_times_out_into_its_timeout_branch_exactly_once() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let journey = publish(&store, &hold_journey(&destination, Duration::from_secs(1))).await;
        let engine = engine(&store).await;
        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;

        // Ten sessions; the even ones complete their purchase within the hold.
        let entries: Vec<_> = (0..10)
            .map(|i| {
                track(
                    "shopper",
                    CHECKOUT_STARTED,
                    &format!("start-{i}"),
                    json!({"session_id": format!("s{i}")}),
                )
            })
            .collect();
        submit_all(&engine, entries).await;
        let purchases: Vec<_> = (0..10)
            .step_by(2)
            .map(|i| {
                track(
                    "shopper",
                    PURCHASE_COMPLETED,
                    &format!("buy-{i}"),
                    json!({"session_id": format!("s{i}")}),
                )
            })
            .collect();
        submit_all(&engine, purchases).await;

        eventually("five nudges", WAIT, || async {
            (sends(&counts, &journey, NUDGE).await == 5).then_some(())
        })
        .await;
        assert_eq!(timers_left(&counts, &journey).await, 0);
        // Past another claim round and lease: nothing fires twice.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..10 {
            let instance = instance_of(&journey, &format!("start-{i}"));
            let (thanks, nudge) = (
                sends_of(&counts, &instance, THANKS).await,
                sends_of(&counts, &instance, NUDGE).await,
            );
            if i % 2 == 0 {
                assert_eq!((thanks, nudge), (1, 0), "session s{i} completed in time");
            } else {
                assert_eq!((thanks, nudge), (0, 1), "session s{i} was abandoned");
            }
        }
        assert_eq!(scheduler.stats().applied, 5);

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_that_came_due_while_no_scheduler_ran_fire_after_it_starts() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let delay = Duration::from_secs(1);
        let journey = publish(&store, &delay_journey(&destination, delay)).await;
        let hold = publish(&store, &hold_journey(&destination, delay)).await;
        let engine = engine(&store).await;

        let mut events: Vec<_> = (0..20)
            .map(|i| track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({})))
            .collect();
        events.extend((0..20).map(|i| {
            track(
                &format!("u{i}"),
                CHECKOUT_STARTED,
                &format!("c{i}"),
                json!({"session_id": "s"}),
            )
        }));
        submit_all(&engine, events).await;
        // Every timer is overdue and nothing fired them.
        let overdue = eventually("forty overdue timers", WAIT, || async {
            let stats = store.timers().stats(Utc::now()).await.expect("stats");
            (stats.overdue == 40).then_some(stats)
        })
        .await;
        assert_eq!(overdue.pending, 40);
        assert_eq!(sends(&counts, &journey, DELAY_SEND).await, 0);

        let started = Utc::now();
        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;
        eventually("every overdue timer fired", WAIT, || async {
            let delays = sends(&counts, &journey, DELAY_SEND).await;
            let nudges = sends(&counts, &hold, NUDGE).await;
            (delays == 20 && nudges == 20).then_some(())
        })
        .await;
        assert_eq!(timers_left(&counts, &journey).await, 0);
        assert_eq!(timers_left(&counts, &hold).await, 0);
        let stats = scheduler.stats();
        assert_eq!(stats.applied, 40);
        // Overdue timers are late by at least the time they waited.
        let earliest_due = overdue.next_due_at.expect("a next due time");
        let waited = (started - earliest_due)
            .to_std()
            .expect("due before the start");
        assert!(
            stats.lateness.max() >= waited,
            "max lateness {:?} below the {waited:?} the earliest timer waited",
            stats.lateness.max()
        );

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_schedulers_claims_are_fired_by_another_after_the_lease() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let journey = publish(&store, &delay_journey(&destination, Duration::from_secs(1))).await;
        let engine = engine(&store).await;
        let events: Vec<_> = (0..10)
            .map(|i| track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({})))
            .collect();
        submit_all(&engine, events).await;

        // A scheduler claims everything and dies without firing or releasing.
        let lease_until = Utc::now() + TimeDelta::seconds(3);
        let claimed = store
            .timers()
            .claim_due(Utc::now() + TimeDelta::hours(1), 100, lease_until)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 10);

        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;
        eventually("the lapsed claims fired", WAIT, || async {
            (sends(&counts, &journey, DELAY_SEND).await == 10).then_some(())
        })
        .await;
        for i in 0..10 {
            let sent = send_time(&store, &instance_of(&journey, &format!("m{i}")))
                .await
                .expect("sent");
            assert!(
                sent >= lease_until,
                "fired at {sent} while claimed until {lease_until}"
            );
        }
        // The sends commit inside the engine call; the scheduler counts them when it returns.
        eventually("the scheduler to count the firings", WAIT, || async {
            (scheduler.stats().applied == 10).then_some(())
        })
        .await;

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_claimed_timers_at_once() {
    each_backend(async |db| {
        let store = db.store().clone();
        let destination = destination(&store).await;
        let journey = publish(&store, &delay_journey(&destination, Duration::from_secs(5))).await;
        let engine = engine(&store).await;
        let events: Vec<_> = (0..10)
            .map(|i| track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({})))
            .collect();
        submit_all(&engine, events).await;

        let config = journeys_scheduler::SchedulerConfig {
            horizon: Duration::from_secs(30),
            lease: Duration::from_secs(60),
            ..test_config()
        };
        let scheduler = scheduler(&store, &engine, engine.clone(), config).await;
        eventually("the timers claimed", WAIT, || async {
            (scheduler.stats().claimed == 10).then_some(())
        })
        .await;
        scheduler.shutdown().await;

        // Released: claimable by the next scheduler now, not after the 60 s lease.
        let reclaimed = store
            .timers()
            .claim_due(Utc::now() + TimeDelta::hours(1), 100, Utc::now())
            .await
            .expect("claim");
        assert_eq!(reclaimed.len(), 10);
        assert!(reclaimed.iter().all(|t| t.journey_id == journey));

        engine.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_at_the_same_moment_as_the_hold_timeout_takes_exactly_one_branch() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let journey = publish(&store, &hold_journey(&destination, Duration::from_secs(2))).await;
        let engine = engine(&store).await;
        let scheduler = scheduler(&store, &engine, engine.clone(), test_config()).await;

        const SESSIONS: usize = 30;
        let entries: Vec<_> = (0..SESSIONS)
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
        let due = store
            .timers()
            .list_for_instance(&instance_of(&journey, "start-0"))
            .await
            .expect("timers")
            .first()
            .expect("the hold's timer")
            .due_at;

        // Purchases land around the deadline: a third just before, a third at it, a third
        // just after, all while the scheduler fires the timeouts.
        let engine_for_purchases = engine.clone();
        let mut sent = Vec::new();
        for (group, offset_ms) in [(0, -15i64), (1, 0), (2, 15)] {
            let at = due + TimeDelta::milliseconds(offset_ms);
            let engine = engine_for_purchases.clone();
            let purchases: Vec<_> = (0..SESSIONS)
                .filter(|i| i % 3 == group)
                .map(|i| {
                    track(
                        &format!("u{i}"),
                        PURCHASE_COMPLETED,
                        &format!("buy-{i}"),
                        json!({"session_id": "s"}),
                    )
                })
                .collect();
            sent.push(tokio::spawn(async move {
                if let Ok(wait) = (at - Utc::now()).to_std() {
                    tokio::time::sleep(wait).await;
                }
                engine.submit(purchases).await
            }));
        }
        for task in sent {
            task.await.expect("purchase task");
        }

        eventually("every session resolved", WAIT, || async {
            let total =
                sends(&counts, &journey, NUDGE).await + sends(&counts, &journey, THANKS).await;
            (total >= SESSIONS as i64).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 0..SESSIONS {
            let instance = instance_of(&journey, &format!("start-{i}"));
            let thanks = sends_of(&counts, &instance, THANKS).await;
            let nudge = sends_of(&counts, &instance, NUDGE).await;
            assert_eq!(
                thanks + nudge,
                1,
                "session of u{i}: thanks {thanks}, nudge {nudge}"
            );
        }
        assert_eq!(timers_left(&counts, &journey).await, 0);

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_timeout_waits_for_the_watermark_and_a_delay_does_not() {
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let second = Duration::from_secs(1);
        let delayed = publish(&store, &delay_journey(&destination, second)).await;
        let hold = publish(&store, &hold_journey(&destination, second)).await;
        let engine = engine(&store).await;

        // A data plane lagging behind: every event received since `frozen` is still
        // uncommitted as far as the scheduler can tell.
        let frozen = Utc::now();
        let watermark = ManualClock::frozen_at(frozen);
        let source = {
            let watermark = watermark.clone();
            FnWatermark(move || watermark.now())
        };
        let scheduler = scheduler(&store, &engine, source, test_config()).await;
        submit_all(
            &engine,
            vec![
                track("a", SIGNED_UP, "delay-a", json!({})),
                track(
                    "b",
                    CHECKOUT_STARTED,
                    "hold-b",
                    json!({"session_id": "late"}),
                ),
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
        // Both holds are past their deadline, yet neither timed out.
        let hold_due = store
            .timers()
            .list_for_instance(&instance_of(&hold, "hold-b"))
            .await
            .expect("timers")
            .first()
            .expect("hold timer")
            .due_at;
        let past_deadline = (hold_due + TimeDelta::milliseconds(500) - Utc::now())
            .to_std()
            .unwrap_or_default();
        tokio::time::sleep(past_deadline).await;
        assert_eq!(sends(&counts, &hold, NUDGE).await, 0);
        assert_eq!(timers_left(&counts, &hold).await, 2);

        // The purchase "received before the deadline" is applied now; then the data plane
        // catches up.
        submit_all(
            &engine,
            vec![track(
                "b",
                PURCHASE_COMPLETED,
                "buy-b",
                json!({"session_id": "late"}),
            )],
        )
        .await;
        watermark.follow_wall_clock();

        eventually("the idle session timed out", WAIT, || async {
            (sends(&counts, &hold, NUDGE).await == 1).then_some(())
        })
        .await;
        let late = instance_of(&hold, "hold-b");
        assert_eq!(sends_of(&counts, &late, THANKS).await, 1);
        assert_eq!(sends_of(&counts, &late, NUDGE).await, 0);
        assert_eq!(
            sends_of(&counts, &instance_of(&hold, "hold-c"), NUDGE).await,
            1
        );
        assert_eq!(timers_left(&counts, &hold).await, 0);

        scheduler.shutdown().await;
        engine.shutdown().await;
        counts.close().await.expect("close");
    })
    .await;
}

/// Two nodes, each an owner of half the partitions with its own scheduler: every timer is fired
/// exactly once, by the owner of its profile's partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owner_nodes_fire_each_timer_once_by_its_partition_owner() {
    use journeys_engine::{AckStatus, Engine, EngineConfig, OwnerConfig};
    each_backend(async |db| {
        let store = db.store().clone();
        let counts = raw(db.url()).await;
        let destination = destination(&store).await;
        let journey = publish(&store, &delay_journey(&destination, Duration::from_secs(1))).await;
        let node = |id: &str| {
            Engine::start(
                store.clone(),
                EngineConfig {
                    partitions: 8,
                    owner: Some(OwnerConfig {
                        node_id: id.to_owned(),
                        lease_ttl: Duration::from_secs(1),
                        ..OwnerConfig::default()
                    }),
                    ..EngineConfig::default()
                },
                None,
            )
        };
        let (a, b) = (node("a"), node("b"));
        for engine in [&a, &b] {
            engine.refresh_now().await.unwrap();
        }
        eventually("the partitions to be split", WAIT, || async {
            let (x, y) = (a.held_partitions(), b.held_partitions());
            (x > 0 && y > 0 && x + y == 8).then_some(())
        })
        .await;
        let scheduler_a = scheduler(&store, &a, a.clone(), test_config()).await;
        let scheduler_b = scheduler(&store, &b, b.clone(), test_config()).await;

        // Each event goes to whichever node owns its profile.
        let n = 30;
        for i in 0..n {
            let event = track(&format!("u{i}"), SIGNED_UP, &format!("m{i}"), json!({}));
            let by_a = a.submit(vec![event.clone()]).await.remove(0).status;
            if by_a != AckStatus::Accepted {
                let by_b = b.submit(vec![event]).await.remove(0).status;
                assert_eq!(by_b, AckStatus::Accepted, "u{i}");
            }
        }
        eventually("every delay to fire", WAIT, || async {
            (sends(&counts, &journey, DELAY_SEND).await == n).then_some(())
        })
        .await;
        assert_eq!(timers_left(&counts, &journey).await, 0);
        eventually("the schedulers to count the firings", WAIT, || async {
            let (sa, sb) = (scheduler_a.stats(), scheduler_b.stats());
            (sa.applied + sb.applied == n.cast_unsigned()).then_some(())
        })
        .await;
        let (sa, sb) = (scheduler_a.stats(), scheduler_b.stats());
        assert!(sa.applied > 0 && sb.applied > 0, "{sa:?} {sb:?}");
        scheduler_a.shutdown().await;
        scheduler_b.shutdown().await;
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}
