//! Claiming timers and outbox rows with leases, and the outbox's retry / dead-letter / replay
//! cycle, on every configured backend.

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

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;
use tokio::sync::Barrier;

use journeys_store::{
    Backend, Changes, OutboxRecord, OutboxStatus, PurgePace, Store, StoreError, TimerRecord,
};
use journeys_testkit::each_backend;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn timer(instance: &str, due_at: DateTime<Utc>) -> TimerRecord {
    TimerRecord {
        id: journeys_store::new_id(),
        instance_id: instance.into(),
        profile_id: "u1".into(),
        journey_id: "j1".into(),
        due_at,
        kind: "delay".into(),
        step_key: "wait".into(),
    }
}

fn send(destination: &str, journey: &str, at: DateTime<Utc>) -> OutboxRecord {
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: "i1".into(),
        profile_id: "u1".into(),
        journey_id: journey.into(),
        step_key: "notify".into(),
        destination_id: destination.into(),
        message_id: journeys_store::new_id(),
        method: "PUT".into(),
        path: "/v1/users/u1".into(),
        payload: json!({"n": 1}),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: at,
        last_error: None,
        traceparent: None,
        created_at: at,
        sent_at: None,
        dead_at: None,
    }
}

async fn add_timers(store: &Store, timers: Vec<TimerRecord>) {
    store
        .batches()
        .commit(&Changes {
            timers_new: timers,
            ..Changes::default()
        })
        .await
        .unwrap();
}

async fn add_sends(store: &Store, sends: Vec<OutboxRecord>) {
    store
        .batches()
        .commit(&Changes {
            outbox_new: sends,
            ..Changes::default()
        })
        .await
        .unwrap();
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    rows.iter().map(|r| id(r).to_owned()).collect()
}

