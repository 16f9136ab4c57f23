//! Connecting, migrating and reconnecting, on every configured backend.

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

use journeys_store::{Backend, JourneyRecord, Store, StoreError};
use journeys_testkit::each_backend;

#[tokio::test]
async fn migrate_twice_is_a_no_op_and_keeps_data() {
    each_backend(async |db| {
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
    })
    .await;
}

#[tokio::test]
async fn data_survives_reconnect() {
    each_backend(async |db| {
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
    })
    .await;
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
async fn unreachable_server_is_unavailable_and_bad_url_is_rejected() {
    let err = Store::connect("mysql://root@127.0.0.1:1/nothing")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = Store::connect("postgres://localhost/x").await.unwrap_err();
    assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
}
