//! The store's one error type, and how database errors map onto it.
//!
//! Callers branch on the variant (not on message text): `NotFound` and `AlreadyExists` become
//! `NOT_FOUND` / `ALREADY_EXISTS` at the gRPC edge, `Conflict` is an optimistic-concurrency loss,
//! `Unavailable` is worth retrying, and `Internal` is a bug or a corrupt row.

use std::ops::Deref;

use sea_orm::sqlx::mysql::MySqlDatabaseError;
use sea_orm::sqlx::sqlite::SqliteError;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Errors returned by every store operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The addressed row does not exist.
    #[error("{entity} {id} not found")]
    NotFound {
        /// Kind of row, e.g. `journey`.
        entity: &'static str,
        /// The key that was looked up.
        id: String,
    },
    /// A unique key (name, key hash, primary key) is already taken.
    #[error("{entity} already exists: {detail}")]
    AlreadyExists {
        /// Kind of row, e.g. `journey`.
        entity: &'static str,
        /// What collided, as reported by the database.
        detail: String,
    },
    /// An optimistic-concurrency check failed: someone else changed the row first.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A partition owner's commit was refused: another node took one of the batch's partitions
    /// (a newer epoch) since this one acquired it. Nothing of the batch was written.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The database could not be reached or was too busy; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a schema mismatch or a row that does not decode.
    #[error("store internal error: {0}")]
    Internal(String),
}

impl StoreError {
    /// `NotFound` for `entity` keyed by `id`.
    pub(crate) fn not_found(entity: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            entity,
            id: id.into(),
        }
    }

    /// Whether retrying the same operation later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Maps a database error raised while writing `entity`, turning unique-key violations into
    /// [`StoreError::AlreadyExists`].
    pub(crate) fn from_write(entity: &'static str, err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => {
                Self::AlreadyExists { entity, detail }
            }
            _ => Self::from(err),
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        match &err {
            DbErr::ConnectionAcquire(_) => Self::Unavailable(err.to_string()),
            DbErr::Conn(runtime) | DbErr::Exec(runtime) | DbErr::Query(runtime) => {
                if is_transient(runtime) {
                    Self::Unavailable(err.to_string())
                } else if let Some(SqlErr::UniqueConstraintViolation(detail)) = err.sql_err() {
                    Self::AlreadyExists {
                        entity: "row",
                        detail,
                    }
                } else {
                    Self::Internal(err.to_string())
                }
            }
            _ => Self::Internal(err.to_string()),
        }
    }
}

/// Connection loss, pool exhaustion, lock timeouts and deadlocks: conditions that go away.
fn is_transient(err: &RuntimeErr) -> bool {
    let RuntimeErr::SqlxError(err) = err else {
        return false;
    };
    match err.deref() {
        sea_orm::sqlx::Error::Io(_)
        | sea_orm::sqlx::Error::Tls(_)
        | sea_orm::sqlx::Error::PoolTimedOut
        | sea_orm::sqlx::Error::PoolClosed
        | sea_orm::sqlx::Error::WorkerCrashed => true,
        sea_orm::sqlx::Error::Database(db) => {
            if let Some(mysql) = db.try_downcast_ref::<MySqlDatabaseError>() {
                // 1205 lock wait timeout, 1213 deadlock: the transaction can be run again.
                return matches!(mysql.number(), 1205 | 1213);
            }
            if db.try_downcast_ref::<SqliteError>().is_some() {
                // SQLITE_BUSY (5) and SQLITE_LOCKED (6); extended codes keep them in the low byte.
                let code = db.code().and_then(|c| c.parse::<u32>().ok()).unwrap_or(0);
                return matches!(code & 0xff, 5 | 6);
            }
            false
        }
        _ => false,
    }
}
