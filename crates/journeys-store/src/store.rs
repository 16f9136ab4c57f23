//! [`Store`]: the connection pool, backend detection, connection tuning and migrations.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use sha2::{Digest, Sha256};

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
/// How long connecting to a locked SQLite file is retried (see `connect_retrying_locked`).
const SQLITE_LOCKED_RETRY: Duration = Duration::from_secs(30);
/// MariaDB ends a session left idle 10 s inside a write transaction (its
/// `idle_write_transaction_timeout`), rolling the transaction back. A process paused
/// mid-commit (stopped, frozen) would otherwise keep its rows locked for as long as it stays
/// paused: among them its partitions' `partition_state` rows, which no other node could then
/// take over. Our transactions never wait between statements this long.
const IDLE_WRITE_TRANSACTION_TIMEOUT: &str = "SET SESSION idle_write_transaction_timeout = 10";

/// Prepared statements each MySQL/MariaDB connection keeps (sqlx's default is 100). A store
/// connection prepares about 60–80 distinct statements under load (one per table, statement and
/// row count), and more with housekeeping: at 100 the cache evicts, and an eviction sends
/// `COM_STMT_CLOSE`, which the server does not answer. sqlx does not set `TCP_NODELAY`, so the
/// connection's next statement then waits for the server's delayed ACK (about 40 ms on Linux),
/// a stall that reached every lane at once: nudge lateness p99 went from 100–500 ms to 16–35 ms
/// with this bound (BENCHMARKS.md, "The 40 ms stalls"). 512 per connection stays far below the
/// server's `max_prepared_stmt_count` (16,382) for a pool of 10 on a few nodes.
const STATEMENT_CACHE_CAPACITY: usize = 512;

