//! Owners reading the NATS partition log (SCALE-OUT.md §3), on every configured backend, when
//! `JOURNEYS_TEST_NATS_URL` names a NATS server with JetStream (skipped otherwise): any front
//! takes any event, the partition's owner applies it once and in order, the client hears the
//! owner's outcome, and partitions handed over resume where their last owner committed.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{checkout, owner, sends, sent_steps};
use journeys_core::machine::ExitReason;
use journeys_core::model::{EntryRule, Event, StepKind};
use journeys_core::partition::partition_of;
use journeys_engine::{
    AckStatus, Engine, EngineConfig, FrontConfig, LogFront, PartitionLog, RATE_LIMITED,
    TerminateOutcome, TimerStatus,
};
use journeys_store::{InstanceState, Store};
use journeys_testkit::journeys::{journey, publish, send_spec, step};
use journeys_testkit::{each_backend, eventually, identify, track};
use serde_json::json;

const PARTITIONS: u32 = 8;
const WAIT: Duration = Duration::from_secs(20);

fn nats_url() -> Option<String> {
    let url = std::env::var("JOURNEYS_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("JOURNEYS_TEST_NATS_URL unset: NATS test skipped");
    }
    url
}

async fn log(url: &str) -> PartitionLog {
    let stream = format!("jt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    PartitionLog::connect(url, &stream, PARTITIONS)
        .await
        .unwrap()
}

/// A node: an owner reading the log, and a front publishing into it.
async fn node(store: &Store, log: &PartitionLog, node_id: &str) -> (Engine, LogFront) {
    node_polling(
        store,
        log,
        node_id,
        EngineConfig::default().refresh_interval,
    )
    .await
}

/// A node whose journey cache polls the store every `refresh_interval`.
async fn node_polling(
    store: &Store,
    log: &PartitionLog,
    node_id: &str,
    refresh_interval: Duration,
) -> (Engine, LogFront) {
    let engine = Engine::start_logged(
        store.clone(),
        EngineConfig {
            lanes: 2,
            partitions: PARTITIONS,
            max_events_per_profile_per_sec: 25,
            owner: Some(owner(node_id)),
            refresh_interval,
            ..EngineConfig::default()
        },
        None,
        log.clone(),
    );
    engine.refresh_now().await.unwrap();
    engine.ownership_ready().await;
    let front = LogFront::start(log.clone(), store.clone(), FrontConfig::new(PARTITIONS))
        .await
        .unwrap();
    (engine, front)
}

/// Two nodes on `log`, each routing its timers and exits through its own front, once both
/// hold partitions.
async fn two_nodes(store: &Store, log: &PartitionLog) -> ((Engine, LogFront), (Engine, LogFront)) {
    two_nodes_polling(store, log, EngineConfig::default().refresh_interval).await
}

/// [`two_nodes`], their journey caches polling every `refresh_interval`.
async fn two_nodes_polling(
    store: &Store,
    log: &PartitionLog,
    refresh_interval: Duration,
) -> ((Engine, LogFront), (Engine, LogFront)) {
    let (a, front_a) = node_polling(store, log, "node-a", refresh_interval).await;
    let (b, front_b) = node_polling(store, log, "node-b", refresh_interval).await;
    a.route_through_log(front_a.clone());
    b.route_through_log(front_b.clone());
    eventually("both nodes to hold partitions", WAIT, async || {
        let (x, y) = (a.held_partitions(), b.held_partitions());
        (x > 0 && y > 0 && x + y == PARTITIONS as usize).then_some(())
    })
    .await;
    ((a, front_a), (b, front_b))
}

/// Two nodes whose journey caches do not poll during the test, with `journey` published
/// after both loaded their journeys and only node-a (whose API published it) told of it; and
/// the partitions node-a holds.
async fn two_nodes_told_of_a_publish(
    store: &Store,
    log: &PartitionLog,
    journey: &journeys_core::model::JourneyDefinition,
) -> ((Engine, LogFront), (Engine, LogFront), Vec<u32>) {
    let ((a, front_a), (b, front_b)) =
        two_nodes_polling(store, log, Duration::from_secs(3600)).await;
    publish(store, journey).await;
    a.refresh_now().await.unwrap();
    let held_by_a = a.held_partition_ids().unwrap_or_default();
    ((a, front_a), (b, front_b), held_by_a)
}

/// Stops the fronts, then the engines (which release their partitions), and deletes the
/// test's stream.
async fn stop(nodes: Vec<(Engine, LogFront)>, log: PartitionLog) {
    for (_, front) in &nodes {
        front.stop();
    }
    for (engine, _) in nodes {
        engine.shutdown().await;
    }
    log.delete_stream().await.unwrap();
}

/// Forwards every `order_completed`, once per `order_id`.
fn forwarding() -> journeys_core::model::JourneyDefinition {
    let mut spec = send_spec("dest_1");
    spec.event_name = Some("forward".into());
    journey(
        "Forward orders",
        "order_completed",
        EntryRule::ReenterEveryTime {
            unique_identifier: "order_id".into(),
        },
        vec![step(
            "forward",
            StepKind::Send(journeys_core::model::SendStep { spec, next: None }),
        )],
    )
}

fn order(user: &str, n: usize) -> Event {
    track(
        user,
        "order_completed",
        &format!("{user}-m{n}"),
        json!({"order_id": format!("{user}-o{n}")}),
    )
}

#[tokio::test]
async fn events_sent_to_any_front_are_applied_once_by_their_partitions_owner() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        publish(db, &forwarding()).await;
        let ((a, front_a), (b_engine, front_b)) = two_nodes(db, &log).await;

        // 40 profiles × 5 orders, alternating fronts: each front publishes events of
        // partitions the other node owns.
        let mut expected = BTreeSet::new();
        for n in 0..5 {
            let (first, second): (Vec<Event>, Vec<Event>) = (0..40)
                .map(|u| order(&format!("u{u}"), n))
                .partition(|e| e.user_id.as_deref().is_some_and(|u| u.len() % 2 == 0));
            for event in first.iter().chain(&second) {
                expected.insert(event.message_id.clone());
            }
            let (acks_a, acks_b) = tokio::join!(front_a.submit(first), front_b.submit(second));
            for ack in acks_a.iter().chain(&acks_b) {
                assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
            }
        }
        // Acknowledged means committed: every send is queued, once.
        let queued = sends(db).await;
        assert_eq!(queued.len(), 200, "{b}");
        let orders: BTreeSet<String> = queued
            .iter()
            .map(|s| format!("{}-{}", s.profile_id, s.instance_id))
            .collect();
        assert_eq!(orders.len(), 200, "{b}: one instance per order");

        // A resend through the other front is a duplicate, answered from the first entry.
        let again = front_b.submit(vec![order("u1", 0)]).await;
        assert_eq!(again[0].status, AckStatus::Duplicate, "{b}");

        // The owner's outcome reaches the client: past 25 events/s, a profile is refused.
        let burst: Vec<Event> = (100..140).map(|n| order("u7", n)).collect();
        let acks = front_a.submit(burst).await;
        let limited = acks
            .iter()
            .filter(
                |a| matches!(&a.status, AckStatus::Rejected { code, .. } if code == RATE_LIMITED),
            )
            .count();
        assert!(limited >= 10, "{b}: {limited} of 40 rate limited: {acks:?}");
        // Resent a second later (same messageIds, well within the log's duplicate window), the
        // refused events are judged afresh and applied; the others are duplicates.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let refused: Vec<Event> = acks
            .iter()
            .zip(100..140)
            .filter(|(a, _)| matches!(&a.status, AckStatus::Rejected { .. }))
            .map(|(_, n)| order("u7", n))
            .collect();
        let resent = front_b.submit(refused.clone()).await;
        let accepted = resent
            .iter()
            .filter(|a| a.status == AckStatus::Accepted)
            .count();
        assert!(
            accepted >= 20.min(refused.len()),
            "{b}: {accepted} of {} resent events applied: {resent:?}",
            refused.len()
        );
        let again = front_a.submit(vec![order("u7", 100)]).await;
        assert_eq!(again[0].status, AckStatus::Duplicate, "{b}");

        // Each partition's progress is its last applied log sequence.
        let rows = db.partitions().all().await.unwrap();
        let u7 = partition_of("u7", PARTITIONS);
        assert_eq!(
            u64::try_from(rows[u7 as usize].log_seq).unwrap(),
            log.tail(u7).await.unwrap(),
            "{b}"
        );

        stop(vec![(a, front_a), (b_engine, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn a_node_that_stops_hands_over_and_its_successor_resumes_where_it_committed() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        publish(db, &forwarding()).await;
        publish(db, &checkout()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let first: Vec<Event> = (0..30).map(|u| order(&format!("p{u}"), 0)).collect();
        for ack in front_b.submit(first).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let epochs_before = db.partitions().all().await.unwrap();

        // node-b stops: its partitions go to node-a, at new epochs, well within the lease.
        front_b.stop();
        other.shutdown().await;
        eventually("node-a to hold every partition", WAIT, async || {
            (a.held_partitions() == PARTITIONS as usize).then_some(())
        })
        .await;
        let rows = db.partitions().all().await.unwrap();
        assert!(
            rows.iter()
                .zip(&epochs_before)
                .any(|(now, before)| now.epoch > before.epoch),
            "{b}: taken-over partitions have a newer epoch"
        );
        // Events published while nobody read them are applied by the successor, from where
        // node-b committed: nothing twice, nothing lost.
        let second: Vec<Event> = (0..30).map(|u| order(&format!("p{u}"), 1)).collect();
        for ack in front_a.submit(second).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let queued = sends(db).await;
        assert_eq!(queued.len(), 60, "{b}");

        stop(vec![(a, front_a)], log).await;
    })
    .await;
}

#[tokio::test]
async fn a_store_that_ran_without_the_log_or_on_an_earlier_stream_reads_the_new_one_from_its_start()
{
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        publish(db, &forwarding()).await;
        // A node without the log commits for a while: `last_seq` counts its commits.
        let plain = Engine::start(
            (**db).clone(),
            EngineConfig {
                lanes: 2,
                partitions: PARTITIONS,
                owner: Some(owner("plain")),
                ..EngineConfig::default()
            },
            None,
        );
        plain.refresh_now().await.unwrap();
        plain.ownership_ready().await;
        for ack in plain
            .submit((0..20).map(|u| order(&format!("w{u}"), 0)).collect())
            .await
        {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        plain.shutdown().await;
        let rows = db.partitions().all().await.unwrap();
        assert!(rows.iter().any(|r| r.last_seq > 0), "{b}");
        // And half of the partitions carry progress from an earlier stream of the same name.
        {
            use sea_orm::ConnectionTrait as _;
            let raw = sea_orm::Database::connect(db.url()).await.unwrap();
            raw.execute_unprepared(
                "UPDATE partition_state SET log_seq = 1000000 WHERE partition_id < 4",
            )
            .await
            .unwrap();
            raw.close().await.unwrap();
        }

        // Started with a (new) log, the nodes read it from its start: nothing is skipped.
        let log = log(&url).await;
        let (a, front) = node(db, &log, "node-a").await;
        let events: Vec<Event> = (0..40).map(|u| order(&format!("w{u}"), 1)).collect();
        for ack in front.submit(events).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
        }
        assert_eq!(sends(db).await.len(), 60, "{b}");
        let rows = db.partitions().all().await.unwrap();
        assert!(
            rows.iter().all(|r| r.log_seq < 1000000),
            "{b}: progress is the new stream's: {rows:?}"
        );
        stop(vec![(a, front)], log).await;
    })
    .await;
}

