//! Partition owners on every configured backend (SCALE-OUT.md §1–2): a node applies only the
//! partitions it holds, a commit under a lost epoch changes nothing, a node that loses its
//! lease stops applying within the lease, two nodes split the partitions without overlap,
//! operator exits go through the owner's memory, and a restarted owner recovers every
//! partition from the store.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{checkout, engine_with, instances, owner, sent_steps};
use journeys_core::machine::ExitReason;
use journeys_engine::{AckStatus, Engine, EngineConfig, TerminateOutcome};
use journeys_store::{InstanceState, Store};
use journeys_testkit::journeys::publish;
use journeys_testkit::{each_backend, eventually, track};
use serde_json::json;

const PARTITIONS: u32 = 8;
const WAIT: Duration = Duration::from_secs(10);

async fn node(store: &Store, node_id: &str) -> Engine {
    engine_with(
        store,
        EngineConfig {
            lanes: 2,
            partitions: PARTITIONS,
            owner: Some(owner(node_id)),
            ..EngineConfig::default()
        },
    )
    .await
}

fn checkout_started(user: &str, message_id: &str) -> journeys_core::model::Event {
    track(
        user,
        "checkout_started",
        message_id,
        json!({"session_id": "s1"}),
    )
}

fn purchase(user: &str, message_id: &str) -> journeys_core::model::Event {
    track(
        user,
        "purchase_completed",
        message_id,
        json!({"session_id": "s1"}),
    )
}

async fn seen(store: &Store, message_id: &str) -> bool {
    let since = Utc::now() - chrono::Duration::hours(1);
    store
        .batches()
        .seen_message_ids(&[message_id.to_owned()], since)
        .await
        .unwrap()
        .contains(message_id)
}

fn all_partitions() -> Vec<u32> {
    (0..PARTITIONS).collect()
}

