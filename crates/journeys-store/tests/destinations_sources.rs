//! Destinations and sources on every configured backend.

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

use chrono::{Duration, Utc};
use serde_json::json;

use journeys_store::{DestinationKind, DestinationRecord, SourceRecord, StoreError};
use journeys_testkit::each_backend;

fn source(name: &str, hash: &str) -> SourceRecord {
    SourceRecord {
        id: journeys_store::new_id(),
        name: name.into(),
        key_hash: hash.into(),
        key_prefix: hash[..8].into(),
        created_at: Utc::now(),
        revoked_at: None,
    }
}

#[tokio::test]
async fn destination_crud_and_unique_names() {
    each_backend(async |db| {
        let b = db.backend();
        let settings = json!({"url": "https://example.test/hook", "headers": {"X-A": "1"}});
        let d = db
            .destinations()
            .insert(&DestinationRecord::new(
                "crm",
                DestinationKind::Webhook,
                settings.clone(),
                Utc::now(),
            ))
            .await
            .unwrap();
        assert_eq!(db.destinations().get(&d.id).await.unwrap(), d, "{b}");
        assert_eq!(d.kind, DestinationKind::Webhook);

        let err = db
            .destinations()
            .insert(&DestinationRecord::new(
                "crm",
                DestinationKind::Webhook,
                json!({}),
                Utc::now(),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    entity: "destination",
                    ..
                }
            ),
            "{b}: {err:?}"
        );

        let later = d.updated_at + Duration::seconds(3);
        let updated = db
            .destinations()
            .update(
                &d.id,
                "crm v2",
                json!({"url": "https://example.test/v2"}),
                later,
            )
            .await
            .unwrap();
        assert_eq!(updated.name, "crm v2");
        assert_eq!(updated.settings, json!({"url": "https://example.test/v2"}));
        assert_eq!(updated.updated_at, later);
        assert_eq!(updated.created_at, d.created_at);
        assert!(matches!(
            db.destinations()
                .update("missing", "x", json!({}), later)
                .await,
            Err(StoreError::NotFound { .. })
        ));

        let other = db
            .destinations()
            .insert(&DestinationRecord::new(
                "other",
                DestinationKind::Webhook,
                json!({}),
                Utc::now(),
            ))
            .await
            .unwrap();
        assert!(matches!(
            db.destinations()
                .update(&other.id, "crm v2", json!({}), later)
                .await,
            Err(StoreError::AlreadyExists { .. })
        ));

        let page1 = db.destinations().list(1, None).await.unwrap();
        assert_eq!(page1.items.len(), 1);
        let page2 = db
            .destinations()
            .list(1, page1.next_token.as_deref())
            .await
            .unwrap();
        assert_eq!(page2.items.len(), 1);
        assert_eq!(page2.next_token, None, "{b}");
        assert_ne!(page1.items[0].id, page2.items[0].id);

        db.destinations().delete(&d.id).await.unwrap();
        assert!(matches!(
            db.destinations().get(&d.id).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            db.destinations().delete(&d.id).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn sources_authenticate_until_revoked() {
    each_backend(async |db| {
        let b = db.backend();
        let hash = "a".repeat(64);
        let s = db.sources().insert(&source("web", &hash)).await.unwrap();
        assert_eq!(
            db.sources().find_active_by_key_hash(&hash).await.unwrap(),
            Some(s.clone()),
            "{b}"
        );
        assert_eq!(
            db.sources()
                .find_active_by_key_hash(&"b".repeat(64))
                .await
                .unwrap(),
            None
        );

        let err = db
            .sources()
            .insert(&source("dup", &hash))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    entity: "source",
                    ..
                }
            ),
            "{b}: {err:?}"
        );

        let t = s.created_at + Duration::hours(1);
        let revoked = db.sources().revoke(&s.id, t).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(t));
        assert_eq!(
            db.sources().find_active_by_key_hash(&hash).await.unwrap(),
            None,
            "{b}"
        );
        // Revoking again keeps the first time.
        let again = db
            .sources()
            .revoke(&s.id, t + Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(again.revoked_at, Some(t), "{b}");
        assert!(matches!(
            db.sources().revoke("missing", t).await,
            Err(StoreError::NotFound { .. })
        ));

        let second = db
            .sources()
            .insert(&source("app", &"c".repeat(64)))
            .await
            .unwrap();
        let all = db.sources().list().await.unwrap();
        assert_eq!(all, vec![again, second], "{b}");
    })
    .await;
}
