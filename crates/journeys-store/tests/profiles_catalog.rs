//! Profiles (trait merging) and the event catalog on every configured backend.

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

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::json;

use journeys_store::StoreError;
use journeys_testkit::{each_backend, object};

fn at(base: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    (base + Duration::seconds(secs)).trunc_subsecs(6)
}

#[tokio::test]
async fn merge_traits_creates_then_shallow_merges() {
    each_backend(async |db| {
        let b = db.backend();
        let now = Utc::now();
        assert!(matches!(
            db.profiles().get("u1").await,
            Err(StoreError::NotFound { .. })
        ));

        let created = db
            .profiles()
            .merge_traits(
                "u1",
                &object(json!({"plan": "free", "address": {"city": "Oslo", "zip": "0150"}})),
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            created.traits,
            object(json!({"plan": "free", "address": {"city": "Oslo", "zip": "0150"}}))
        );

        let later = at(now, 60);
        let merged = db
            .profiles()
            .merge_traits(
                "u1",
                &object(json!({"plan": "pro", "address": {"city": "Bergen"}, "nick": null})),
                later,
            )
            .await
            .unwrap();
        let expected = object(json!({"plan": "pro", "address": {"city": "Bergen"}, "nick": null}));
        assert_eq!(merged.traits, expected, "{b}");
        assert_eq!(merged.created_at, created.created_at);
        assert_eq!(merged.updated_at, later);
        assert_eq!(db.profiles().get("u1").await.unwrap(), merged, "{b}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_merges_of_one_profile_lose_no_trait() {
    each_backend(async |db| {
        let b = db.backend();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = db.store().clone();
            tasks.push(tokio::spawn(async move {
                let traits = object(json!({ format!("t{i}"): i }));
                store
                    .profiles()
                    .merge_traits("shared", &traits, Utc::now())
                    .await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let profile = db.profiles().get("shared").await.unwrap();
        assert_eq!(profile.traits.len(), 12, "{b}: {:?}", profile.traits);
    })
    .await;
}

#[tokio::test]
async fn record_seen_upserts_first_last_and_count() {
    each_backend(async |db| {
        let b = db.backend();
        let base = Utc::now();
        db.catalog()
            .record_seen(&[
                ("Order Completed".into(), at(base, 10)),
                ("Signed Up".into(), at(base, 5)),
                ("Order Completed".into(), at(base, 30)),
            ])
            .await
            .unwrap();
        let order = db.catalog().get("Order Completed").await.unwrap();
        assert_eq!(order.count, 2, "{b}");
        assert_eq!(order.first_seen, Some(at(base, 10)));
        assert_eq!(order.last_seen, Some(at(base, 30)));
        assert!(!order.registered);

        // A later batch with an earlier event widens first_seen only.
        db.catalog()
            .record_seen(&[
                ("Order Completed".into(), at(base, 1)),
                ("order completed".into(), at(base, 2)),
            ])
            .await
            .unwrap();
        let order = db.catalog().get("Order Completed").await.unwrap();
        assert_eq!(order.count, 3, "{b}");
        assert_eq!(order.first_seen, Some(at(base, 1)), "{b}");
        assert_eq!(order.last_seen, Some(at(base, 30)), "{b}");
        assert_eq!(
            db.catalog().get("order completed").await.unwrap().count,
            1,
            "{b}: case-sensitive"
        );

        db.catalog().record_seen(&[]).await.unwrap();
        let names: Vec<_> = db
            .catalog()
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            ["Order Completed", "Signed Up", "order completed"],
            "{b}"
        );
    })
    .await;
}

#[tokio::test]
async fn register_and_membership_checks() {
    each_backend(async |db| {
        let b = db.backend();
        let base = Utc::now();
        let reg = db.catalog().register("Cart Viewed").await.unwrap();
        assert!(reg.registered);
        assert_eq!(
            (reg.count, reg.first_seen, reg.last_seen),
            (0, None, None),
            "{b}"
        );
        assert_eq!(
            db.catalog().register("Cart Viewed").await.unwrap(),
            reg,
            "{b}: idempotent"
        );

        // Seeing a registered event fills in its times; registering a seen one keeps its counts.
        db.catalog()
            .record_seen(&[("Cart Viewed".into(), at(base, 3))])
            .await
            .unwrap();
        let seen = db.catalog().get("Cart Viewed").await.unwrap();
        assert_eq!(
            (seen.count, seen.first_seen, seen.last_seen),
            (1, Some(at(base, 3)), Some(at(base, 3))),
            "{b}"
        );
        assert!(seen.registered);
        db.catalog()
            .record_seen(&[("Paid".into(), at(base, 4))])
            .await
            .unwrap();
        let paid = db.catalog().register("Paid").await.unwrap();
        assert!(paid.registered);
        assert_eq!(paid.count, 1, "{b}");

        assert!(db.catalog().contains("Paid").await.unwrap());
        assert!(!db.catalog().contains("paid").await.unwrap());
        let missing = db
            .catalog()
            .contains_all(&[
                "Zeta".into(),
                "Paid".into(),
                "Alpha".into(),
                "Zeta".into(),
                "Cart Viewed".into(),
            ])
            .await
            .unwrap();
        assert_eq!(missing, ["Zeta", "Alpha"], "{b}");
        assert!(db.catalog().contains_all(&[]).await.unwrap().is_empty());
    })
    .await;
}
