//! Text compares exactly on every backend: ids that differ only by trailing spaces (or case)
//! are different ids, as they are in Rust. MySQL's `utf8mb4_bin` is PAD SPACE and made
//! `"u1 "` the same profile, message id and enter-once record as `"u1"`.

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

use journeys_store::Changes;
use journeys_testkit::{each_backend, object};

#[tokio::test]
async fn ids_differing_by_trailing_spaces_are_different_ids() {
    each_backend(async |db| {
        let b = db.backend();
        let t = Utc::now();
        db.profiles()
            .merge_traits("u1", &object(json!({"nickname": "ada"})), t)
            .await
            .unwrap();
        db.profiles()
            .merge_traits("u1 ", &object(json!({"nickname": "x"})), t)
            .await
            .unwrap();
        let u1 = db.profiles().get("u1").await.unwrap();
        assert_eq!(u1.traits, object(json!({"nickname": "ada"})), "{b}");
        let spaced = db.profiles().get("u1 ").await.unwrap();
        assert_eq!(spaced.traits, object(json!({"nickname": "x"})), "{b}");

        db.batches()
            .commit(&Changes {
                dedupe: vec![("m1".into(), t)],
                enter_once: vec![("j1".into(), "u3".into())],
                ..Changes::default()
            })
            .await
            .unwrap();
        // A message id and an enter-once record with a trailing space do not conflict.
        db.batches()
            .commit(&Changes {
                dedupe: vec![("m1 ".into(), t)],
                enter_once: vec![("j1".into(), "u3 ".into())],
                ..Changes::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{b}: trailing-space ids conflicted: {e}"));
        let seen = db
            .batches()
            .seen_message_ids(&["m1".into(), "m1 ".into(), "m1  ".into()], t)
            .await
            .unwrap();
        assert_eq!(seen.len(), 2, "{b}: {seen:?}");
        assert!(seen.contains("m1") && seen.contains("m1 "), "{b}");
    })
    .await;
}
