//! [`SourceApi`]: ingestion credentials.
//!
//! A write key is 32 random bytes, shown once at creation; only its hash
//! ([`journeys_store::hash_write_key`]) is stored, so a leaked database does not leak working
//! keys. The first characters are kept for display.

use base64::Engine as _;
use chrono::Utc;
use journeys_store::{SourceRecord, Store, hash_write_key};
use rand::RngCore as _;

use crate::error::{Result, ServiceError};
use crate::fields;

/// Characters of the key kept for display (`jk_` plus a few random ones).
const PREFIX_CHARS: usize = 8;

/// A fresh write key: `jk_` + 43 URL-safe base64 characters (256 random bits).
pub fn new_write_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "jk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Source rules over the store's `Sources` repository.
#[derive(Clone)]
pub struct SourceApi {
    store: Store,
}

impl SourceApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Creates a source; returns it with its write key (the only time the key is shown).
    pub async fn create(&self, name: String) -> Result<(SourceRecord, String)> {
        let mut problems = Vec::new();
        fields::check_name("name", &name, &mut problems);
        ServiceError::check("source", problems)?;
        let write_key = new_write_key();
        let record = SourceRecord {
            id: journeys_store::new_id(),
            name,
            key_hash: hash_write_key(&write_key),
            key_prefix: write_key.chars().take(PREFIX_CHARS).collect(),
            created_at: Utc::now(),
            revoked_at: None,
        };
        let stored = self.store.sources().insert(&record).await?;
        Ok((stored, write_key))
    }

    /// Every source.
    pub async fn list(&self) -> Result<Vec<SourceRecord>> {
        Ok(self.store.sources().list().await?)
    }

    /// Revokes a source: its key authenticates nothing from then on.
    pub async fn revoke(&self, id: &str) -> Result<SourceRecord> {
        if id.is_empty() {
            return Err(ServiceError::invalid_field("id", "required"));
        }
        Ok(self.store.sources().revoke(id, Utc::now()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_are_prefixed_and_random() {
        let (a, b) = (new_write_key(), new_write_key());
        assert!(a.starts_with("jk_") && a.len() == 46, "{a}");
        assert_ne!(a, b);
    }
}
