//! The transactional outbox seen from the delivery dispatcher: claiming due sends with leases,
//! recording their outcome (sent, retry later, dead-lettered), and listing and replaying dead
//! letters.

use std::fmt;

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;
use serde_json::Value;

use crate::error::StoreError;
use crate::page::Page;

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboxStatus {
    /// Waiting for its (next) attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Gave up: a final error, or the retry budget is spent. Can be replayed.
    Dead,
}

impl OutboxStatus {
    /// The stored form (`PENDING`, `SENT`, `DEAD`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Sent => "SENT",
            Self::Dead => "DEAD",
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A send queued by a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    pub step_key: String,
    pub destination_id: String,
    /// Sent as `messageId` and `Idempotency-Key` on every attempt, so repeats can be dropped.
    pub message_id: String,
    /// HTTP method of the request.
    pub method: String,
    /// Path appended to the destination's base URL.
    pub path: String,
    /// The request body.
    pub payload: Value,
    pub status: OutboxStatus,
    /// Attempts made so far.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// W3C `traceparent` of the transition, so delivery joins the event's trace.
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub dead_at: Option<DateTime<Utc>>,
}

/// Repository of outbox rows; obtained from [`crate::Store::outbox`].
#[derive(Debug, Clone, Copy)]
pub struct Outbox<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Claims up to `limit` pending rows due at `now` whose claim is free or expired, earliest
    /// first, leasing them to the caller until `lease_until`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let _ = (self.db, now, limit, lease_until);
        unimplemented!()
    }

    /// Marks the row delivered.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn mark_sent(&self, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let _ = (id, now);
        unimplemented!()
    }

    /// Records a failed attempt to be retried at `next_attempt_at`, and clears the claim.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn schedule_retry(
        &self,
        id: &str,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        last_error: &str,
    ) -> Result<(), StoreError> {
        let _ = (id, attempts, next_attempt_at, last_error);
        unimplemented!()
    }

    /// Dead-letters the row with its last error.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn mark_dead(
        &self,
        id: &str,
        attempts: i32,
        last_error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _ = (id, attempts, last_error, now);
        unimplemented!()
    }

    /// The earliest `next_attempt_at` of pending rows (claimed or not).
    ///
    /// # Errors
    /// Database errors.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        unimplemented!()
    }

    /// Dead letters in id order, optionally of one destination and/or journey.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_dead(
        &self,
        destination_id: Option<&str>,
        journey_id: Option<&str>,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<Page<OutboxRecord>, StoreError> {
        let _ = (destination_id, journey_id, page_size, page_token);
        unimplemented!()
    }

    /// Moves dead rows among `ids` back to pending, due at `now` with no attempts; returns how
    /// many rows changed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn replay(&self, ids: &[String], now: DateTime<Utc>) -> Result<u64, StoreError> {
        let _ = (ids, now);
        unimplemented!()
    }

    /// The row with `id`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`].
    pub async fn get(&self, id: &str) -> Result<OutboxRecord, StoreError> {
        let _ = id;
        unimplemented!()
    }
}
