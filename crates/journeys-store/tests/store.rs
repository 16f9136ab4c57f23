//! Connecting, migrating and reconnecting, on every configured backend.

use chrono::Utc;
use serde_json::json;

use journeys_store::testing::each_backend;
use journeys_store::{Backend, JourneyRecord, Store, StoreError};

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_keeps_data() {
    for db in each_backend().await {
        let backend = db.backend();
        let journey = db
            .journeys()
            .insert(&JourneyRecord::new_draft("j", "", json!({}), Utc::now()))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        db.migrate().await.unwrap();
        assert!(
            db.pending_migrations().await.unwrap().is_empty(),
            "{backend}"
        );
        assert_eq!(
            db.journeys().get(&journey.id).await.unwrap(),
            journey,
            "{backend}"
        );
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn data_survives_reconnect() {
    for db in each_backend().await {
        let backend = db.backend();
        let journey = db
            .journeys()
            .insert(&JourneyRecord::new_draft(
                "durable",
                "kept",
                json!({"a": [1, 2]}),
                Utc::now(),
            ))
            .await
            .unwrap();
        let again = Store::connect(db.url()).await.unwrap();
        assert_eq!(again.backend(), backend);
        again.migrate().await.unwrap();
        assert_eq!(
            again.journeys().get(&journey.id).await.unwrap(),
            journey,
            "{backend}"
        );
        again.close().await.unwrap();
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn test_databases_are_fresh_and_distinct() {
    let first = each_backend().await;
    let second = each_backend().await;
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
async fn in_memory_sqlite_keeps_its_schema_across_calls() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    let j = store
        .journeys()
        .insert(&JourneyRecord::new_draft(
            "mem",
            "",
            json!(null),
            Utc::now(),
        ))
        .await
        .unwrap();
    assert_eq!(store.journeys().get(&j.id).await.unwrap(), j);
}

#[tokio::test]
async fn closed_sqlite_test_db_removes_its_file() {
    let db = journeys_store::testing::TestDb::sqlite().await.unwrap();
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
async fn unreachable_server_is_unavailable_and_bad_url_is_rejected() {
    let err = Store::connect("mysql://root@127.0.0.1:1/nothing")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = Store::connect("postgres://localhost/x").await.unwrap_err();
    assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
}

#[tokio::test]
async fn each_backend_covers_mysql_when_configured() {
    let dbs = each_backend().await;
    let configured =
        std::env::var(journeys_store::testing::MYSQL_URL_ENV).is_ok_and(|u| !u.is_empty());
    let backends: Vec<_> = dbs.iter().map(|db| db.backend()).collect();
    if configured {
        assert_eq!(backends, [Backend::Sqlite, Backend::MySql]);
    } else {
        assert_eq!(backends, [Backend::Sqlite]);
    }
    for db in dbs {
        db.close().await.unwrap();
    }
}
