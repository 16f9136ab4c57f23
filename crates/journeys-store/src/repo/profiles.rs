//! Profiles: one row per user, holding the traits merged from `identify` calls.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect,
    TransactionTrait,
};
use serde_json::{Map, Value};

use crate::entity::profile::{self, Column};
use crate::error::StoreError;
use crate::repo::micros;

const ENTITY: &str = "profile";

/// A stored profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRecord {
    /// The user id (or anonymous id when the profile has no user id).
    pub user_id: String,
    /// A JSON object of traits.
    pub traits: Map<String, Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When the profile was deleted (its row is then the tombstone: no traits).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Whether later events of a deleted profile's id are dropped too.
    pub suppressed: bool,
}

impl From<profile::Model> for ProfileRecord {
    fn from(m: profile::Model) -> Self {
        Self {
            user_id: m.user_id,
            traits: into_object(m.traits),
            created_at: m.created_at,
            updated_at: m.updated_at,
            deleted_at: m.deleted_at,
            suppressed: m.suppressed,
        }
    }
}

/// Traits are always written as an object; anything else reads as no traits.
pub(crate) fn into_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Repository of profiles; obtained from [`crate::Store::profiles`].
#[derive(Debug, Clone, Copy)]
pub struct Profiles<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Profiles<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// The profile of `user_id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when no trait was ever recorded for it.
    pub async fn get(&self, user_id: &str) -> Result<ProfileRecord, StoreError> {
        profile::Entity::find_by_id(user_id)
            .one(self.db)
            .await?
            .map(ProfileRecord::from)
            .ok_or_else(|| StoreError::not_found(ENTITY, user_id))
    }

    /// Merges `traits` into the profile, creating it when missing: top-level keys of `traits`
    /// replace the stored ones (a `null` value is stored as `null`, as Segment does); nested
    /// objects are replaced, not merged. Returns the profile after the merge.
    ///
    /// Concurrent merges of one profile serialize on its row, so no update is lost.
    ///
    /// # Errors
    /// Database errors.
    pub async fn merge_traits(
        &self,
        user_id: &str,
        traits: &Map<String, Value>,
        now: DateTime<Utc>,
    ) -> Result<ProfileRecord, StoreError> {
        let now = micros(now);
        let txn = self.db.begin().await?;
        // Create-if-missing first: afterwards the row exists and (on MySQL) is locked by us.
        profile::Entity::insert(profile::ActiveModel {
            user_id: Set(user_id.to_owned()),
            traits: Set(Value::Object(Map::new())),
            created_at: Set(now),
            updated_at: Set(now),
            ..Default::default()
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await?;
        let current = profile::Entity::find_by_id(user_id)
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or_else(|| StoreError::not_found(ENTITY, user_id))?;
        let mut record = ProfileRecord::from(current);
        for (key, value) in traits {
            record.traits.insert(key.clone(), value.clone());
        }
        record.updated_at = now;
        profile::Entity::update_many()
            .col_expr(
                Column::Traits,
                Expr::value(Value::Object(record.traits.clone())),
            )
            .col_expr(Column::UpdatedAt, Expr::value(now))
            .filter(Column::UserId.eq(user_id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(record)
    }
}
