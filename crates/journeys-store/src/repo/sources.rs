//! Sources: ingestion write keys. Only a SHA-256 hash of each key is stored; the key itself is
//! shown once, at creation, by the control plane.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};

use crate::entity::source::{self, Column};
use crate::error::StoreError;
use crate::repo::micros;

const ENTITY: &str = "source";

/// How a write key is stored and looked up: lower-case hex SHA-256 of the key. The control
/// plane hashes new keys with it and the data plane hashes presented keys with it, so this is
/// the only place the two can agree or disagree.
#[must_use]
pub fn hash_write_key(key: &str) -> String {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A stored source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub name: String,
    /// Lower-case hex SHA-256 of the write key; unique.
    pub key_hash: String,
    /// The first characters of the key, so operators can tell keys apart.
    pub key_prefix: String,
    pub created_at: DateTime<Utc>,
    /// Set once revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<source::Model> for SourceRecord {
    fn from(m: source::Model) -> Self {
        Self {
            id: m.id,
            name: m.name,
            key_hash: m.key_hash,
            key_prefix: m.key_prefix,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// Repository of sources; obtained from [`crate::Store::sources`].
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Sources<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a new source and returns it as stored.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the id or the key hash is taken.
    pub async fn insert(&self, source: &SourceRecord) -> Result<SourceRecord, StoreError> {
        let mut stored = source.clone();
        stored.created_at = micros(stored.created_at);
        stored.revoked_at = stored.revoked_at.map(micros);
        let model = source::ActiveModel {
            id: Set(stored.id.clone()),
            name: Set(stored.name.clone()),
            key_hash: Set(stored.key_hash.clone()),
            key_prefix: Set(stored.key_prefix.clone()),
            created_at: Set(stored.created_at),
            revoked_at: Set(stored.revoked_at),
        };
        source::Entity::insert(model)
            .exec_without_returning(self.db)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        Ok(stored)
    }

    /// All sources, revoked ones included, in id order. Sources are few (one per sending app).
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(&self) -> Result<Vec<SourceRecord>, StoreError> {
        let rows = source::Entity::find()
            .order_by_asc(Column::Id)
            .all(self.db)
            .await?;
        Ok(rows.into_iter().map(SourceRecord::from).collect())
    }

    /// Revokes the source. Revoking twice keeps the first revocation time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn revoke(&self, id: &str, now: DateTime<Utc>) -> Result<SourceRecord, StoreError> {
        let txn = self.db.begin().await?;
        source::Entity::update_many()
            .col_expr(Column::RevokedAt, Expr::value(micros(now)))
            .filter(Column::Id.eq(id))
            .filter(Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        let revoked = source::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| StoreError::not_found(ENTITY, id))?;
        txn.commit().await?;
        Ok(revoked.into())
    }

    /// The unrevoked source whose key hashes to `key_hash`, if any: the write-key check.
    ///
    /// # Errors
    /// Database errors.
    pub async fn find_active_by_key_hash(
        &self,
        key_hash: &str,
    ) -> Result<Option<SourceRecord>, StoreError> {
        let row = source::Entity::find()
            .filter(Column::KeyHash.eq(key_hash))
            .filter(Column::RevokedAt.is_null())
            .one(self.db)
            .await?;
        Ok(row.map(SourceRecord::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_hash_to_lower_hex_sha256() {
        assert_eq!(
            hash_write_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
