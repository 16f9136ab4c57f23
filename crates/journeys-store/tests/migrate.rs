//! Processes started together on an empty database: migrations take turns, every process comes
//! up, and the schema is the one a lone migration builds.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

use journeys_store::{Store, StoreError, create_database, drop_database, remove_sqlite_files};
use journeys_testkit::db::MYSQL_URL_ENV;

/// How many processes start together.
const STARTERS: usize = 4;

/// Bound on each test's waits: migrating an empty database takes well under a second.
const BOUND: Duration = Duration::from_secs(60);

/// A database that is created empty (never migrated) and removed at the end.
enum Fresh {
    Sqlite(std::path::PathBuf),
    MySql { server: String, database: String },
}

impl Fresh {
    fn sqlite() -> Self {
        Self::Sqlite(std::env::temp_dir().join(format!("journeys-migrate-{}.db", suffix())))
    }

    async fn mysql() -> Option<Self> {
        let server = std::env::var(MYSQL_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())?;
        let database = format!("journeys_test_{}", suffix());
        create_database(&server, &database).await.unwrap();
        Some(Self::MySql { server, database })
    }

    fn url(&self) -> String {
        match self {
            Self::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            Self::MySql { server, database } => journeys_store::database_url(server, database),
        }
    }

    async fn remove(self) {
        match self {
            Self::Sqlite(path) => remove_sqlite_files(&path).unwrap(),
            Self::MySql { server, database } => drop_database(&server, &database).await.unwrap(),
        }
    }
}

fn suffix() -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(16);
    hex
}

/// Every configured backend: SQLite always, MySQL when `JOURNEYS_TEST_MYSQL_URL` is set.
async fn fresh_databases() -> Vec<Fresh> {
    let mut all = vec![Fresh::sqlite()];
    match Fresh::mysql().await {
        Some(db) => all.push(db),
        None => eprintln!("{MYSQL_URL_ENV} unset: MySQL part skipped"),
    }
    all
}

/// Tables, columns and indexes of the database at `url`, in a stable order.
async fn schema_of(url: &str) -> Vec<String> {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let queries: &[&str] = match backend {
        DbBackend::Sqlite => &[
            "SELECT type || ' ' || name || ' ' || tbl_name || ' ' || COALESCE(sql, '') AS line \
             FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
        ],
        _ => &[
            "SELECT CONCAT(table_name, '.', column_name, ' ', column_type, ' ', is_nullable) \
             AS line FROM information_schema.columns WHERE table_schema = DATABASE() \
             ORDER BY table_name, ordinal_position",
            "SELECT CONCAT(table_name, ' index ', index_name, ' ', seq_in_index, ' ', \
             column_name, ' ', non_unique) AS line FROM information_schema.statistics \
             WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index",
        ],
    };
    let mut lines = Vec::new();
    for sql in queries {
        let rows = db
            .query_all_raw(Statement::from_string(backend, (*sql).to_owned()))
            .await
            .unwrap();
        for row in rows {
            lines.push(row.try_get::<String>("", "line").unwrap());
        }
    }
    db.close().await.unwrap();
    lines
}

#[tokio::test]
async fn processes_started_together_on_an_empty_database_all_migrate() {
    for fresh in fresh_databases().await {
        eprintln!("-- on {}", fresh.url());
        // The same schema as one process migrating alone is the reference.
        let reference = match &fresh {
            Fresh::Sqlite(_) => Fresh::sqlite(),
            Fresh::MySql { .. } => Fresh::mysql().await.unwrap(),
        };
        let outcome = start_together(&fresh.url(), &reference.url()).await;
        // Removed before judging, so that a failure leaves no database behind.
        reference.remove().await;
        fresh.remove().await;
        outcome.unwrap();
    }
}