#[tokio::test]
async fn timers_are_claimed_in_due_order_and_leases_hold() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let t1 = timer("i1", t - Duration::seconds(3));
        let t2 = timer("i1", t - Duration::seconds(2));
        let t3 = timer("i2", t - Duration::seconds(1));
        let later = timer("i2", t + Duration::seconds(2));
        let far = timer("i3", t + Duration::hours(1));
        add_timers(
            db,
            vec![
                later.clone(),
                t3.clone(),
                far.clone(),
                t1.clone(),
                t2.clone(),
            ],
        )
        .await;

        let lease = t + Duration::minutes(1);
        let claimed = db.timers().claim_due(t, 2, lease).await.unwrap();
        assert_eq!(claimed, [t1.clone(), t2.clone()], "{b}");
        // Leased timers are skipped; `until` may look ahead.
        let claimed = db
            .timers()
            .claim_due(t + Duration::seconds(5), 10, lease)
            .await
            .unwrap();
        assert_eq!(claimed, [t3.clone(), later.clone()], "{b}");
        assert!(
            db.timers()
                .claim_due(t, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(
            db.timers().claim_due(t, 0, lease).await.unwrap().is_empty(),
            "{b}"
        );

        // Released timers come back at once.
        db.timers()
            .release(std::slice::from_ref(&t2.id))
            .await
            .unwrap();
        assert_eq!(
            db.timers().claim_due(t, 10, lease).await.unwrap(),
            vec![t2.clone()],
            "{b}"
        );

        // An expired lease is as good as none.
        let expired = t - Duration::seconds(1);
        assert_eq!(
            db.timers()
                .claim_due(t + Duration::hours(2), 10, expired)
                .await
                .unwrap(),
            vec![far.clone()],
            "{b}"
        );
        assert_eq!(
            db.timers()
                .claim_due(t + Duration::hours(2), 10, lease)
                .await
                .unwrap(),
            vec![far.clone()],
            "{b}"
        );

        assert_eq!(
            db.timers().get(&t1.id).await.unwrap(),
            Some(t1.clone()),
            "{b}"
        );
        assert_eq!(db.timers().get("missing").await.unwrap(), None, "{b}");
        assert_eq!(
            db.timers().list_for_instance("i1").await.unwrap(),
            [t1.clone(), t2.clone()],
            "{b}"
        );
        let stats = db.timers().stats(t).await.unwrap();
        assert_eq!(stats.pending, 5, "{b}");
        assert_eq!(stats.overdue, 3, "{b}");
        assert_eq!(stats.next_due_at, Some(t1.due_at), "{b}");

        // Firing deletes through a commit.
        db.batches()
            .commit(&Changes {
                timers_deleted: vec![t1.id.clone(), t2.id.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();
        assert!(
            db.timers()
                .list_for_instance("i1")
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        let stats = db.timers().stats(t).await.unwrap();
        assert_eq!((stats.pending, stats.overdue), (3, 1), "{b}");
    })
    .await;
}

/// Several schedulers claiming at once never share a timer, and together take them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_get_disjoint_timers() {
    const TIMERS: usize = 2000;
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let all: Vec<TimerRecord> = (0..TIMERS)
            .map(|n| {
                let ms = i64::try_from(n).unwrap();
                timer(&format!("i{n}"), t - Duration::milliseconds(ms))
            })
            .collect();
        add_timers(db, all.clone()).await;

        // Each MySQL claimer gets its own pool; SQLite allows one connection per database in a
        // process, so its claimers share the store. All connect first, then start together.
        let mut stores = Vec::new();
        for _ in 0..3 {
            stores.push(match b {
                Backend::MySql => Store::connect(db.url()).await.unwrap(),
                Backend::Sqlite => db.store().clone(),
            });
        }
        let start = Arc::new(Barrier::new(stores.len()));
        let mut claimers = Vec::new();
        for store in stores {
            let start = Arc::clone(&start);
            claimers.push(tokio::spawn(async move {
                start.wait().await;
                let mut mine = Vec::new();
                loop {
                    let lease = Utc::now() + Duration::minutes(5);
                    let batch = store
                        .timers()
                        .claim_due(Utc::now(), 25, lease)
                        .await
                        .unwrap();
                    if batch.is_empty() {
                        break mine;
                    }
                    mine.extend(batch.into_iter().map(|t| t.id));
                }
            }));
        }
        let mut union = HashSet::new();
        let mut sizes = Vec::new();
        for claimer in claimers {
            let mine = claimer.await.unwrap();
            sizes.push(mine.len());
            for id in mine {
                assert!(union.insert(id), "{b}: a timer was claimed twice");
            }
        }
        let expected: HashSet<String> = all.into_iter().map(|t| t.id).collect();
        assert_eq!(union, expected, "{b}: claims {sizes:?}");
    })
    .await;
}

