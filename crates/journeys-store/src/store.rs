//! [`Store`]: the connection pool, backend detection, connection tuning and migrations.

use std::fmt;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait;

use crate::error::StoreError;
use crate::migration::Migrator;
use crate::repo::{
    Audiences, Batches, Catalog, Destinations, Instances, Journeys, Outbox, Partitions, Profiles,
    Sources, Timers, Watermarks,
};

/// How long a caller waits for a pooled connection (and the first connect retries) before the
/// store reports itself unavailable: long enough for a busy pool, short enough that a
/// request fails while its client still waits.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a SQLite statement waits for a lock held by another process before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (single process; `journeys dev` and tests).
    Sqlite,
    /// MySQL 8 or MariaDB 10.6+.
    MySql,
}

impl Backend {
    /// Lower-case name, for logs and health output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::MySql => "mysql",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Handle to the relational store. Cheap to clone: clones share one connection pool.
///
/// On SQLite the pool holds a single connection, so every operation is serialized (SQLite allows
/// one writer anyway, and an in-memory database lives only as long as its connection). The
/// consequence for callers: never call back into the `Store` while holding one of its
/// transactions, or the second call waits for the first forever.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    backend: Backend,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url`: `sqlite://path.db?mode=rwc`, `sqlite::memory:` or
    /// `mysql://user:password@host:3306/database`.
    ///
    /// SQLite connections use WAL journaling, `synchronous = NORMAL` (a commit survives the
    /// process being killed; only an OS crash can lose the last commits), foreign keys and a busy
    /// timeout; a missing database file is created.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached, [`StoreError::Internal`]
    /// for an unsupported URL or a rejected login.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("mysql:") || url.starts_with("mariadb:") {
            Backend::MySql
        } else {
            return Err(StoreError::Internal(
                "unsupported database url: expected sqlite: or mysql:".to_owned(),
            ));
        };
        // sqlx understands only the `mysql:` scheme for both servers.
        let url = match url.strip_prefix("mariadb:") {
            Some(rest) => format!("mysql:{rest}"),
            None => url.to_owned(),
        };
        let mut options = ConnectOptions::new(url);
        // Statement logging would print every query (with its values) at INFO.
        options.sqlx_logging(false).acquire_timeout(ACQUIRE_TIMEOUT);
        if backend == Backend::Sqlite {
            options
                .max_connections(1)
                .min_connections(1)
                // Never recycle the only connection: an in-memory database would vanish with it.
                .idle_timeout(None)
                .max_lifetime(None)
                .map_sqlx_sqlite_opts(|opts| {
                    opts.create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .foreign_keys(true)
                        .busy_timeout(SQLITE_BUSY_TIMEOUT)
                });
        }
        let db = Database::connect(options).await?;
        let detected = match db.get_database_backend() {
            DbBackend::Sqlite => Backend::Sqlite,
            DbBackend::MySql => Backend::MySql,
            other => {
                return Err(StoreError::Internal(format!(
                    "unsupported database backend {}",
                    other.as_str()
                )));
            }
        };
        debug_assert_eq!(detected, backend);
        tracing::debug!(backend = %detected, "connected to store");
        Ok(Self {
            db,
            backend: detected,
        })
    }

    /// Applies every pending migration. Idempotent, so services call it at each start.
    ///
    /// When two processes start together and race, the loser's error is ignored as long as the
    /// schema ends up fully migrated.
    ///
    /// # Errors
    /// Any database error that leaves migrations pending.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match Migrator::up(&self.db, None).await {
            Ok(()) => Ok(()),
            Err(err) => {
                let pending = Migrator::get_pending_migrations(&self.db).await?;
                if pending.is_empty() {
                    tracing::warn!(error = %err, "migration raced with another process; schema is current");
                    Ok(())
                } else {
                    Err(err.into())
                }
            }
        }
    }

    /// Names of the migrations that are not applied yet.
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        let pending = Migrator::get_pending_migrations(&self.db).await?;
        Ok(pending.iter().map(|m| m.name().to_owned()).collect())
    }

    /// The database behind this store.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers (for health checks).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db
            .ping()
            .await
            .map_err(|err| StoreError::Unavailable(err.to_string()))
    }

    /// Closes the pool, waiting for connections in use to be returned.
    ///
    /// # Errors
    /// Database errors while closing.
    pub async fn close(self) -> Result<(), StoreError> {
        self.db.close().await.map_err(StoreError::from)
    }

    /// Journey definitions.
    #[must_use]
    pub fn journeys(&self) -> Journeys<'_> {
        Journeys::new(&self.db)
    }

    /// Delivery destinations.
    #[must_use]
    pub fn destinations(&self) -> Destinations<'_> {
        Destinations::new(&self.db)
    }

    /// Ingestion sources (write keys).
    #[must_use]
    pub fn sources(&self) -> Sources<'_> {
        Sources::new(&self.db)
    }

    /// Audiences and their members.
    #[must_use]
    pub fn audiences(&self) -> Audiences<'_> {
        Audiences::new(&self.db)
    }

    /// Profiles and their traits.
    #[must_use]
    pub fn profiles(&self) -> Profiles<'_> {
        Profiles::new(&self.db)
    }

    /// The event catalog.
    #[must_use]
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog::new(&self.db)
    }

    /// Journey instances and their timelines.
    #[must_use]
    pub fn instances(&self) -> Instances<'_> {
        Instances::new(&self.db)
    }

    /// The evaluator's batches: one all-or-nothing commit per micro-batch or timer firing, the
    /// profile reads before evaluating, statistics and housekeeping.
    #[must_use]
    pub fn batches(&self) -> Batches<'_> {
        Batches::new(&self.db)
    }

    /// Durable timers (scheduler).
    #[must_use]
    pub fn timers(&self) -> Timers<'_> {
        Timers::new(&self.db)
    }

    /// The delivery outbox (dispatcher, dead-letter API).
    #[must_use]
    pub fn outbox(&self) -> Outbox<'_> {
        Outbox::new(&self.db)
    }

    /// Partition ownership: leases, epochs, node heartbeats (the engine's owners).
    #[must_use]
    pub fn partitions(&self) -> Partitions<'_> {
        Partitions::new(&self.db)
    }

    /// Fairness-watermark heartbeats of the data-plane replicas.
    #[must_use]
    pub fn watermarks(&self) -> Watermarks<'_> {
        Watermarks::new(&self.db)
    }

    /// The underlying connection, for repositories added inside this crate.
    #[allow(dead_code)]
    pub(crate) fn connection(&self) -> &DatabaseConnection {
        &self.db
    }
}
