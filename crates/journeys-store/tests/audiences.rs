//! Audiences and memberships on every configured backend.

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

use journeys_store::StoreError;
use journeys_testkit::each_backend;

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn create_get_list_and_archive() {
    each_backend(async |db| {
        let b = db.backend();
        let now = Utc::now();
        let vip = db
            .audiences()
            .insert("vip", "VIP customers", now)
            .await
            .unwrap();
        assert!(vip.active);
        assert_eq!(vip.member_count, 0);
        assert_eq!(db.audiences().get("vip").await.unwrap(), vip, "{b}");
        let err = db
            .audiences()
            .insert("vip", "again", now)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::AlreadyExists {
                    entity: "audience",
                    ..
                }
            ),
            "{b}: {err:?}"
        );
        db.audiences()
            .insert("VIP", "different case", now)
            .await
            .unwrap();
        db.audiences()
            .insert("churn_risk", "Churn", now)
            .await
            .unwrap();

        db.audiences()
            .add_members("vip", &ids(&["u1", "u2"]), now)
            .await
            .unwrap();
        let page1 = db.audiences().list(2, None).await.unwrap();
        let page2 = db
            .audiences()
            .list(2, page1.next_token.as_deref())
            .await
            .unwrap();
        let keys: Vec<_> = page1
            .items
            .iter()
            .chain(&page2.items)
            .map(|a| a.key.as_str())
            .collect();
        assert_eq!(keys, ["VIP", "churn_risk", "vip"], "{b}");
        assert_eq!(page2.next_token, None);
        assert_eq!(page2.items[0].member_count, 2, "{b}");
        assert_eq!(page1.items[0].member_count, 0, "{b}");

        let t = now + Duration::days(1);
        let archived = db.audiences().archive("vip", t).await.unwrap();
        assert!(!archived.active);
        assert_eq!(archived.archived_at, Some(journeys_store_micros(t)));
        assert_eq!(archived.member_count, 2, "archiving keeps members");
        let again = db
            .audiences()
            .archive("vip", t + Duration::days(1))
            .await
            .unwrap();
        assert_eq!(again.archived_at, archived.archived_at, "{b}");
        assert!(matches!(
            db.audiences().archive("nope", t).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            db.audiences().get("nope").await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

/// Timestamps are stored at microsecond precision.
fn journeys_store_micros(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

#[tokio::test]
async fn adding_and_removing_members_is_idempotent_and_counted() {
    each_backend(async |db| {
        let b = db.backend();
        let now = Utc::now();
        db.audiences().insert("vip", "VIP", now).await.unwrap();
        db.audiences().insert("beta", "Beta", now).await.unwrap();

        let added = db
            .audiences()
            .add_members("vip", &ids(&["a", "b", "c", "a"]), now)
            .await
            .unwrap();
        assert_eq!(added, 3, "{b}: repeats in one call count once");
        let added = db
            .audiences()
            .add_members("vip", &ids(&["b", "c", "d"]), now)
            .await
            .unwrap();
        assert_eq!(added, 1, "{b}: existing members are ignored");
        assert_eq!(
            db.audiences().add_members("vip", &[], now).await.unwrap(),
            0
        );
        let again = db
            .audiences()
            .add_members("vip", &ids(&["a", "d"]), now)
            .await
            .unwrap();
        assert_eq!(again, 0, "{b}: adding only existing members adds nothing");
        assert_eq!(db.audiences().get("vip").await.unwrap().member_count, 4);

        assert!(db.audiences().is_member("vip", "a").await.unwrap());
        assert!(!db.audiences().is_member("vip", "zz").await.unwrap());
        assert!(!db.audiences().is_member("beta", "a").await.unwrap());
        assert!(!db.audiences().is_member("nope", "a").await.unwrap());

        db.audiences()
            .add_members("beta", &ids(&["a"]), now)
            .await
            .unwrap();
        assert_eq!(
            db.audiences().audiences_of("a").await.unwrap(),
            ["beta", "vip"],
            "{b}"
        );
        assert!(
            db.audiences()
                .audiences_of("stranger")
                .await
                .unwrap()
                .is_empty()
        );

        let removed = db
            .audiences()
            .remove_members("vip", &ids(&["a", "x"]))
            .await
            .unwrap();
        assert_eq!(removed, 1, "{b}");
        let removed = db
            .audiences()
            .remove_members("vip", &ids(&["a", "x"]))
            .await
            .unwrap();
        assert_eq!(removed, 0, "{b}");
        assert!(!db.audiences().is_member("vip", "a").await.unwrap());
        assert_eq!(db.audiences().audiences_of("a").await.unwrap(), ["beta"]);

        assert!(matches!(
            db.audiences().add_members("nope", &ids(&["a"]), now).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            db.audiences().remove_members("nope", &ids(&["a"])).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn members_page_through_every_member_once() {
    each_backend(async |db| {
        let b = db.backend();
        let now = Utc::now();
        db.audiences().insert("big", "Big", now).await.unwrap();
        // More than one insert chunk, to cover the chunked path.
        let mut all: Vec<String> = (0..1203).map(|i| format!("user-{i:05}")).collect();
        assert_eq!(
            db.audiences().add_members("big", &all, now).await.unwrap(),
            1203,
            "{b}"
        );
        all.sort();

        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = db
                .audiences()
                .list_members("big", 500, token.as_deref())
                .await
                .unwrap();
            seen.extend(page.items);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, all, "{b}");
        assert!(matches!(
            db.audiences().list_members("nope", 10, None).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}