#[tokio::test]
async fn outbox_claims_respect_due_time_and_leases() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let first = send("d1", "j1", t - Duration::seconds(2));
        let second = send("d1", "j1", t - Duration::seconds(1));
        let future = send("d1", "j1", t + Duration::minutes(1));
        let mut done = send("d1", "j1", t - Duration::seconds(5));
        done.status = OutboxStatus::Sent;
        add_sends(
            db,
            vec![future.clone(), second.clone(), first.clone(), done.clone()],
        )
        .await;

        assert_eq!(
            db.outbox().next_due_at().await.unwrap(),
            Some(first.next_attempt_at),
            "{b}"
        );
        let lease = t + Duration::seconds(30);
        let claimed = db.outbox().claim_due(t, 10, lease).await.unwrap();
        assert_eq!(
            ids(&claimed, |r| &r.id),
            [first.id.clone(), second.id.clone()],
            "{b}"
        );
        assert_eq!(claimed[0], first, "{b}");
        assert!(
            db.outbox()
                .claim_due(t, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        // Claims do not hide rows from the sleep calculation.
        assert_eq!(
            db.outbox().next_due_at().await.unwrap(),
            Some(first.next_attempt_at),
            "{b}"
        );
        // A dispatcher that died: its lease runs out and the rows are claimed again.
        let after_lease = lease + Duration::seconds(1);
        let reclaimed = db
            .outbox()
            .claim_due(after_lease, 1, after_lease + Duration::seconds(30))
            .await
            .unwrap();
        assert_eq!(ids(&reclaimed, |r| &r.id), vec![first.id.clone()], "{b}");

        db.outbox().mark_sent(&first.id, t).await.unwrap();
        let sent = db.outbox().get(&first.id).await.unwrap();
        assert_eq!(sent.status, OutboxStatus::Sent, "{b}");
        assert_eq!(sent.sent_at, Some(t), "{b}");
        assert_eq!(
            db.outbox().next_due_at().await.unwrap(),
            Some(second.next_attempt_at),
            "{b}"
        );
        assert!(matches!(
            db.outbox().mark_sent("missing", t).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            db.outbox().get("missing").await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn claims_of_a_dead_claimant_are_free_at_once_and_a_live_ones_are_not() {
    each_backend(async |db| {
        let b = db.backend();
        let outbox = db.outbox();
        let t = now();
        let rows: Vec<OutboxRecord> = (1..=3)
            .map(|i| send("d1", "j1", t - Duration::seconds(10 - i)))
            .collect();
        add_sends(db, rows.clone()).await;
        let all: Vec<String> = ids(&rows, |r| &r.id);
        // Claim leases of minutes, as the dispatcher takes them: only the claimant's lease
        // can free these rows sooner.
        let lease = t + Duration::minutes(2);
        let ttl = std::time::Duration::from_millis(300);

        outbox.lease_claimant("a", "node-a", ttl).await.unwrap();
        let claimed = outbox.claim_due_by(t, 10, lease, "a", &[]).await.unwrap();
        assert_eq!(ids(&claimed, |r| &r.id), all, "{b}");
        assert_eq!(
            outbox.claimed_by(&all[0]).await.unwrap().as_deref(),
            Some("a"),
            "{b}"
        );

        // While a's lease runs, nobody takes its rows, a itself included.
        outbox
            .lease_claimant("b", "node-b", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert!(
            outbox
                .claim_due_by(t, 10, lease, "b", &[])
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert!(
            outbox.claim_due(t, 10, lease).await.unwrap().is_empty(),
            "{b}"
        );
        assert!(
            outbox
                .claim_due_by(t, 10, lease, "a", &[])
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        // a stops renewing (killed): once its lease ran out, its rows are b's at once, long
        // before their two-minute claim lease.
        tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
        let taken = outbox.claim_due_by(t, 10, lease, "b", &[]).await.unwrap();
        assert_eq!(ids(&taken, |r| &r.id), all, "{b}");
        assert_eq!(
            outbox.claimed_by(&all[0]).await.unwrap().as_deref(),
            Some("b"),
            "{b}"
        );
        // b is live: nobody else gets them.
        assert!(
            outbox.claim_due(t, 10, lease).await.unwrap().is_empty(),
            "{b}"
        );

        // A mark clears the claim and its claimant.
        outbox.mark_sent(&all[0], t).await.unwrap();
        assert_eq!(outbox.claimed_by(&all[0]).await.unwrap(), None, "{b}");

        // b stops cleanly: what it still claims is free for anyone at once, its row is gone,
        // and a sent row stays sent.
        assert_eq!(outbox.retire_claimant("b").await.unwrap(), 2, "{b}");
        assert_eq!(outbox.claimed_by(&all[1]).await.unwrap(), None, "{b}");
        let free = outbox.claim_due(t, 10, lease).await.unwrap();
        assert_eq!(ids(&free, |r| &r.id), all[1..].to_vec(), "{b}");
        assert_eq!(
            outbox.get(&all[0]).await.unwrap().status,
            OutboxStatus::Sent,
            "{b}"
        );

        // A claim naming a claimant whose row is gone (purged after its lease lapsed) is free.
        let late = send("d1", "j1", t);
        add_sends(db, vec![late.clone()]).await;
        outbox.lease_claimant("c", "node-c", ttl).await.unwrap();
        let by_c = outbox.claim_due_by(t, 10, lease, "c", &[]).await.unwrap();
        assert_eq!(ids(&by_c, |r| &r.id), vec![late.id.clone()], "{b}");
        assert_eq!(
            outbox
                .purge_claimants(std::time::Duration::from_secs(60))
                .await
                .unwrap(),
            0,
            "{b}: a lease that just lapsed (or still runs) is kept"
        );
        tokio::time::sleep(ttl + std::time::Duration::from_millis(200)).await;
        assert!(
            outbox
                .purge_claimants(std::time::Duration::ZERO)
                .await
                .unwrap()
                >= 1,
            "{b}"
        );
        outbox
            .lease_claimant("d", "node-d", std::time::Duration::from_secs(60))
            .await
            .unwrap();
        let taken = outbox.claim_due_by(t, 10, lease, "d", &[]).await.unwrap();
        assert_eq!(ids(&taken, |r| &r.id), vec![late.id.clone()], "{b}");
    })
    .await;
}

#[tokio::test]
async fn retry_dead_letter_and_replay() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let row = send("d1", "j1", t);
        add_sends(db, vec![row.clone()]).await;
        let lease = t + Duration::seconds(30);

        assert_eq!(
            db.outbox().claim_due(t, 10, lease).await.unwrap().len(),
            1,
            "{b}"
        );
        let retry_at = t + Duration::seconds(2);
        db.outbox()
            .schedule_retry(&row.id, 1, retry_at, "HTTP 503")
            .await
            .unwrap();
        let stored = db.outbox().get(&row.id).await.unwrap();
        assert_eq!(stored.status, OutboxStatus::Pending, "{b}");
        assert_eq!(
            (stored.attempts, stored.next_attempt_at),
            (1, retry_at),
            "{b}"
        );
        assert_eq!(stored.last_error.as_deref(), Some("HTTP 503"), "{b}");
        // Not due yet; due (and unclaimed) at the retry time.
        assert!(
            db.outbox()
                .claim_due(t, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        let again = db.outbox().claim_due(retry_at, 10, lease).await.unwrap();
        assert_eq!(again.len(), 1, "{b}");
        assert_eq!(again[0].attempts, 1, "{b}");

        let dead_at = t + Duration::seconds(3);
        db.outbox()
            .mark_dead(&row.id, 2, "HTTP 400: bad request", dead_at)
            .await
            .unwrap();
        let dead = db.outbox().get(&row.id).await.unwrap();
        assert_eq!(dead.status, OutboxStatus::Dead, "{b}");
        assert_eq!(dead.dead_at, Some(dead_at), "{b}");
        assert_eq!(dead.attempts, 2, "{b}");
        assert_eq!(db.outbox().next_due_at().await.unwrap(), None, "{b}");
        assert!(
            db.outbox()
                .claim_due(t + Duration::hours(1), 10, t + Duration::hours(2))
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        let replay_at = t + Duration::seconds(10);
        let n = db
            .outbox()
            .replay(&[row.id.clone(), "missing".into()], replay_at)
            .await
            .unwrap();
        assert_eq!(n, 1, "{b}");
        let replayed = db.outbox().get(&row.id).await.unwrap();
        assert_eq!(replayed.status, OutboxStatus::Pending, "{b}");
        assert_eq!(
            (replayed.attempts, replayed.next_attempt_at),
            (0, replay_at),
            "{b}"
        );
        assert_eq!(
            replayed.last_error.as_deref(),
            Some("HTTP 400: bad request"),
            "{b}"
        );
        assert_eq!(replayed.dead_at, None, "{b}");
        // Replaying a row that is not dead changes nothing.
        assert_eq!(
            db.outbox()
                .replay(std::slice::from_ref(&row.id), replay_at)
                .await
                .unwrap(),
            0,
            "{b}"
        );
        let claimed = db.outbox().claim_due(replay_at, 10, lease).await.unwrap();
        assert_eq!(ids(&claimed, |r| &r.id), vec![row.id.clone()], "{b}");
    })
    .await;
}

#[tokio::test]
async fn list_dead_filters_and_pages() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let rows: Vec<OutboxRecord> = [
            ("d1", "j1"),
            ("d2", "j1"),
            ("d1", "j2"),
            ("d1", "j1"),
            ("d1", "j1"),
            ("d2", "j2"),
        ]
        .iter()
        .map(|(d, j)| send(d, j, t))
        .collect();
        add_sends(db, rows.clone()).await;
        // All but the last become dead letters.
        for row in &rows[..5] {
            db.outbox().mark_dead(&row.id, 3, "boom", t).await.unwrap();
        }
        let list = |destination: Option<&'static str>, journey: Option<&'static str>| {
            let store = db.store().clone();
            async move {
                let mut out = Vec::new();
                let mut token: Option<String> = None;
                let mut pages = 0;
                loop {
                    let page = store
                        .outbox()
                        .list_dead(destination, journey, 2, token.as_deref())
                        .await
                        .unwrap();
                    pages += 1;
                    assert!(page.items.len() <= 2);
                    out.extend(page.items.into_iter().map(|r| r.id));
                    match page.next_token {
                        Some(next) => token = Some(next),
                        None => break (out, pages),
                    }
                }
            }
        };
        let pick = |pred: &dyn Fn(&OutboxRecord) -> bool| -> Vec<String> {
            let mut ids: Vec<String> = rows[..5]
                .iter()
                .filter(|r| pred(r))
                .map(|r| r.id.clone())
                .collect();
            ids.sort();
            ids
        };
        let (all, pages) = list(None, None).await;
        assert_eq!(all, pick(&|_| true), "{b}");
        assert_eq!(pages, 3, "{b}");
        assert_eq!(
            list(Some("d1"), None).await.0,
            pick(&|r| r.destination_id == "d1"),
            "{b}"
        );
        assert_eq!(
            list(None, Some("j2")).await.0,
            pick(&|r| r.journey_id == "j2"),
            "{b}"
        );
        assert_eq!(
            list(Some("d1"), Some("j1")).await.0,
            pick(&|r| r.destination_id == "d1" && r.journey_id == "j1"),
            "{b}"
        );
        assert!(list(Some("d3"), None).await.0.is_empty(), "{b}");
    })
    .await;
}

#[tokio::test]
async fn delivered_sends_are_purged_past_retention_with_the_stats_unchanged() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let (delivered, dead, pending) = (
            send("d1", "j1", t),
            send("d1", "j1", t),
            send("d1", "j1", t),
        );
        add_sends(
            db.store(),
            vec![delivered.clone(), dead.clone(), pending.clone()],
        )
        .await;
        db.outbox().mark_sent(&delivered.id, t).await.unwrap();
        db.outbox()
            .mark_dead(&dead.id, 1, "HTTP 400", t)
            .await
            .unwrap();
        let stats = db.batches().journey_stats("j1").await.unwrap();
        let counts = |s: &journeys_store::JourneyStats| {
            s.sends
                .iter()
                .map(|s| (s.sent, s.failed, s.dead_lettered))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&stats), [(1, 1, 1)], "{b}");

        // Not yet past the boundary: nothing goes.
        assert_eq!(
            db.outbox().purge_sent(t, PurgePace::UNPACED).await.unwrap(),
            0,
            "{b}"
        );
        // Past it: the delivered row only; the dead letter and the pending send stay.
        assert_eq!(
            db.outbox()
                .purge_sent(t + Duration::seconds(1), PurgePace::UNPACED)
                .await
                .unwrap(),
            1,
            "{b}"
        );
        assert!(db.outbox().get(&delivered.id).await.is_err(), "{b}");
        assert_eq!(
            db.outbox().get(&dead.id).await.unwrap().status,
            OutboxStatus::Dead,
            "{b}"
        );
        assert_eq!(
            db.outbox().get(&pending.id).await.unwrap().status,
            OutboxStatus::Pending,
            "{b}"
        );
        assert_eq!(
            db.batches().journey_stats("j1").await.unwrap(),
            stats,
            "{b}"
        );
    })
    .await;
}
