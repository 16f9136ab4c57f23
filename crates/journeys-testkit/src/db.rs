//! Throw-away databases for tests: each [`TestDb`] is a fresh, migrated, uniquely named
//! database that is removed again when the test ends, so tests never see each other's rows.
//!
//! SQLite always runs; MySQL/MariaDB runs when `JOURNEYS_TEST_MYSQL_URL` names a server
//! (`mysql://root@127.0.0.1:3306`). [`each_backend`] runs one test body on every configured
//! backend and removes each database afterwards; [`backends`] hands the databases out for a
//! test that manages them itself.

use std::ops::Deref;
use std::path::PathBuf;

use journeys_store::{
    Backend, Store, StoreError, create_database, drop_database, remove_sqlite_files,
};

/// Environment variable naming a MySQL/MariaDB server for tests (no database in the path).
pub const MYSQL_URL_ENV: &str = "JOURNEYS_TEST_MYSQL_URL";

/// What has to be removed when the test database goes away.
#[derive(Debug, Clone)]
enum Location {
    SqliteFile(PathBuf),
    MySql {
        server_url: String,
        database: String,
    },
}

/// A fresh, migrated database with a [`Store`] connected to it. Dereferences to the store.
///
/// Call [`TestDb::close`] at the end of a test to remove the database; if the test panics
/// first, `Drop` removes it on a best-effort basis.
#[derive(Debug)]
pub struct TestDb {
    store: Option<Store>,
    url: String,
    location: Location,
    removed: bool,
}

impl TestDb {
    /// A SQLite database in a uniquely named file under the system temp directory.
    ///
    /// # Errors
    /// When the file cannot be created or migrated.
    pub async fn sqlite() -> Result<Self, StoreError> {
        let path = std::env::temp_dir().join(format!("journeys-test-{}.db", unique_suffix()));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let location = Location::SqliteFile(path);
        Self::open(url, location).await
    }

    /// A MySQL/MariaDB database `journeys_test_<random>` on the server named by
    /// `JOURNEYS_TEST_MYSQL_URL`, or `None` when that variable is unset or empty.
    ///
    /// # Errors
    /// When the server cannot be reached or the database cannot be created or migrated.
    pub async fn mysql() -> Result<Option<Self>, StoreError> {
        let Some(server_url) = std::env::var(MYSQL_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
        else {
            return Ok(None);
        };
        let database = format!("journeys_test_{}", unique_suffix());
        let url = create_database(&server_url, &database).await?;
        let location = Location::MySql {
            server_url,
            database,
        };
        Self::open(url, location).await.map(Some)
    }

    async fn open(url: String, location: Location) -> Result<Self, StoreError> {
        // Built before connecting so that a failed connect or migration still cleans up.
        let mut db = Self {
            store: None,
            url,
            location,
            removed: false,
        };
        let store = Store::connect(&db.url).await?;
        store.migrate().await?;
        db.store = Some(store);
        Ok(db)
    }

    /// The store connected to this database.
    ///
    /// # Panics
    /// Never in practice: the store is set from construction until `close`, which consumes
    /// the `TestDb`.
    #[must_use]
    pub fn store(&self) -> &Store {
        match &self.store {
            Some(store) => store,
            None => unreachable!("TestDb without a store"),
        }
    }

    /// URL of this database, for starting services on it.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which backend this database runs on.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.store().backend()
    }

    /// Closes the store and removes the database.
    ///
    /// # Errors
    /// When the database could not be dropped (the store is closed regardless).
    pub async fn close(mut self) -> Result<(), StoreError> {
        if let Some(store) = self.store.take() {
            store.close().await?;
        }
        self.removed = true;
        remove(&self.location).await
    }
}

impl Deref for TestDb {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.store()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let location = self.location.clone();
        // The caller may be inside a runtime (where blocking on a future is not allowed) or
        // not; a short-lived thread with its own runtime works in both cases.
        let cleanup =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        if let Err(err) = runtime.block_on(remove(&location)) {
                            tracing::warn!(error = %err, "could not remove test database");
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "could not remove test database"),
                }
            });
        if cleanup.join().is_err() {
            tracing::warn!("test database cleanup panicked");
        }
    }
}

/// A fresh database on every configured backend: SQLite always, MySQL when
/// `JOURNEYS_TEST_MYSQL_URL` is set. The caller closes each one.
///
/// # Panics
/// When a configured backend cannot provide a database: the test cannot run, and saying so
/// loudly beats skipping it.
pub async fn backends() -> Vec<TestDb> {
    let mut dbs = Vec::with_capacity(2);
    match TestDb::sqlite().await {
        Ok(db) => dbs.push(db),
        Err(err) => panic!("cannot create a SQLite test database: {err}"),
    }
    match TestDb::mysql().await {
        Ok(Some(db)) => dbs.push(db),
        Ok(None) => {}
        Err(err) => panic!("cannot create a MySQL test database ({MYSQL_URL_ENV}): {err}"),
    }
    dbs
}

/// Runs `body` once per configured backend, each time on a fresh database that is removed
/// afterwards, and returns the first failure (or the last outcome).
///
/// The backend is written to stderr before each run, so a failing test's captured output says
/// which backend failed. A body that returns an error stops the runs; its database is removed
/// on drop.
///
/// # Panics
/// When a database cannot be created or removed.
pub async fn each_backend<R: Outcome>(body: impl AsyncFn(&TestDb) -> R) -> R {
    let mut outcome = R::passed();
    for db in backends().await {
        eprintln!("-- on {:?}", db.backend());
        outcome = body(&db).await;
        if outcome.failed() {
            return outcome;
        }
        if let Err(err) = db.close().await {
            panic!("cannot remove the test database: {err}");
        }
    }
    outcome
}

/// What a test body of [`each_backend`] returns: nothing (it panics to fail) or a `Result`.
pub trait Outcome {
    /// The outcome of a body that ran on no backend.
    fn passed() -> Self;
    /// Whether this outcome ends the runs.
    fn failed(&self) -> bool;
}

impl Outcome for () {
    fn passed() -> Self {}

    fn failed(&self) -> bool {
        false
    }
}

impl<E> Outcome for Result<(), E> {
    fn passed() -> Self {
        Ok(())
    }

    fn failed(&self) -> bool {
        self.is_err()
    }
}

/// Deletes the database file(s) or drops the MySQL database.
async fn remove(location: &Location) -> Result<(), StoreError> {
    match location {
        Location::SqliteFile(path) => {
            remove_sqlite_files(path).map_err(|err| StoreError::Internal(err.to_string()))
        }
        Location::MySql {
            server_url,
            database,
        } => drop_database(server_url, database).await,
    }
}

/// 16 random hex digits: unique enough for concurrently running test processes.
fn unique_suffix() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(16);
    hex
}
