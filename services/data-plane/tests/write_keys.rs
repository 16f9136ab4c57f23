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
