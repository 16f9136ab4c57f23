//! Durable timers (delays and hold-until deadlines): claiming due timers with leases so that any
//! number of scheduler replicas can run, releasing claims, and reads for tests and health.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseConnection;

use crate::error::StoreError;

/// A stored timer. Created and deleted through [`crate::Changes`]; claimed through
/// [`Timers::claim_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerRecord {
    /// `UUIDv7` text.
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    /// When the timer fires.
    pub due_at: DateTime<Utc>,
    /// What fires (`delay`, `hold_timeout`, ...): the core's vocabulary, opaque to the store.
    pub kind: String,
    /// The step that set the timer.
    pub step_key: String,
}

/// Health figures of the timer table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStats {
    /// Timers in the table, claimed or not.
    pub pending: i64,
    /// Timers whose `due_at` is before `now`.
    pub overdue: i64,
    /// The earliest `due_at`.
    pub next_due_at: Option<DateTime<Utc>>,
}

/// Repository of timers; obtained from [`crate::Store::timers`].
#[derive(Debug, Clone, Copy)]
pub struct Timers<'a> {
    db: &'a DatabaseConnection,
}

impl<'a> Timers<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    /// Claims up to `limit` timers due at or before `until` whose claim is free or expired,
    /// earliest first, leasing them to the caller until `lease_until`.
    ///
    /// # Errors
    /// Database errors.
    pub async fn claim_due(
        &self,
        until: DateTime<Utc>,
        limit: u32,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let _ = (self.db, until, limit, lease_until);
        unimplemented!()
    }

    /// Clears the claims of `ids` (claimed timers that were not fired).
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, ids: &[String]) -> Result<(), StoreError> {
        let _ = ids;
        unimplemented!()
    }

    /// The timer with `id`, if it still exists.
    ///
    /// # Errors
    /// Database errors.
    pub async fn get(&self, id: &str) -> Result<Option<TimerRecord>, StoreError> {
        let _ = id;
        unimplemented!()
    }

    /// The timers of one instance, earliest first.
    ///
    /// # Errors
    /// Database errors.
    pub async fn list_for_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<TimerRecord>, StoreError> {
        let _ = instance_id;
        unimplemented!()
    }

    /// Counts for health and metrics.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stats(&self, now: DateTime<Utc>) -> Result<TimerStats, StoreError> {
        let _ = now;
        unimplemented!()
    }
}