/// Each of `users` starts a checkout of session `session` through `front`, all accepted.
async fn start_checkouts(
    front: &LogFront,
    users: &[String],
    session: &str,
    b: impl std::fmt::Display,
) {
    let started: Vec<Event> = users
        .iter()
        .map(|u| {
            track(
                u,
                "checkout_started",
                &format!("{u}-start"),
                json!({"session_id": session}),
            )
        })
        .collect();
    for ack in front.submit(started).await {
        assert_eq!(ack.status, AckStatus::Accepted, "{b}");
    }
}

#[tokio::test]
async fn operator_exits_reach_the_owner_of_the_instance_whichever_node_is_asked() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        let journey = publish(db, &checkout()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let users: Vec<String> = (0..16).map(|u| format!("x{u}")).collect();
        start_checkouts(&front_a, &users, "s1", b).await;

        // Every instance is ended through node-a, half of them owned by node-b.
        let mut owned_elsewhere = 0;
        for user in &users {
            let instance = common::instances(db, &journey, user).await.remove(0);
            if other
                .held_partition_ids()
                .is_none_or(|held| held.contains(&partition_of(user, PARTITIONS)))
            {
                owned_elsewhere += 1;
            }
            let outcome = a
                .terminate_instance(&instance.id, ExitReason::Operator)
                .await
                .unwrap();
            assert_eq!(outcome, TerminateOutcome::Exited, "{b}: {user}");
            let again = a
                .terminate_instance(&instance.id, ExitReason::Operator)
                .await
                .unwrap();
            assert_eq!(again, TerminateOutcome::NotActive, "{b}: {user}");
            let ended = common::instances(db, &journey, user).await.remove(0);
            assert_eq!(ended.state, InstanceState::Exited, "{b}: {user}");
        }
        assert!(owned_elsewhere > 0, "{b}: some instances were node-b's");

        // Archiving in exit mode ends the instances of both nodes, asked of node-b.
        let again: Vec<Event> = users
            .iter()
            .map(|u| {
                track(
                    u,
                    "checkout_started",
                    &format!("{u}-start-2"),
                    json!({"session_id": "s2"}),
                )
            })
            .collect();
        for ack in front_b.submit(again).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let ended = other.terminate_journey_instances(&journey).await.unwrap();
        assert_eq!(ended, users.len() as u64, "{b}");

        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn profile_deletions_reach_the_owner_whichever_node_is_asked() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        let journey = publish(db, &checkout()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let users: Vec<String> = (0..16).map(|u| format!("d{u}")).collect();
        start_checkouts(&front_b, &users, "s1", b).await;
        for user in &users {
            a.delete_profile(user, false).await.unwrap();
            assert!(
                common::instances(db, &journey, user).await.is_empty(),
                "{b}: {user}'s instance deleted"
            );
        }
        // The owners hold the tombstones: an event sent before the deletion is dropped, a
        // later one starts afresh.
        let mut late = track(
            "d0",
            "checkout_started",
            "d0-late",
            json!({"session_id": "s2"}),
        );
        late.timestamp -= chrono::TimeDelta::minutes(1);
        let fresh = track(
            "d1",
            "checkout_started",
            "d1-again",
            json!({"session_id": "s3"}),
        );
        for ack in front_b.submit(vec![late, fresh]).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        assert!(
            common::instances(db, &journey, "d0").await.is_empty(),
            "{b}"
        );
        assert_eq!(common::instances(db, &journey, "d1").await.len(), 1, "{b}");
        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn timers_fired_through_the_log_come_after_the_events_published_before_them() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        let journey = publish(db, &checkout()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let start = |user: &str| {
            track(
                user,
                "checkout_started",
                &format!("{user}-start"),
                json!({"session_id": "s1"}),
            )
        };
        let users = ["buyer-1", "buyer-2", "idle-1", "idle-2"];
        for ack in front_b
            .submit(users.iter().map(|u| start(u)).collect())
            .await
        {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let mut hold_timers = Vec::new();
        for user in users {
            let instance = common::instances(db, &journey, user).await.remove(0);
            hold_timers.extend(common::timers(db, &instance.id).await);
        }
        assert_eq!(hold_timers.len(), users.len(), "{b}: one hold timer each");

        // The buyers' purchases are published before their timers: the owners apply them
        // first, so those timers find nothing to do, whichever node fires them.
        let purchases: Vec<Event> = ["buyer-1", "buyer-2"]
            .iter()
            .map(|u| {
                track(
                    u,
                    "purchase_completed",
                    &format!("{u}-buy"),
                    json!({"session_id": "s1"}),
                )
            })
            .collect();
        for ack in front_b.submit(purchases).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let outcomes = a.apply_timers(hold_timers.clone()).await.unwrap();
        let statuses: Vec<(String, TimerStatus)> = hold_timers
            .iter()
            .zip(&outcomes)
            .map(|(t, o)| (t.profile_id.clone(), o.status.clone()))
            .collect();
        for (profile, status) in &statuses {
            let expected = if profile.starts_with("buyer") {
                TimerStatus::Discarded
            } else {
                TimerStatus::Fired
            };
            assert_eq!(status, &expected, "{b}: {profile}");
        }
        // Fired again (a claim that lapsed): applied once all the same.
        let again = other.apply_timers(hold_timers.clone()).await.unwrap();
        assert_eq!(again.len(), hold_timers.len(), "{b}");
        for user in users {
            let expected = if user.starts_with("buyer") {
                "thanks"
            } else {
                "nudge"
            };
            assert_eq!(
                common::sent_steps(db, user).await,
                [expected],
                "{b}: {user}: buyers thanked, never nudged; idle checkouts nudged once"
            );
        }
        for user in users {
            let instance = common::instances(db, &journey, user).await.remove(0);
            assert!(
                common::timers(db, &instance.id).await.is_empty(),
                "{b}: {user}"
            );
        }

        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn audience_changes_reach_the_owner_of_the_profile_whichever_node_is_told() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        db.audiences()
            .insert("vip", "VIP", chrono::Utc::now())
            .await
            .unwrap();
        let log = log(&url).await;
        publish(db, &common::forwarding()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let users: Vec<String> = (0..8).map(|u| format!("z{u}")).collect();
        let order = |user: &str, n: u32| {
            track(
                user,
                "order_completed",
                &format!("{user}-o{n}"),
                json!({"plan": "pro", "order_id": format!("{user}-o{n}"), "total": 1}),
            )
        };
        // Not members yet: nothing is forwarded, and each owner keeps the profile in memory.
        for ack in front_a
            .submit(users.iter().map(|u| order(u, 1)).collect())
            .await
        {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        assert!(sends(db).await.is_empty(), "{b}");

        // An operator adds them (through node-a, whichever node owns them).
        db.audiences()
            .add_members("vip", &users, chrono::Utc::now())
            .await
            .unwrap();
        a.forget_profiles(&users).await;
        for ack in front_b
            .submit(users.iter().map(|u| order(u, 2)).collect())
            .await
        {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}");
        }
        let forwarded: BTreeSet<String> =
            sends(db).await.into_iter().map(|s| s.profile_id).collect();
        assert_eq!(
            forwarded,
            users.iter().cloned().collect::<BTreeSet<_>>(),
            "{b}: every owner saw the new members"
        );

        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

/// The first `<prefix><n>` whose partition node `a` holds (`held`) or not.
fn id_on(held_by_a: &[u32], held: bool, prefix: &str) -> String {
    (0..)
        .map(|n| format!("{prefix}{n}"))
        .find(|id| held_by_a.contains(&partition_of(id, PARTITIONS)) == held)
        .unwrap()
}

#[tokio::test]
async fn a_link_moves_the_anonymous_checkout_to_the_owner_of_the_users_partition() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        publish(db, &checkout()).await;
        let ((a, front_a), (other, front_b)) = two_nodes(db, &log).await;
        let held_by_a = a.held_partition_ids().unwrap_or_default();
        // The anonymous id's partition on node-a, the user's on node-b.
        let anon = id_on(&held_by_a, true, "anon-");
        let user = id_on(&held_by_a, false, "user-");
        let anonymous = |mut event: Event| {
            event.user_id = None;
            event.anonymous_id = Some(anon.clone());
            event
        };
        let accepted = |acks: Vec<journeys_engine::Ack>| {
            for ack in acks {
                assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
            }
        };
        accepted(
            front_b
                .submit(vec![
                    anonymous(identify("x", "a-1", json!({"email": "ann@example.com"}))),
                    anonymous(track(
                        "x",
                        "checkout_started",
                        "a-2",
                        json!({"session_id": "s1"}),
                    )),
                ])
                .await,
        );
        // Logs in and buys in one call: the purchase follows the link through the anonymous
        // id's owner, so it is applied after the merge.
        let mut login = identify(&user, "u-1", json!({"name": "Ann"}));
        login.anonymous_id = Some(anon.clone());
        let purchase = track(
            &user,
            "purchase_completed",
            "u-2",
            json!({"session_id": "s1"}),
        );
        accepted(front_b.submit(vec![login, purchase]).await);
        eventually("the thanks send of the user", WAIT, async || {
            (sent_steps(db, &user).await == ["thanks"]).then_some(())
        })
        .await;
        let links = db.identities().of_profile(&user).await.unwrap();
        assert_eq!(links.len(), 1, "{b}: {links:?}");
        assert_eq!(links[0].identity, anon, "{b}");
        assert!(links[0].merged_at.is_some(), "{b}: merged");
        let traits = db.profiles().get(&user).await.unwrap().traits;
        assert_eq!(
            serde_json::Value::Object(traits),
            json!({"email": "ann@example.com", "name": "Ann"}),
            "{b}"
        );
        // An event with the anonymous id alone, through either front, reaches the user.
        accepted(
            front_a
                .submit(vec![anonymous(track(
                    "x",
                    "checkout_started",
                    "a-3",
                    json!({"session_id": "s2"}),
                ))])
                .await,
        );
        eventually(
            "the second checkout on the user's profile",
            WAIT,
            async || {
                let active = db
                    .batches()
                    .load_profiles(std::slice::from_ref(&user))
                    .await
                    .unwrap()
                    .remove(&user)
                    .unwrap_or_default()
                    .active_instances;
                (active.len() == 1).then_some(())
            },
        )
        .await;
        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn a_merged_instance_of_a_journey_published_since_the_owners_last_poll_takes_its_branch() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        // Neither node polls during the test: node-b loads its journeys once, before the
        // journey exists; node-a is told of the publish (as the node whose API published it).
        let ((a, front_a), (other, front_b), held_by_a) =
            two_nodes_told_of_a_publish(db, &log, &checkout()).await;
        let anon = id_on(&held_by_a, true, "anon-");
        let user = id_on(&held_by_a, false, "user-");
        let mut started = track("x", "checkout_started", "a-1", json!({"session_id": "s1"}));
        started.user_id = None;
        started.anonymous_id = Some(anon.clone());
        for ack in front_a.submit(vec![started]).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
        }
        // The checkout waits on node-a; the login moves it to the user's owner, node-b, whose
        // cache has never seen its journey: the purchase must still take the branch.
        let mut login = identify(&user, "u-1", json!({}));
        login.anonymous_id = Some(anon.clone());
        for ack in front_a.submit(vec![login]).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
        }
        let purchase = track(
            &user,
            "purchase_completed",
            "u-2",
            json!({"session_id": "s1"}),
        );
        for ack in front_b.submit(vec![purchase]).await {
            assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
        }
        eventually("the thanks send of the user", WAIT, async || {
            (sent_steps(db, &user).await == ["thanks"]).then_some(())
        })
        .await;
        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}

#[tokio::test]
async fn an_event_acknowledged_after_a_publish_through_another_node_enters_the_journey() {
    let Some(url) = nats_url() else { return };
    each_backend(async |db| {
        let b = db.backend();
        let log = log(&url).await;
        let ((a, front_a), (other, front_b), held_by_a) =
            two_nodes_told_of_a_publish(db, &log, &forwarding()).await;
        // Orders of profiles node-b applies, sent through either front once the publish
        // returned: each enters the journey.
        let users: Vec<String> = (0..)
            .map(|n| format!("u{n}"))
            .filter(|id| !held_by_a.contains(&partition_of(id, PARTITIONS)))
            .take(4)
            .collect();
        for (n, user) in users.iter().enumerate() {
            let front = if n % 2 == 0 { &front_a } else { &front_b };
            for ack in front.submit(vec![order(user, 0)]).await {
                assert_eq!(ack.status, AckStatus::Accepted, "{b}: {ack:?}");
            }
        }
        for user in &users {
            eventually("the order forwarded", WAIT, async || {
                (sent_steps(db, user).await == ["forward"]).then_some(())
            })
            .await;
        }
        stop(vec![(a, front_a), (other, front_b)], log).await;
    })
    .await;
}
