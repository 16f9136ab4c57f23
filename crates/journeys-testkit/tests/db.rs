//! The test databases themselves: fresh and distinct per call, removed when closed, and MySQL
//! included exactly when `JOURNEYS_TEST_MYSQL_URL` is set.

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

use chrono::Utc;
use serde_json::json;

use journeys_store::{Backend, JourneyRecord};
use journeys_testkit::{MYSQL_URL_ENV, TestDb, backends};

#[tokio::test]
async fn test_databases_are_fresh_and_distinct() {
    let first = backends().await;
    let second = backends().await;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.backend(), b.backend());
        assert_ne!(a.url(), b.url());
        a.journeys()
            .insert(&JourneyRecord::new_draft(
                "only-in-a",
                "",
                json!({}),
                Utc::now(),
            ))
            .await
            .unwrap();
        let seen = b.journeys().list(None, 0, None).await.unwrap();
        assert!(seen.items.is_empty(), "{}", b.backend());
    }
    for db in first.into_iter().chain(second) {
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn closed_sqlite_test_db_removes_its_file() {
    let db = TestDb::sqlite().await.unwrap();
    let path = db
        .url()
        .trim_start_matches("sqlite://")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    assert!(std::path::Path::new(&path).exists());
    db.close().await.unwrap();
    assert!(!std::path::Path::new(&path).exists());
}

#[tokio::test]
async fn backends_cover_mysql_when_configured() {
    let dbs = backends().await;
    let configured = std::env::var(MYSQL_URL_ENV).is_ok_and(|u| !u.is_empty());
    let backends: Vec<_> = dbs.iter().map(journeys_testkit::TestDb::backend).collect();
    if configured {
        assert_eq!(backends, [Backend::Sqlite, Backend::MySql]);
    } else {
        assert_eq!(backends, [Backend::Sqlite]);
    }
    for db in dbs {
        db.close().await.unwrap();
    }
}
