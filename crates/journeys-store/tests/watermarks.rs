//! Fairness-watermark heartbeats of data-plane replicas, on every configured backend.

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

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};

use journeys_testkit::each_backend;

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[tokio::test]
async fn low_is_the_minimum_over_live_replicas() {
    each_backend(async |db| {
        let backend = db.backend();
        let marks = db.watermarks();
        let now = now();
        let lease = Duration::from_secs(2);
        assert_eq!(marks.low(now, lease).await.unwrap(), None, "{backend}");

        let a = now - chrono::Duration::seconds(30);
        let b = now - chrono::Duration::seconds(10);
        marks.beat("replica-a", a, now).await.unwrap();
        marks.beat("replica-b", b, now).await.unwrap();
        assert_eq!(marks.low(now, lease).await.unwrap(), Some(a), "{backend}");

        // An upsert replaces the replica's watermark.
        let a2 = now - chrono::Duration::seconds(5);
        marks.beat("replica-a", a2, now).await.unwrap();
        assert_eq!(marks.low(now, lease).await.unwrap(), Some(b), "{backend}");

        // A heartbeat exactly at the lease boundary is live; older ones are stale.
        let old = now - chrono::Duration::seconds(2);
        let early = now - chrono::Duration::seconds(60);
        marks.beat("replica-c", early, old).await.unwrap();
        assert_eq!(
            marks.low(now, lease).await.unwrap(),
            Some(early),
            "{backend}"
        );
        let later = now + chrono::Duration::milliseconds(1);
        assert_eq!(marks.low(later, lease).await.unwrap(), Some(b), "{backend}");

        // Removed replicas drop out; removing twice is fine.
        marks.remove("replica-b").await.unwrap();
        marks.remove("replica-b").await.unwrap();
        assert_eq!(
            marks.low(later, lease).await.unwrap(),
            Some(a2),
            "{backend}"
        );
        marks.remove("replica-a").await.unwrap();
        assert_eq!(marks.low(later, lease).await.unwrap(), None, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn the_migration_is_idempotent() {
    each_backend(async |db| {
        db.migrate().await.unwrap();
        db.watermarks().beat("r", now(), now()).await.unwrap();
        db.migrate().await.unwrap();
        assert!(db.pending_migrations().await.unwrap().is_empty());
    })
    .await;
}