/// Migrates `url` from [`STARTERS`] stores at once and `reference` alone, and compares.
async fn start_together(url: &str, reference: &str) -> Result<(), String> {
    let starters: Vec<_> = (0..STARTERS)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let store = Store::connect(&url).await?;
                store.migrate().await?;
                let pending = store.pending_migrations().await?;
                store.close().await?;
                Ok::<_, StoreError>(pending)
            })
        })
        .collect();
    for starter in starters {
        let pending = tokio::time::timeout(BOUND, starter)
            .await
            .map_err(|_| "a starter hung".to_owned())?
            .map_err(|err| format!("a starter panicked: {err}"))?
            .map_err(|err| format!("a starter failed: {err}"))?;
        if !pending.is_empty() {
            return Err(format!("a starter left migrations pending: {pending:?}"));
        }
    }

    let alone = Store::connect(reference).await.unwrap();
    alone.migrate().await.unwrap();
    alone.close().await.unwrap();
    let (together, expected) = (schema_of(url).await, schema_of(reference).await);
    if !expected.iter().any(|l| l.contains("idx_timers_due_at")) {
        return Err(format!(
            "the reference schema looks incomplete: {expected:#?}"
        ));
    }
    if together != expected {
        return Err(format!(
            "schemas differ:\ntogether {together:#?}\nalone {expected:#?}"
        ));
    }
    Ok(())
}

#[tokio::test]
async fn a_held_migration_lock_times_out_clearly_and_migrates_nothing() {
    let Some(fresh) = Fresh::mysql().await else {
        eprintln!("{MYSQL_URL_ENV} unset: skipped");
        return;
    };
    let Fresh::MySql { database, .. } = &fresh else {
        unreachable!()
    };
    // Another process in the middle of its migrations: a session holding the lock.
    let holder = Database::connect(fresh.url()).await.unwrap();
    let pinned = holder.get_mysql_connection_pool().acquire().await.unwrap();
    let mut pinned = pinned.detach();
    let got: Option<i64> = sea_orm::sqlx::query_scalar("SELECT CAST(GET_LOCK(?, 0) AS SIGNED)")
        .bind(format!("journeys_migrate:{database}"))
        .fetch_one(&mut pinned)
        .await
        .unwrap();
    assert_eq!(got, Some(1));

    let store = Store::connect(&fresh.url()).await.unwrap();
    let err = tokio::time::timeout(BOUND, store.migrate_waiting(Duration::from_secs(1)))
        .await
        .expect("migrate ignored its timeout")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("migration lock"), "{err}");
    assert!(!store.pending_migrations().await.unwrap().is_empty());

    // The holder goes away (a crashed process): the lock goes with its session.
    drop(pinned);
    tokio::time::timeout(BOUND, store.migrate())
        .await
        .expect("migrate hung after the holder left")
        .unwrap();
    assert!(store.pending_migrations().await.unwrap().is_empty());

    store.close().await.unwrap();
    holder.close().await.unwrap();
    fresh.remove().await;
}

/// A store from before hourly counters keeps its figures: `counters` is copied into
/// `journey_counters` at hour 0 (with the completions the old statistics derived) and dropped.
#[tokio::test]
async fn counters_from_before_hourly_counting_are_kept() {
    for fresh in fresh_databases().await {
        let url = fresh.url();
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let db = Database::connect(url.as_str()).await.unwrap();
        let backend = db.get_database_backend();
        // The schema as the earlier version left it, with its counts.
        for sql in [
            "DROP TABLE journey_counters",
            "CREATE TABLE counters (journey_id varchar(36) NOT NULL, step_key varchar(64) NOT NULL, \
             kind varchar(32) NOT NULL, branch varchar(128) NOT NULL, n bigint NOT NULL, \
             PRIMARY KEY (journey_id, step_key, kind, branch))",
            "INSERT INTO counters VALUES ('j1', 'start', 'entered', '', 5), \
             ('j1', 'start', 'step', '', 5), ('j1', 'wait', 'step', '', 5), \
             ('j1', 'wait', 'exited', '', 1), ('j1', '', 'skipped', 'already_entered', 2), \
             ('j1', 'wait', 'branch', 'bought', 3)",
            "DELETE FROM seaql_migrations WHERE version LIKE '%hourly_counters'",
        ] {
            db.execute_raw(Statement::from_string(backend, sql.to_owned()))
                .await
                .unwrap();
        }
        store.migrate().await.unwrap();
        // Run again (as after an interruption): it finds its work done.
        db.execute_raw(Statement::from_string(
            backend,
            "DELETE FROM seaql_migrations WHERE version LIKE '%hourly_counters'".to_owned(),
        ))
        .await
        .unwrap();
        store.migrate().await.unwrap();

        let stats = store.batches().journey_stats("j1").await.unwrap();
        assert_eq!(stats.entries, 5, "{url}");
        assert_eq!(
            stats.entries_skipped.get("already_entered"),
            Some(&2),
            "{url}"
        );
        let wait = stats.steps.iter().find(|s| s.step_key == "wait").unwrap();
        assert_eq!(
            (wait.entered, wait.completed, wait.exited),
            (5, 4, 1),
            "{url}"
        );
        assert_eq!(stats.branches[0].taken, 3, "{url}");
        // Hour 0: in no range with a start.
        let since = journeys_store::StatsRange {
            start: Some(chrono::Utc::now() - chrono::TimeDelta::days(1)),
            end: None,
        };
        let recent = store
            .batches()
            .journey_stats_in("j1", &since, true)
            .await
            .unwrap();
        assert_eq!((recent.entries, recent.hours.len()), (0, 0), "{url}");
        assert!(
            db.execute_raw(Statement::from_string(
                backend,
                "SELECT 1 FROM counters".to_owned()
            ))
            .await
            .is_err(),
            "counters is dropped ({url})"
        );
        db.close().await.unwrap();
        store.close().await.unwrap();
        fresh.remove().await;
    }
}

