//! Partition ownership on every configured backend: leases, epochs, heartbeats and the epoch
//! fence in front of a batch commit.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::time::Duration;

use chrono::Utc;
use journeys_core::partition::partition_of;
use journeys_store::{Changes, Held, StoreError, TimerRecord};
use journeys_testkit::each_backend;

const LONG: Duration = Duration::from_secs(60);

fn dedupe(message_id: &str) -> Changes {
    Changes {
        dedupe: vec![(message_id.to_owned(), Utc::now())],
        ..Changes::default()
    }
}

#[tokio::test]
async fn a_live_lease_keeps_other_nodes_out_and_a_released_one_does_not() {
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.ensure(8).await.unwrap();
        parts.ensure(8).await.unwrap();
        assert_eq!(parts.all().await.unwrap().len(), 8, "{b}");
        let err = parts.ensure(4).await.unwrap_err();
        assert!(
            err.to_string().contains("set up with 8 partitions"),
            "{b}: {err}"
        );

        assert_eq!(parts.acquire("a", &[0, 1, 2], LONG).await.unwrap(), 3);
        assert_eq!(
            parts.acquire("b", &[1, 2, 3], LONG).await.unwrap(),
            1,
            "{b}: only the free one"
        );
        let held_a = parts.held_by("a").await.unwrap();
        assert_eq!(
            held_a,
            (0..3)
                .map(|partition| Held {
                    partition,
                    epoch: 1
                })
                .collect::<Vec<_>>()
        );
        assert_eq!(
            parts.held_by("b").await.unwrap(),
            vec![Held {
                partition: 3,
                epoch: 1
            }]
        );
        // Renewing counts only what is still held at that epoch.
        assert_eq!(parts.renew("a", &held_a, LONG).await.unwrap(), 3, "{b}");
        let stale = [Held {
            partition: 3,
            epoch: 1,
        }];
        assert_eq!(parts.renew("a", &stale, LONG).await.unwrap(), 0, "{b}");

        // A graceful release hands over at once, at a higher epoch.
        assert_eq!(parts.release("a", &[2]).await.unwrap(), 1);
        assert_eq!(parts.acquire("b", &[2], LONG).await.unwrap(), 1);
        let held_b = parts.held_by("b").await.unwrap();
        assert!(
            held_b.contains(&Held {
                partition: 2,
                epoch: 2
            }),
            "{b}: {held_b:?}"
        );
        // Re-acquiring one's own partition (a restarted node with the same id) raises the epoch.
        assert_eq!(parts.acquire("a", &[0], LONG).await.unwrap(), 1);
        assert!(parts.held_by("a").await.unwrap().contains(&Held {
            partition: 0,
            epoch: 2
        }));
    })
    .await;
}

#[tokio::test]
async fn a_lease_that_ran_out_can_be_taken_and_the_old_owner_is_fenced() {
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.ensure(4).await.unwrap();
        parts
            .acquire("old", &[1], Duration::from_millis(200))
            .await
            .unwrap();
        let old = parts.held_by("old").await.unwrap();
        assert_eq!(old.len(), 1);
        // While the lease runs, the old owner commits.
        db.batches()
            .commit_fenced(&dedupe("m-before"), &old)
            .await
            .unwrap();
        assert_eq!(parts.acquire("new", &[1], LONG).await.unwrap(), 0, "{b}");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(parts.held_by("old").await.unwrap().is_empty(), "{b}");
        assert_eq!(parts.acquire("new", &[1], LONG).await.unwrap(), 1, "{b}");
        let new = parts.held_by("new").await.unwrap();
        assert_eq!(new[0].epoch, old[0].epoch + 1);

        // The old owner (paused past its lease) tries to commit: refused, nothing written.
        let err = db
            .batches()
            .commit_fenced(&dedupe("m-stale"), &old)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{b}: {err:?}");
        let since = Utc::now() - chrono::Duration::hours(1);
        let seen = db
            .batches()
            .seen_message_ids(&["m-before".into(), "m-stale".into()], since)
            .await
            .unwrap();
        assert!(seen.contains("m-before"), "{b}");
        assert!(
            !seen.contains("m-stale"),
            "{b}: a fenced batch wrote nothing"
        );

        // A batch spanning a held and a lost partition is refused as a whole.
        parts.acquire("old", &[2], LONG).await.unwrap();
        let mut mixed = parts.held_by("old").await.unwrap();
        mixed.extend(old.iter().copied());
        let err = db
            .batches()
            .commit_fenced(&dedupe("m-mixed"), &mixed)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{b}: {err:?}");

        // The new owner commits, and each fenced commit moves the partition's sequence on.
        db.batches()
            .commit_fenced(&dedupe("m-new"), &new)
            .await
            .unwrap();
        let row = &parts.all().await.unwrap()[1];
        assert_eq!(row.owner.as_deref(), Some("new"));
        assert_eq!(row.last_seq, 2, "{b}: one commit by each epoch");
    })
    .await;
}