#[tokio::test]
async fn a_node_whose_partitions_were_taken_is_fenced_and_stops_applying() {
    each_backend(async |db| {
        let b = db.backend();
        publish(db, &checkout()).await;
        let a = node(db, "a").await;
        assert_eq!(a.held_partitions(), 8, "{b}: one node owns every partition");
        let acks = a.submit(vec![checkout_started("u1", "m1")]).await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");

        // Another node takes every partition behind this one's back (as after this node was
        // paused past its lease): the store moves to a new epoch at once.
        db.partitions()
            .release("a", &all_partitions())
            .await
            .unwrap();
        db.partitions()
            .acquire("thief", &all_partitions(), Duration::from_secs(60))
            .await
            .unwrap();

        // The next commit is fenced: refused as retryable, and nothing of it is stored.
        let acks = a.submit(vec![purchase("u1", "m2")]).await;
        assert!(
            matches!(&acks[0].status, AckStatus::Rejected { code, .. } if code == "unavailable"),
            "{b}: {acks:?}"
        );
        assert!(!seen(db, "m2").await, "{b}: a fenced batch wrote nothing");
        assert_eq!(sent_steps(db, "u1").await, Vec::<String>::new(), "{b}");

        // Within the lease, the node knows it holds nothing and applies nothing.
        eventually("the node to drop its partitions", WAIT, async || {
            (a.held_partitions() == 0).then_some(())
        })
        .await;
        let acks = a.submit(vec![purchase("u1", "m2")]).await;
        assert!(
            matches!(&acks[0].status, AckStatus::Rejected { code, .. } if code == "unavailable"),
            "{b}: {acks:?}"
        );

        // Once the other node lets go, this one takes the partitions back (at a new epoch,
        // reading the profile from the store again) and the resent event applies.
        db.partitions()
            .release("thief", &all_partitions())
            .await
            .unwrap();
        eventually("the node to take its partitions back", WAIT, async || {
            (a.held_partitions() == 8).then_some(())
        })
        .await;
        let acks = a.submit(vec![purchase("u1", "m2")]).await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");
        assert_eq!(sent_steps(db, "u1").await, ["thanks"], "{b}");
        a.shutdown().await;
        let rows = db.partitions().all().await.unwrap();
        assert!(
            rows.iter().all(|r| r.owner.is_none()),
            "{b}: a node shutting down releases its partitions: {rows:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn two_nodes_split_the_partitions_and_each_event_applies_once() {
    each_backend(async |db| {
        let b = db.backend();
        publish(db, &checkout()).await;
        let a = node(db, "a").await;
        let second = node(db, "b").await;
        eventually("the partitions to be split", WAIT, async || {
            let (x, y) = (a.held_partitions(), second.held_partitions());
            (x > 0 && y > 0 && x + y == 8).then_some(())
        })
        .await;
        let rows = db.partitions().all().await.unwrap();
        assert!(
            rows.iter().all(|r| r.owner.is_some()),
            "{b}: every partition has one owner: {rows:?}"
        );

        // Every event offered to both nodes is applied by exactly one: its partition's owner.
        let n = 40;
        let mut accepted = 0;
        for i in 0..n {
            let event = checkout_started(&format!("u{i}"), &format!("c{i}"));
            let by_a = a.submit(vec![event.clone()]).await.remove(0).status;
            let by_b = second.submit(vec![event]).await.remove(0).status;
            let taken = [&by_a, &by_b]
                .iter()
                .filter(|s| ***s == AckStatus::Accepted)
                .count();
            assert_eq!(taken, 1, "{b}: u{i}: {by_a:?} / {by_b:?}");
            accepted += taken;
        }
        assert_eq!(accepted, n, "{b}");

        // A node leaving hands its partitions over well within the lease.
        second.shutdown().await;
        eventually("the remaining node to own everything", WAIT, async || {
            (a.held_partitions() == 8).then_some(())
        })
        .await;
        for i in 0..n {
            let acks = a
                .submit(vec![purchase(&format!("u{i}"), &format!("p{i}"))])
                .await;
            assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");
            assert_eq!(sent_steps(db, &format!("u{i}")).await, ["thanks"], "{b}");
        }
        a.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn operator_exits_reach_instances_the_owner_holds_in_memory() {
    each_backend(async |db| {
        let b = db.backend();
        let journey = publish(db, &checkout()).await;
        let a = node(db, "a").await;
        a.submit(vec![checkout_started("u1", "c1")]).await;
        let waiting = instances(db, &journey, "u1").await.remove(0);
        assert_eq!(waiting.state, InstanceState::Active);
        let outcome = a
            .terminate_instance(&waiting.id, ExitReason::Operator)
            .await
            .unwrap();
        assert_eq!(outcome, TerminateOutcome::Exited, "{b}");
        // The owner's memory knows: the purchase finds nothing waiting, and a new checkout
        // of the same session may enter again.
        a.submit(vec![purchase("u1", "p1")]).await;
        assert_eq!(sent_steps(db, "u1").await, Vec::<String>::new(), "{b}");
        let acks = a.submit(vec![checkout_started("u1", "c2")]).await;
        assert_eq!(acks[0].status, AckStatus::Accepted, "{b}");
        let all = instances(db, &journey, "u1").await;
        assert_eq!(all.len(), 2, "{b}: {all:?}");
        a.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_restarted_owner_recovers_every_partition_from_the_store() {
    each_backend(async |db| {
        let b = db.backend();
        let journey = publish(db, &checkout()).await;
        let first = node(db, "a").await;
        let events = (0..20)
            .map(|i| checkout_started(&format!("u{i}"), &format!("c{i}")))
            .collect();
        assert!(
            first
                .submit(events)
                .await
                .iter()
                .all(|a| a.status == AckStatus::Accepted)
        );
        let epochs: Vec<i64> = db
            .partitions()
            .all()
            .await
            .unwrap()
            .iter()
            .map(|r| r.epoch)
            .collect();
        // The next incarnation of the node (same node id) takes every partition at a new epoch,
        // with nothing in memory. (After a crash it takes them over at once too, even though
        // the dead incarnation still holds the leases: services/journeys/tests/crash.rs.)
        first.shutdown().await;
        let again = node(db, "a").await;
        assert_eq!(again.held_partitions(), 8, "{b}");
        let rows = db.partitions().all().await.unwrap();
        for (row, before) in rows.iter().zip(epochs) {
            assert!(row.epoch > before, "{b}: partition {} epoch", row.partition);
        }
        // The state written by the first incarnation is all there: each purchase matches.
        let purchases = (0..20)
            .map(|i| purchase(&format!("u{i}"), &format!("p{i}")))
            .collect();
        again.submit(purchases).await;
        for i in 0..20 {
            let user = format!("u{i}");
            assert_eq!(sent_steps(db, &user).await, ["thanks"], "{b}: {user}");
            let states: Vec<InstanceState> = instances(db, &journey, &user)
                .await
                .iter()
                .map(|r| r.state)
                .collect();
            assert_eq!(states, [InstanceState::Completed], "{b}: {user}");
        }
        // A message id the first incarnation applied is still a duplicate.
        let acks = again.submit(vec![checkout_started("u0", "c0")]).await;
        assert_eq!(acks[0].status, AckStatus::Duplicate, "{b}");
        again.shutdown().await;
    })
    .await;
}
