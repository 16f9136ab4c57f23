//! The journeys repository on every configured backend.

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

use std::collections::BTreeSet;

use chrono::{Duration, Utc};
use serde_json::json;

use journeys_store::{JourneyChanges, JourneyRecord, JourneyState, StoreError};
use journeys_testkit::each_backend;

fn draft(name: &str) -> JourneyRecord {
    JourneyRecord::new_draft(
        name,
        "a description",
        json!({"trigger": {"event": "Signed Up"}, "steps": [{"key": "s1", "name": "Wait ⏳"}]}),
        Utc::now(),
    )
}

#[tokio::test]
async fn insert_then_read_back_by_id_and_name() {
    each_backend(async |db| {
        let b = db.backend();
        let stored = db.journeys().insert(&draft("welcome")).await.unwrap();
        assert_eq!(stored.state, JourneyState::Draft);
        assert_eq!(db.journeys().get(&stored.id).await.unwrap(), stored, "{b}");
        assert_eq!(
            db.journeys().get_by_name("welcome").await.unwrap(),
            stored,
            "{b}"
        );
        assert!(matches!(
            db.journeys().get("missing").await,
            Err(StoreError::NotFound {
                entity: "journey",
                ..
            })
        ));
        assert!(matches!(
            db.journeys().get_by_name("nope").await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn duplicate_name_or_id_is_already_exists_and_names_are_case_sensitive() {
    each_backend(async |db| {
        let b = db.backend();
        let first = db.journeys().insert(&draft("Checkout")).await.unwrap();
        let err = db.journeys().insert(&draft("Checkout")).await.unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    entity: "journey",
                    ..
                }
            ),
            "{b}: {err:?}"
        );
        let mut same_id = draft("other");
        same_id.id.clone_from(&first.id);
        let err = db.journeys().insert(&same_id).await.unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "{b}: {err:?}"
        );
        // Byte-wise comparison on both backends: a different case is a different name.
        db.journeys().insert(&draft("checkout")).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn update_requires_the_current_revision() {
    each_backend(async |db| {
        let b = db.backend();
        let j = db.journeys().insert(&draft("rev")).await.unwrap();
        let later = j.updated_at + Duration::seconds(5);
        let changes = JourneyChanges {
            name: "rev renamed".into(),
            description: "new".into(),
            definition: json!({"v": 2}),
        };
        let updated = db
            .journeys()
            .update(&j.id, j.revision, changes.clone(), later)
            .await
            .unwrap();
        assert_eq!(updated.revision, j.revision + 1, "{b}");
        assert_eq!(updated.name, "rev renamed");
        assert_eq!(updated.description, "new");
        assert_eq!(updated.definition, json!({"v": 2}));
        assert_eq!(updated.updated_at, later);
        assert_eq!(updated.created_at, j.created_at);
        assert_eq!(db.journeys().get(&j.id).await.unwrap(), updated);

        // The old revision is stale now.
        let err = db
            .journeys()
            .update(&j.id, j.revision, changes.clone(), later)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{b}: {err:?}");
        assert_eq!(
            db.journeys().get(&j.id).await.unwrap(),
            updated,
            "{b}: conflict changed nothing"
        );

        let err = db
            .journeys()
            .update("missing", 1, changes.clone(), later)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{b}: {err:?}");

        let other = db.journeys().insert(&draft("taken")).await.unwrap();
        let err = db
            .journeys()
            .update(
                &other.id,
                other.revision,
                JourneyChanges {
                    name: "rev renamed".into(),
                    ..changes
                },
                later,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists { .. }),
            "{b}: {err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn set_state_stamps_times_and_bumps_revision() {
    each_backend(async |db| {
        let b = db.backend();
        let j = db.journeys().insert(&draft("lifecycle")).await.unwrap();
        let t1 = j.created_at + Duration::minutes(1);
        let published = db
            .journeys()
            .set_state(&j.id, JourneyState::Published, t1)
            .await
            .unwrap();
        assert_eq!(published.state, JourneyState::Published, "{b}");
        assert_eq!(published.published_at, Some(t1));
        assert_eq!(published.archived_at, None);
        assert_eq!(published.revision, j.revision + 1);

        // An edit based on the draft's revision loses against the publish.
        let err = db
            .journeys()
            .update(
                &j.id,
                j.revision,
                JourneyChanges {
                    name: "x".into(),
                    description: String::new(),
                    definition: json!({}),
                },
                t1,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{b}: {err:?}");

        let t2 = t1 + Duration::minutes(1);
        let archived = db
            .journeys()
            .set_state(&j.id, JourneyState::Archived, t2)
            .await
            .unwrap();
        assert_eq!(archived.state, JourneyState::Archived);
        assert_eq!(archived.published_at, Some(t1));
        assert_eq!(archived.archived_at, Some(t2));
        assert_eq!(archived.updated_at, t2);
        assert!(matches!(
            db.journeys()
                .set_state("missing", JourneyState::Archived, t2)
                .await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn delete_removes_the_row_once() {
    each_backend(async |db| {
        let j = db.journeys().insert(&draft("gone")).await.unwrap();
        db.journeys().delete(&j.id).await.unwrap();
        assert!(matches!(
            db.journeys().get(&j.id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            db.journeys().delete(&j.id).await,
            Err(StoreError::NotFound { .. })
        ));
        // The name is free again.
        db.journeys().insert(&draft("gone")).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn paging_returns_every_row_exactly_once_in_id_order() {
    each_backend(async |db| {
        let b = db.backend();
        let mut ids = Vec::new();
        for i in 0..7 {
            let j = db
                .journeys()
                .insert(&draft(&format!("j{i}")))
                .await
                .unwrap();
            if i % 2 == 0 {
                db.journeys()
                    .set_state(&j.id, JourneyState::Published, Utc::now())
                    .await
                    .unwrap();
            }
            ids.push(j.id);
        }
        ids.sort();

        let mut seen = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = db.journeys().list(None, 3, token.as_deref()).await.unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items.into_iter().map(|j| j.id));
            pages += 1;
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{b}");
        assert_eq!(seen, ids, "{b}");

        let published = db
            .journeys()
            .list(Some(JourneyState::Published), 0, None)
            .await
            .unwrap();
        assert_eq!(published.items.len(), 4, "{b}");
        assert!(
            published
                .items
                .iter()
                .all(|j| j.state == JourneyState::Published)
        );
        assert_eq!(published.next_token, None);

        // An empty token is the first page, as proto3 sends it.
        let first = db.journeys().list(None, 2, Some("")).await.unwrap();
        assert_eq!(first.items.len(), 2);
        let unique: BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 7);
    })
    .await;
}