#[tokio::test]
async fn a_logged_commit_records_each_partitions_log_sequence_with_its_effects() {
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.ensure(4).await.unwrap();
        parts.acquire("n1", &[0, 1, 2], LONG).await.unwrap();
        let held = parts.held_by("n1").await.unwrap();
        assert_eq!(held.len(), 3, "{b}");
        // Effects of entries 17 (partition 0) and 42 (partition 2); partition 1 is fenced but
        // read nothing, so it keeps its sequence.
        db.batches()
            .commit_logged(&dedupe("m-logged"), &held, &[(0, 17), (2, 42)])
            .await
            .unwrap();
        let seqs = |rows: Vec<journeys_store::PartitionRecord>| {
            rows.iter().map(|r| r.log_seq).collect::<Vec<_>>()
        };
        assert_eq!(seqs(parts.all().await.unwrap()), vec![17, 0, 42, 0], "{b}");
        // Progress alone: an entry without effects.
        db.batches()
            .commit_logged(&Changes::default(), &held[..1], &[(0, 18)])
            .await
            .unwrap();
        assert_eq!(seqs(parts.all().await.unwrap()), vec![18, 0, 42, 0], "{b}");
        // A fenced logged commit records neither effects nor progress.
        parts.release("n1", &[2]).await.unwrap();
        parts.acquire("n2", &[2], LONG).await.unwrap();
        let err = db
            .batches()
            .commit_logged(&dedupe("m-late"), &held[2..], &[(2, 99)])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{b}: {err:?}");
        assert_eq!(seqs(parts.all().await.unwrap()), vec![18, 0, 42, 0], "{b}");
        let since = Utc::now() - chrono::Duration::hours(1);
        let seen = db
            .batches()
            .seen_message_ids(&["m-logged".into(), "m-late".into()], since)
            .await
            .unwrap();
        assert_eq!(seen.len(), 1, "{b}: only the held commit wrote");
    })
    .await;
}

#[tokio::test]
async fn live_nodes_are_those_with_a_recent_heartbeat() {
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.heartbeat("n1").await.unwrap();
        parts.heartbeat("n2").await.unwrap();
        parts.heartbeat("n1").await.unwrap();
        assert_eq!(
            parts.live_nodes(Duration::from_secs(2)).await.unwrap(),
            vec!["n1".to_owned(), "n2".to_owned()],
            "{b}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        parts.heartbeat("n2").await.unwrap();
        assert_eq!(
            parts.live_nodes(Duration::from_millis(200)).await.unwrap(),
            vec!["n2".to_owned()],
            "{b}"
        );
        parts.forget_node("n2").await.unwrap();
        assert_eq!(
            parts.live_nodes(Duration::from_secs(2)).await.unwrap(),
            vec!["n1".to_owned()],
            "{b}: a node that left is not live"
        );
    })
    .await;
}

#[tokio::test]
async fn nodes_lists_recent_leased_and_owning_nodes_on_the_database_clock() {
    each_backend(async |db| {
        let b = db.backend();
        let parts = db.partitions();
        parts.ensure(2).await.unwrap();
        let before = parts.now().await.unwrap();
        parts.heartbeat("idle").await.unwrap();
        parts.heartbeat("owner").await.unwrap();
        parts
            .acquire("owner", &[1], Duration::from_secs(30))
            .await
            .unwrap();
        parts.heartbeat("gone").await.unwrap();
        parts.forget_node("gone").await.unwrap();
        let after = parts.now().await.unwrap();

        let nodes = parts.nodes(Duration::from_secs(60)).await.unwrap();
        let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(
            ids,
            vec!["idle", "owner"],
            "{b}: a node that left is not listed"
        );
        for node in &nodes {
            assert!(
                (before - 1_000..=after + 1_000).contains(&node.heartbeat_at),
                "{b}: heartbeat {} outside [{before}, {after}]",
                node.heartbeat_at
            );
        }
        assert_eq!(nodes[0].lease_until, 0, "{b}: never leased");
        assert!(nodes[1].lease_until > after + 25_000_000, "{b}");

        // Past the window, only a node that is leased or owns a partition is still listed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let nodes = parts.nodes(Duration::from_millis(200)).await.unwrap();
        let ids: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert_eq!(ids, vec!["owner"], "{b}");

        let rows = parts.all().await.unwrap();
        assert_eq!(rows[0].committed_at, 0, "{b}: never committed");
    })
    .await;
}

fn timer(id: &str, profile_id: &str) -> TimerRecord {
    TimerRecord {
        id: id.to_owned(),
        instance_id: format!("i-{id}"),
        profile_id: profile_id.to_owned(),
        journey_id: "j".into(),
        due_at: Utc::now(),
        kind: "delay".into(),
        step_key: "wait".into(),
    }
}

