//! Outbox claims of hundreds and delivery outcomes recorded in batches (`mark_sent_many`,
//! `record`), on every configured backend.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap
)]

use std::collections::HashSet;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

use journeys_store::{Changes, OutboxMark, OutboxRecord, OutboxStatus, Store};
use journeys_testkit::each_backend;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A pending send due at `at`; ids are `UUIDv7`, so rows made later sort later.
fn send(at: DateTime<Utc>) -> OutboxRecord {
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: "i1".into(),
        profile_id: "u1".into(),
        journey_id: "j1".into(),
        step_key: "notify".into(),
        destination_id: "d1".into(),
        message_id: journeys_store::new_id(),
        method: "POST".into(),
        path: "/track".into(),
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

/// `n` sends due one microsecond apart from `from` on.
fn sends(n: usize, from: DateTime<Utc>) -> Vec<OutboxRecord> {
    (0..n)
        .map(|i| send(from + Duration::microseconds(i as i64)))
        .collect()
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

fn ids(rows: &[OutboxRecord]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

#[tokio::test]
async fn claims_of_hundreds_are_disjoint_and_in_due_order() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let rows = sends(700, t - Duration::seconds(10));
        add_sends(db, rows.clone()).await;
        let lease = t + Duration::seconds(30);

        let first = db.outbox().claim_due(t, 300, lease).await.unwrap();
        assert_eq!(ids(&first), ids(&rows[..300]), "{b}");
        let second = db.outbox().claim_due(t, 300, lease).await.unwrap();
        assert_eq!(ids(&second), ids(&rows[300..600]), "{b}");
        let rest = db.outbox().claim_due(t, 300, lease).await.unwrap();
        assert_eq!(ids(&rest), ids(&rows[600..]), "{b}");
        assert!(
            db.outbox()
                .claim_due(t, 300, lease)
                .await
                .unwrap()
                .is_empty(),
            "{b}: every row is leased"
        );
    })
    .await;
}

#[tokio::test]
async fn mark_sent_many_marks_every_row_named_and_only_those() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        // More than one statement's worth (500 ids), so the marks span statements.
        let rows = sends(1_203, t - Duration::seconds(10));
        let (marked, kept) = rows.split_at(1_200);
        add_sends(db, rows.clone()).await;
        let lease = t + Duration::hours(1);
        assert_eq!(
            db.outbox().claim_due(t, 2_000, lease).await.unwrap().len(),
            rows.len(),
            "{b}"
        );

        let mut named = ids(marked);
        named.push("missing".into());
        let sent_at = t + Duration::seconds(1);
        assert_eq!(
            db.outbox().mark_sent_many(&named, sent_at).await.unwrap(),
            1_200,
            "{b}: missing ids are ignored"
        );
        for row in [&marked[0], &marked[499], &marked[500], &marked[1_199]] {
            let stored = db.outbox().get(&row.id).await.unwrap();
            assert_eq!(stored.status, OutboxStatus::Sent, "{b}");
            assert_eq!(stored.sent_at, Some(sent_at), "{b}");
        }
        for row in kept {
            let stored = db.outbox().get(&row.id).await.unwrap();
            assert_eq!(stored.status, OutboxStatus::Pending, "{b}");
            assert_eq!(stored.sent_at, None, "{b}");
        }
        // The rows left alone keep their lease; the sent ones are out of the queue.
        assert_eq!(
            db.outbox().next_due_at().await.unwrap(),
            Some(kept[0].next_attempt_at),
            "{b}"
        );
        assert!(
            db.outbox()
                .claim_due(t, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );
        assert_eq!(db.outbox().mark_sent_many(&[], t).await.unwrap(), 0, "{b}");
    })
    .await;
}

#[tokio::test]
async fn record_writes_sent_retry_and_dead_marks_together() {
    each_backend(async |db| {
        let b = db.backend();
        let t = now();
        let rows = sends(5, t - Duration::seconds(10));
        add_sends(db, rows.clone()).await;
        // A lease far beyond the retry time: only a cleared claim lets the retry be claimed.
        let lease = t + Duration::hours(1);
        assert_eq!(
            db.outbox().claim_due(t, 10, lease).await.unwrap().len(),
            5,
            "{b}"
        );

        let retry_at = t + Duration::seconds(2);
        let marks = vec![
            OutboxMark::Sent {
                id: rows[0].id.clone(),
                send: None,
            },
            OutboxMark::Retry {
                id: rows[1].id.clone(),
                send: None,
                attempts: 1,
                next_attempt_at: retry_at,
                last_error: "HTTP 503".into(),
            },
            OutboxMark::Sent {
                id: rows[2].id.clone(),
                send: None,
            },
            OutboxMark::Dead {
                id: rows[3].id.clone(),
                send: None,
                attempts: 2,
                last_error: "HTTP 400: bad field".into(),
            },
            OutboxMark::Sent {
                id: "missing".into(),
                send: None,
            },
        ];
        assert_eq!(marks[3].id(), rows[3].id, "{b}");
        let at = t + Duration::seconds(1);
        assert_eq!(db.outbox().record(&marks, at).await.unwrap(), 4, "{b}");

        for row in [&rows[0], &rows[2]] {
            let sent = db.outbox().get(&row.id).await.unwrap();
            assert_eq!(
                (sent.status, sent.sent_at),
                (OutboxStatus::Sent, Some(at)),
                "{b}"
            );
        }
        let retried = db.outbox().get(&rows[1].id).await.unwrap();
        assert_eq!(retried.status, OutboxStatus::Pending, "{b}");
        assert_eq!(
            (retried.attempts, retried.next_attempt_at),
            (1, retry_at),
            "{b}"
        );
        assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"), "{b}");
        let dead = db.outbox().get(&rows[3].id).await.unwrap();
        assert_eq!(
            (dead.status, dead.attempts, dead.dead_at),
            (OutboxStatus::Dead, 2, Some(at)),
            "{b}"
        );
        assert_eq!(
            dead.last_error.as_deref(),
            Some("HTTP 400: bad field"),
            "{b}"
        );
        let unmarked = db.outbox().get(&rows[4].id).await.unwrap();
        assert_eq!(unmarked.status, OutboxStatus::Pending, "{b}");

        // The retry's claim is gone, the unmarked row's lease still holds.
        let again = db.outbox().claim_due(retry_at, 10, lease).await.unwrap();
        assert_eq!(ids(&again), vec![rows[1].id.clone()], "{b}");
        let listed: HashSet<String> = db
            .outbox()
            .list_dead(None, None, 10, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(listed, HashSet::from([rows[3].id.clone()]), "{b}");

        // Only sends: the same marks as mark_sent_many; none at all: nothing happens.
        let only_sent = [OutboxMark::Sent {
            id: rows[4].id.clone(),
            send: None,
        }];
        assert_eq!(db.outbox().record(&only_sent, at).await.unwrap(), 1, "{b}");
        assert_eq!(
            db.outbox().get(&rows[4].id).await.unwrap().status,
            OutboxStatus::Sent,
            "{b}"
        );
        assert_eq!(db.outbox().record(&[], at).await.unwrap(), 0, "{b}");
    })
    .await;
}
