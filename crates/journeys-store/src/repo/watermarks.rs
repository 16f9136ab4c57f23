//! Fairness-watermark heartbeats: each stand-alone data-plane replica upserts its watermark
//! (the receive time of its oldest event not yet committed, or now when idle) every few tens of
//! milliseconds; the scheduler reads the minimum over replicas whose heartbeat is recent.
//!
//! The heartbeat is a lease: a replica that stops beating (killed, partitioned) drops out once
//! its last heartbeat is older than the caller's `stale_after`, so it cannot hold hold-until
//! timeouts back forever.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::entity::watermark::{self, Column};
use crate::error::StoreError;
use crate::repo::micros;

/// Repository of watermark heartbeats; obtained from [`crate::Store::watermarks`].
#[derive(Debug, Clone, Copy)]
pub struct Watermarks<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Watermarks<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Records `watermark` for `replica_id` with heartbeat time `now` (insert or update).
    ///
    /// # Errors
    /// Database errors.
    pub async fn beat(
        &self,
        replica_id: &str,
        watermark: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = watermark::ActiveModel {
            replica_id: Set(replica_id.to_owned()),
            watermark: Set(micros(watermark)),
            heartbeat_at: Set(micros(now)),
        };
        watermark::Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::ReplicaId)
                    .update_columns([Column::Watermark, Column::HeartbeatAt])
                    .to_owned(),
            )
            .exec_without_returning(self.db)
            .await?;
        Ok(())
    }

    /// The lowest watermark of the live replicas (heartbeat at or after `now - stale_after`),
    /// or `None` when no replica is live.
    ///
    /// # Errors
    /// Database errors.
    pub async fn low(
        &self,
        now: DateTime<Utc>,
        stale_after: Duration,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let lease = chrono::Duration::from_std(stale_after).unwrap_or(chrono::Duration::MAX);
        let since = now
            .checked_sub_signed(lease)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // One row per replica: a handful of rows, so the minimum is taken here rather than
        // decoding an aggregate whose type differs by backend.
        let rows = watermark::Entity::find()
            .filter(Column::HeartbeatAt.gte(micros(since)))
            .all(self.db)
            .await?;
        Ok(rows.into_iter().map(|row| row.watermark).min())
    }

    /// Removes the row of `replica_id` (a replica shutting down gracefully). Missing rows are
    /// ignored.
    ///
    /// # Errors
    /// Database errors.
    pub async fn remove(&self, replica_id: &str) -> Result<(), StoreError> {
        watermark::Entity::delete_by_id(replica_id.to_owned())
            .exec(self.db)
            .await?;
        Ok(())
    }
}
