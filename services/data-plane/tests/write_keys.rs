//! The write-key cache under a flood of unknown keys: the sources really sending stay cached,
//! so a flood neither evicts them nor sends every request of theirs to the store.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use journeys_data_plane::{AuthError, WriteKeys, hash_write_key};
use journeys_store::SourceRecord;
use journeys_testkit::TestDb;

#[tokio::test]
async fn a_flood_of_unknown_keys_does_not_evict_a_known_one() {
    let db = TestDb::sqlite().await.unwrap();
    let key = "wk_flood_test_0123456789";
    let source = SourceRecord {
        id: journeys_store::new_id(),
        name: "web".to_owned(),
        key_hash: hash_write_key(key),
        key_prefix: key[..8].to_owned(),
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    let source_id = db.sources().insert(&source).await.unwrap().id;
    // Both kinds are cached for a minute here, so every entry of the flood is still live when
    // the cache reaches its bound (as in a flood faster than the default one-second TTL).
    let keys = WriteKeys::with_ttl(
        db.store().clone(),
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    assert_eq!(keys.resolve(key).await.unwrap().id, source_id);

    // Revoked in the store: only a fresh lookup would notice, so the answer below says whether
    // the key was still cached after the flood.
    db.sources()
        .revoke(&source_id, chrono::Utc::now())
        .await
        .unwrap();
    for i in 0..10_050 {
        let unknown = format!("wk_random_{i:08}");
        assert_eq!(keys.resolve(&unknown).await, Err(AuthError::Invalid));
    }
    assert_eq!(
        keys.resolve(key).await.map(|source| source.id.clone()),
        Ok(source_id),
        "the known key was evicted by the flood"
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn past_the_bound_only_the_least_recently_used_key_makes_room() {
    let db = TestDb::sqlite().await.unwrap();
    let mut ids = Vec::new();
    let keys_of = |i: usize| format!("wk_lru_test_{i:012}");
    for i in 0..4 {
        let key = keys_of(i);
        let source = SourceRecord {
            id: journeys_store::new_id(),
            name: format!("source-{i}"),
            key_hash: hash_write_key(&key),
            key_prefix: key[..8].to_owned(),
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        ids.push(db.sources().insert(&source).await.unwrap().id);
    }
    let keys = WriteKeys::with_capacity(
        db.store().clone(),
        Duration::from_secs(60),
        Duration::from_secs(60),
        3,
    );
    for i in 0..3 {
        keys.resolve(&keys_of(i)).await.unwrap();
    }
    // Revoked in the store: a key still cached keeps resolving, one dropped is refused.
    for id in &ids {
        db.sources().revoke(id, chrono::Utc::now()).await.unwrap();
    }
    // Key 0 is used again, so key 1 is the least recently used when the fourth needs room.
    keys.resolve(&keys_of(0)).await.unwrap();
    assert_eq!(keys.resolve(&keys_of(3)).await, Err(AuthError::Invalid));
    let source = SourceRecord {
        id: journeys_store::new_id(),
        name: "source-4".to_owned(),
        key_hash: hash_write_key(&keys_of(4)),
        key_prefix: "wk_lru_t".to_owned(),
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    db.sources().insert(&source).await.unwrap();
    keys.resolve(&keys_of(4)).await.unwrap();
    assert!(
        keys.resolve(&keys_of(0)).await.is_ok(),
        "recently used: kept"
    );
    assert!(keys.resolve(&keys_of(2)).await.is_ok(), "kept");
    assert_eq!(
        keys.resolve(&keys_of(1)).await.map(|_| ()),
        Err(AuthError::Invalid),
        "the least recently used made room"
    );
    db.close().await.unwrap();
}