/// A store from before counter shards keeps its counts and catalog entries in shard 0, also
/// when the rebuild was interrupted after the old table was dropped.
#[tokio::test]
async fn counters_and_catalog_from_before_shards_are_kept() {
    for fresh in fresh_databases().await {
        let url = fresh.url();
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let db = Database::connect(url.as_str()).await.unwrap();
        let backend = db.get_database_backend();
        let run = async |sql: &str| {
            db.execute_raw(Statement::from_string(backend, sql.to_owned()))
                .await
                .unwrap();
        };
        // The tables as the earlier version left them, with their rows.
        for sql in [
            "DROP TABLE journey_counters",
            "CREATE TABLE journey_counters (journey_id varchar(36) NOT NULL, hour bigint NOT NULL, \
             step_key varchar(64) NOT NULL, kind varchar(32) NOT NULL, branch varchar(128) NOT NULL, \
             n bigint NOT NULL, PRIMARY KEY (journey_id, hour, step_key, kind, branch))",
            "INSERT INTO journey_counters VALUES ('j1', 0, 'start', 'entered', '', 5), \
             ('j1', 3600, 'start', 'entered', '', 2)",
            // Interrupted after the old catalog was dropped: only its sharded copy is left.
            "DROP TABLE event_catalog",
            "CREATE TABLE event_catalog_sharded (name varchar(191) NOT NULL, \
             shard smallint NOT NULL DEFAULT 0, first_seen datetime(6) NULL, \
             last_seen datetime(6) NULL, count bigint NOT NULL, registered boolean NOT NULL, \
             PRIMARY KEY (name, shard))",
            "INSERT INTO event_catalog_sharded VALUES ('Signed Up', 0, NULL, NULL, 7, 1)",
            "DELETE FROM seaql_migrations WHERE version LIKE '%counter_shards'",
        ] {
            let sql = if backend == sea_orm::DbBackend::Sqlite {
                sql.replace("datetime(6)", "text")
            } else {
                sql.to_owned()
            };
            run(&sql).await;
        }
        store.migrate().await.unwrap();
        run("DELETE FROM seaql_migrations WHERE version LIKE '%counter_shards'").await;
        store.migrate().await.unwrap();

        assert_eq!(
            store.batches().journey_stats("j1").await.unwrap().entries,
            7,
            "{url}"
        );
        let entry = store.catalog().get("Signed Up").await.unwrap();
        assert_eq!((entry.count, entry.registered), (7, true), "{url}");
        // Both tables take sharded writes now.
        store
            .batches()
            .commit(&journeys_store::Changes {
                catalog_seen: vec![("Signed Up".to_owned(), chrono::Utc::now())],
                counters: std::collections::BTreeMap::from([(
                    journeys_store::CounterKey::new(
                        "j1",
                        "start",
                        journeys_store::CounterKind::Entered,
                    ),
                    1,
                )]),
                ..journeys_store::Changes::default()
            })
            .await
            .unwrap();
        assert_eq!(store.catalog().get("Signed Up").await.unwrap().count, 8);
        assert_eq!(
            store.batches().journey_stats("j1").await.unwrap().entries,
            8,
            "{url}"
        );
        db.close().await.unwrap();
        store.close().await.unwrap();
        fresh.remove().await;
    }
}