/// How long [`Store::migrate`] waits for another process's migrations of the same database:
/// a long schema change on a big table may hold the lock for minutes.
pub const MIGRATE_LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest name MySQL accepts for a named lock.
const MAX_LOCK_NAME: usize = 64;

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
        if backend == Backend::MySql {
            options.map_sqlx_mysql_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE_CAPACITY));
            options.map_sqlx_mysql_pool_opts(|pool| {
                pool.after_connect(|conn, _| {
                    Box::pin(async move {
                        // MySQL has no such setting; the session works as before there.
                        if let Err(err) =
                            sqlx::Executor::execute(conn, IDLE_WRITE_TRANSACTION_TIMEOUT).await
                        {
                            tracing::debug!(error = %err, "idle write transactions are not timed out by this server");
                        }
                        Ok(())
                    })
                })
            });
        }
        let db = connect_retrying_locked(options, backend).await?;
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
    /// Processes started together on one database take turns: on MySQL/MariaDB the migrations
    /// run while this process holds the named lock `journeys_migrate:<database>` (`GET_LOCK`,
    /// held by a connection of its own, so a crash or a cancelled call releases it with the
    /// session); on SQLite they run in one `BEGIN IMMEDIATE` transaction, which also makes
    /// them all-or-nothing there. A process that waited finds nothing left to do. Waits at most
    /// [`MIGRATE_LOCK_TIMEOUT`]; see [`Store::migrate_waiting`].
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when another process kept the lock past the timeout (nothing
    /// was migrated), or any database error that leaves migrations pending.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_waiting(MIGRATE_LOCK_TIMEOUT).await
    }

    /// [`Store::migrate`], waiting at most `timeout` for another process's migrations.
    ///
    /// # Errors
    /// As [`Store::migrate`].
    pub async fn migrate_waiting(&self, timeout: Duration) -> Result<(), StoreError> {
        match self.backend {
            Backend::MySql => self.migrate_mysql(timeout).await,
            Backend::Sqlite => self.migrate_sqlite(timeout).await,
        }
    }

    /// Runs the migrations on the pool while a dedicated session holds the named lock.
    ///
    /// The session is detached from the pool: if this future is dropped mid-way, the session
    /// closes and the server releases the lock, instead of the lock idling in a pooled
    /// connection that no one will release it from.
    async fn migrate_mysql(&self, timeout: Duration) -> Result<(), StoreError> {
        let mut session = self
            .db
            .get_mysql_connection_pool()
            .acquire()
            .await
            .map_err(sqlx_err)?
            .detach();
        let database: Option<String> = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(&mut session)
            .await
            .map_err(sqlx_err)?;
        let lock = migrate_lock_name(database.as_deref().unwrap_or_default());
        // Whole seconds: MySQL 8 truncates a fractional timeout. Round up so a timeout below
        // one second still waits.
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let got: Option<i64> = sqlx::query_scalar("SELECT CAST(GET_LOCK(?, ?) AS SIGNED)")
            .bind(&lock)
            .bind(seconds)
            .fetch_one(&mut session)
            .await
            .map_err(sqlx_err)?;
        match got {
            Some(1) => {}
            Some(_) => {
                return Err(StoreError::Unavailable(format!(
                    "migrations not run: another process held the migration lock {lock} for \
                     more than {seconds} s (is a migration still running?)"
                )));
            }
            None => {
                return Err(StoreError::Internal(format!(
                    "the server refused the migration lock {lock}"
                )));
            }
        }
        tracing::debug!(%lock, "holding the migration lock");
        let result = self.migrate_unlocked().await;
        let released: Result<Option<i64>, _> =
            sqlx::query_scalar("SELECT CAST(RELEASE_LOCK(?) AS SIGNED)")
                .bind(&lock)
                .fetch_one(&mut session)
                .await;
        match released {
            Ok(Some(1)) => {}
            // The session was lost during the migrations (so was the lock) or the release
            // failed: closing the session releases whatever it still holds.
            other => {
                tracing::warn!(%lock, outcome = ?other, "migration lock was not released cleanly");
            }
        }
        if let Err(err) = session.close().await {
            tracing::debug!(error = %err, "closing the migration lock session");
        }
        result
    }

    /// Runs the migrations in one `BEGIN IMMEDIATE` transaction: the write lock it takes
    /// first serialises processes migrating the same file, and SQLite DDL is transactional.
    async fn migrate_sqlite(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let txn = loop {
            // Each attempt waits up to the busy timeout for the other writer.
            match self
                .db
                .begin_with_options(options)
                .await
                .map_err(StoreError::from)
            {
                Ok(txn) => break txn,
                Err(err) if err.is_retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %err, "waiting for another process's migrations");
                }
                Err(StoreError::Unavailable(detail)) => {
                    return Err(StoreError::Unavailable(format!(
                        "migrations not run: another process kept the database locked for \
                         more than {} s ({detail})",
                        timeout.as_secs()
                    )));
                }
                Err(err) => return Err(err),
            }
        };
        Migrator::up(&txn, None).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Applies the pending migrations without any lock.
    ///
    /// A race can still happen if the lock's session was lost mid-way (the server released the
    /// lock); the loser's error is then ignored as long as the schema ends up fully migrated.
    async fn migrate_unlocked(&self) -> Result<(), StoreError> {
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

    /// Identities linked to profiles, and refused links.
    #[must_use]
    pub fn identities(&self) -> crate::repo::Identities<'_> {
        crate::repo::Identities::new(&self.db)
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

/// The named lock serialising migrations of `database`. Lock names are server-wide, so the
/// database is part of the name (hashed when the name would be too long).
fn migrate_lock_name(database: &str) -> String {
    const PREFIX: &str = "journeys_migrate:";
    if PREFIX.len() + database.len() <= MAX_LOCK_NAME {
        format!("{PREFIX}{database}")
    } else {
        let digest = hex::encode(Sha256::digest(database.as_bytes()));
        format!("{PREFIX}{}", &digest[..MAX_LOCK_NAME - PREFIX.len()])
    }
}

/// A `sqlx` error from the lock session, as the store reports database errors.
fn sqlx_err(err: sqlx::Error) -> StoreError {
    StoreError::from(DbErr::Query(RuntimeErr::SqlxError(Arc::new(err))))
}

/// Connects; on SQLite, retries for up to [`SQLITE_LOCKED_RETRY`] while the file is locked.
/// Opening a new SQLite file switches it to WAL, which needs the file's write lock and, unlike
/// statements, does not wait for it: processes starting together on one new file would
/// otherwise fail with "database is locked" while another one migrates.
async fn connect_retrying_locked(
    options: ConnectOptions,
    backend: Backend,
) -> Result<DatabaseConnection, StoreError> {
    let deadline = Instant::now() + SQLITE_LOCKED_RETRY;
    loop {
        match Database::connect(options.clone()).await {
            Ok(db) => return Ok(db),
            Err(err)
                if backend == Backend::Sqlite
                    && err.to_string().contains("database is locked")
                    && Instant::now() < deadline =>
            {
                tracing::debug!(error = %err, "the SQLite file is locked; connecting again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_LOCK_NAME, migrate_lock_name};

    #[test]
    fn migrate_lock_names_fit_mysql_and_keep_databases_apart() {
        assert_eq!(migrate_lock_name("journeys"), "journeys_migrate:journeys");
        let long_a = "a".repeat(64);
        let long_b = format!("{}b", "a".repeat(63));
        let (a, b) = (migrate_lock_name(&long_a), migrate_lock_name(&long_b));
        assert_eq!(a.len(), MAX_LOCK_NAME);
        assert_eq!(b.len(), MAX_LOCK_NAME);
        assert_ne!(a, b);
    }
}