#[tokio::test]
async fn an_owner_claims_only_the_timers_of_its_partitions() {
    each_backend(async |db| {
        let b = db.backend();
        // Two profiles in different partitions of 8.
        let (u1, u2) = ("user-1", "user-2");
        assert_ne!(partition_of(u1, 8), partition_of(u2, 8));
        db.batches()
            .commit(&Changes {
                partitions: 8,
                timers_new: vec![timer("t1", u1), timer("t2", u2)],
                ..Changes::default()
            })
            .await
            .unwrap();
        // A timer written without partitions (before the migration) is anyone's.
        db.batches()
            .commit(&Changes {
                timers_new: vec![timer("t0", "user-0")],
                ..Changes::default()
            })
            .await
            .unwrap();
        let until = Utc::now() + chrono::Duration::minutes(1);
        let lease = Utc::now() + chrono::Duration::minutes(1);
        let timers = db.timers();
        assert!(
            timers
                .claim_due_in(until, 10, lease, Some(&[]))
                .await
                .unwrap()
                .is_empty(),
            "{b}: no partitions, no timers"
        );
        let mine: Vec<String> = timers
            .claim_due_in(until, 10, lease, Some(&[partition_of(u1, 8)]))
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        let mut mine = mine;
        mine.sort();
        assert_eq!(mine, ["t0", "t1"], "{b}");
        let rest: Vec<String> = timers
            .claim_due_in(until, 10, lease, None)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(rest, ["t2"], "{b}");
    })
    .await;
}

/// Lanes commit different partitions at the same time: a commit fenced on some partitions must
/// not wait for another open commit that holds the fence of others (MySQL and MariaDB would
/// scan and lock the whole small table for a long `IN` list unless told to use the key).
#[tokio::test]
async fn a_fenced_commit_waits_only_for_its_own_partitions() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    each_backend(async |db| {
        let b = db.backend();
        if !db.url().starts_with("mysql") {
            // SQLite has one writer: commits are serial whatever they lock.
            return;
        }
        let parts = db.partitions();
        parts.ensure(64).await.unwrap();
        let all: Vec<u32> = (0..64).collect();
        parts.acquire("a", &all, LONG).await.unwrap();
        let held = parts.held_by("a").await.unwrap();
        assert_eq!(held.len(), 64, "{b}");

        // Another lane's commit is open, holding partition 0's fence.
        let other = Database::connect(db.url()).await.unwrap();
        let open = other.begin().await.unwrap();
        open.execute_unprepared(
            "UPDATE partition_state SET last_seq = last_seq + 1 WHERE partition_id = 0",
        )
        .await
        .unwrap();

        // This lane's partitions: a quarter of them, not partition 0.
        let mine: Vec<Held> = held
            .iter()
            .copied()
            .filter(|h| h.partition % 4 == 1)
            .collect();
        let committed = tokio::time::timeout(
            Duration::from_secs(10),
            db.batches().commit_fenced(&dedupe("m-lane-1"), &mine),
        )
        .await;
        open.rollback().await.unwrap();
        other.close().await.unwrap();
        assert!(
            matches!(committed, Ok(Ok(()))),
            "{b}: the commit waited for another partition's open commit: {committed:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn taking_over_skips_rows_a_paused_commit_holds() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    each_backend(async |db| {
        let b = db.backend();
        if !db.url().starts_with("mysql") {
            // SQLite has one writer and one process: no commit can be left open by another.
            return;
        }
        let parts = db.partitions();
        parts.ensure(4).await.unwrap();
        parts
            .acquire("old", &[0, 1], Duration::from_millis(200))
            .await
            .unwrap();

        // The old owner's commit ran its fence on partition 0, then its process stopped.
        let paused = Database::connect(db.url()).await.unwrap();
        let open = paused.begin().await.unwrap();
        open.execute_unprepared(
            "UPDATE partition_state SET last_seq = last_seq + 1 WHERE partition_id = 0",
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;

        // Another node takes what it can at once (partition 1), not waiting for the lock on 0.
        let took =
            tokio::time::timeout(Duration::from_secs(5), parts.acquire("new", &[0, 1], LONG)).await;
        assert!(
            matches!(took, Ok(Ok(1))),
            "{b}: the take-over waited for the paused commit: {took:?}"
        );
        let new = parts.held_by("new").await.unwrap();
        assert_eq!(new.iter().map(|h| h.partition).collect::<Vec<_>>(), [1]);

        // Once that transaction ends, partition 0 is taken too.
        open.rollback().await.unwrap();
        assert_eq!(parts.acquire("new", &[0, 1], LONG).await.unwrap(), 2, "{b}");
        assert_eq!(parts.held_by("new").await.unwrap().len(), 2, "{b}");
        paused.close().await.unwrap();
    })
    .await;
}
