//! Audiences: named, keyed sets of profiles, and their members.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

use crate::entity::audience::{self, Column};
use crate::entity::audience_member;
use crate::error::StoreError;
use crate::page::{self, Page};
use crate::repo::{INSERT_CHUNK, micros};

const ENTITY: &str = "audience";

/// A stored audience with its current size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceRecord {
    /// Stable identifier used by journeys, e.g. `vip_customers`.
    pub key: String,
    pub name: String,
    /// False once archived; only active audiences can be used in a journey.
    pub active: bool,
    /// Members at the time of the read.
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

impl AudienceRecord {
    fn from_model(m: audience::Model, member_count: i64) -> Self {
        Self {
            key: m.key,
            name: m.name,
            active: m.active,
            member_count,
            created_at: m.created_at,
            archived_at: m.archived_at,
        }
    }
}

/// Repository of audiences; obtained from [`crate::Store::audiences`].
#[derive(Debug, Clone, Copy)]
pub struct Audiences<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Audiences<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Creates an active, empty audience.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the key is taken.
    pub async fn insert(
        &self,
        key: &str,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<AudienceRecord, StoreError> {
        let model = audience::Model {
            key: key.to_owned(),
            name: name.to_owned(),
            active: true,
            created_at: micros(now),
            archived_at: None,
        };
        let active = audience::ActiveModel {
            key: Set(model.key.clone()),
            name: Set(model.name.clone()),
            active: Set(model.active),
            created_at: Set(model.created_at),
            archived_at: Set(model.archived_at),
        };
        audience::Entity::insert(active)
            .exec_without_returning(self.db)
            .await
            .map_err(|e| StoreError::from_write(ENTITY, e))?;
        Ok(AudienceRecord::from_model(model, 0))
    }

    /// The audience with `key`, with its member count.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, key: &str) -> Result<AudienceRecord, StoreError> {
        let model = find(self.db, key).await?;
        let count = member_counts(self.db, vec![key.to_owned()]).await?;
        Ok(AudienceRecord::from_model(
            model,
            count.get(key).copied().unwrap_or(0),
        ))
    }

    /// Audiences in key order, archived ones included.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list(
        &self,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<AudienceRecord>, StoreError> {
        let size = page::effective_size(page_size);
        let mut query = audience::Entity::find()
            .order_by_asc(Column::Key)
            .limit(size + 1);
        if let Some(after) = page::token(page_token) {
            query = query.filter(Column::Key.gt(after));
        }
        let models = query.all(self.db).await?;
        let counts = member_counts(self.db, models.iter().map(|m| m.key.clone()).collect()).await?;
        let rows = models
            .into_iter()
            .map(|m| {
                let count = counts.get(&m.key).copied().unwrap_or(0);
                AudienceRecord::from_model(m, count)
            })
            .collect();
        Ok(page::finish(rows, size, |a| a.key.clone()))
    }

    /// Archives the audience (it keeps its members). Archiving twice keeps the first time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn archive(
        &self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<AudienceRecord, StoreError> {
        audience::Entity::update_many()
            .col_expr(Column::Active, Expr::value(false))
            .col_expr(Column::ArchivedAt, Expr::value(micros(now)))
            .filter(Column::Key.eq(key))
            .filter(Column::Active.eq(true))
            .exec(self.db)
            .await?;
        self.get(key).await
    }

    /// Adds profiles to the audience; ones already in it (or repeated in `user_ids`) are
    /// ignored. Returns how many were added. Archived audiences accept members too: whether
    /// that is allowed is the caller's rule.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the audience does not exist.
    pub async fn add_members(
        &self,
        key: &str,
        user_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let now = micros(now);
        let wanted: BTreeSet<&str> = user_ids.iter().map(String::as_str).collect();
        let wanted: Vec<&str> = wanted.into_iter().collect();
        let txn = self.db.begin().await?;
        find(&txn, key).await?;
        let mut added = 0u64;
        for chunk in wanted.chunks(INSERT_CHUNK) {
            let existing: BTreeSet<String> = audience_member::Entity::find()
                .select_only()
                .column(audience_member::Column::UserId)
                .filter(audience_member::Column::AudienceKey.eq(key))
                .filter(audience_member::Column::UserId.is_in(chunk.iter().copied()))
                .into_tuple::<String>()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            let new: Vec<audience_member::ActiveModel> = chunk
                .iter()
                .filter(|id| !existing.contains(**id))
                .map(|id| audience_member::ActiveModel {
                    audience_key: Set(key.to_owned()),
                    user_id: Set((*id).to_owned()),
                    added_at: Set(now),
                })
                .collect();
            added += new.len() as u64;
            // A concurrent add of the same member must not fail the batch.
            audience_member::Entity::insert_many(new)
                .on_conflict_do_nothing()
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(added)
    }

    /// Removes profiles from the audience; ones not in it are ignored. Returns how many were
    /// removed.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the audience does not exist.
    pub async fn remove_members(&self, key: &str, user_ids: &[String]) -> Result<u64, StoreError> {
        let txn = self.db.begin().await?;
        find(&txn, key).await?;
        let mut removed = 0u64;
        for chunk in user_ids.chunks(INSERT_CHUNK) {
            removed += audience_member::Entity::delete_many()
                .filter(audience_member::Column::AudienceKey.eq(key))
                .filter(audience_member::Column::UserId.is_in(chunk.iter().map(String::as_str)))
                .exec(&txn)
                .await?
                .rows_affected;
        }
        txn.commit().await?;
        Ok(removed)
    }

    /// Member user ids in order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when the audience does not exist.
    pub async fn list_members(
        &self,
        key: &str,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<String>, StoreError> {
        find(self.db, key).await?;
        let size = page::effective_size(page_size);
        let mut query = audience_member::Entity::find()
            .select_only()
            .column(audience_member::Column::UserId)
            .filter(audience_member::Column::AudienceKey.eq(key))
            .order_by_asc(audience_member::Column::UserId)
            .limit(size + 1);
        if let Some(after) = page::token(page_token) {
            query = query.filter(audience_member::Column::UserId.gt(after));
        }
        let rows = query.into_tuple::<String>().all(self.db).await?;
        Ok(page::finish(rows, size, Clone::clone))
    }

    /// Whether `user_id` is a member of the audience (false for an unknown audience).
    ///
    /// # Errors
    /// Database errors.
    pub async fn is_member(&self, key: &str, user_id: &str) -> Result<bool, StoreError> {
        let found = audience_member::Entity::find()
            .filter(audience_member::Column::AudienceKey.eq(key))
            .filter(audience_member::Column::UserId.eq(user_id))
            .count(self.db)
            .await?;
        Ok(found > 0)
    }

    /// Keys of every audience `user_id` belongs to, archived ones included, in key order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn audiences_of(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        let keys = audience_member::Entity::find()
            .select_only()
            .column(audience_member::Column::AudienceKey)
            .filter(audience_member::Column::UserId.eq(user_id))
            .order_by_asc(audience_member::Column::AudienceKey)
            .into_tuple::<String>()
            .all(self.db)
            .await?;
        Ok(keys)
    }
}

async fn find<C: ConnectionTrait>(db: &C, key: &str) -> Result<audience::Model, StoreError> {
    audience::Entity::find_by_id(key)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found(ENTITY, key))
}

/// Member counts of `keys`, in one grouped query.
async fn member_counts<C: ConnectionTrait>(
    db: &C,
    keys: Vec<String>,
) -> Result<HashMap<String, i64>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = audience_member::Entity::find()
        .select_only()
        .column(audience_member::Column::AudienceKey)
        .column_as(
            Expr::from(Func::count(Expr::col(audience_member::Column::UserId))),
            "members",
        )
        .filter(audience_member::Column::AudienceKey.is_in(keys))
        .group_by(audience_member::Column::AudienceKey)
        .into_tuple::<(String, i64)>()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}
