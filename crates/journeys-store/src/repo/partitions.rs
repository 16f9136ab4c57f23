//! Partition ownership (SCALE-OUT.md §1): `partition_state` rows with owner and epoch, node
//! rows with heartbeats (for rendezvous assignment) and leases, and the epoch fence that every
//! batch commit of an owner runs first ([`fence`]).
//!
//! The lease is the node's, not each partition's: a node holds the partitions it owns while its
//! own `partition_nodes.lease_until` has not run out, and renews them all by renewing that one
//! row. So a renewal never writes the `partition_state` rows that commits lock for their fence
//! (only acquisition and release do, rarely), and lanes never queue behind it.
//!
//! Lease times come from the database's clock (`db_now`), never from a host's: two nodes with
//! skewed clocks still agree on whether a lease ran out.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, TransactionTrait, Value};

use crate::error::StoreError;
use crate::repo::placeholders;

/// One partition's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub partition: u32,
    /// The node that took it last, if any (a released or never-taken partition has none). It
    /// holds the partition while its lease runs.
    pub owner: Option<String>,
    /// Raised by one on every acquisition; commits of an older epoch are refused.
    pub epoch: i64,
    /// End of the owner's lease, microseconds since the Unix epoch on the database's clock
    /// (`0` without an owner or once the owner's node row is gone).
    pub lease_until: i64,
    /// Commits made under the fence.
    pub last_seq: i64,
    /// Where an owner reading the NATS partition log resumes: the stream sequence of the last
    /// entry it committed (`0` before any, and without a log).
    pub log_seq: i64,
    /// When the last of them committed, microseconds since the Unix epoch on the database's
    /// clock (`0` before the first).
    pub committed_at: i64,
}

/// One node's row in `partition_nodes`: a process that owns (or may own) partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    /// Its last heartbeat, microseconds since the Unix epoch on the database's clock. Nodes
    /// heartbeating within [the live window] take part in assignment.
    ///
    /// [the live window]: Partitions::live_nodes
    pub heartbeat_at: i64,
    /// End of its lease, on the same clock (`0` if it never took one): it holds the
    /// partitions it owns until then.
    pub lease_until: i64,
}

/// A partition held by the caller, at the epoch its commits must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Held {
    pub partition: u32,
    pub epoch: i64,
}

/// Repository of partition ownership; obtained from [`crate::Store::partitions`].
#[derive(Debug, Clone, Copy)]
pub struct Partitions<'a> {
    db: &'a DatabaseConnection,
}

/// The database's current time in microseconds since the Unix epoch, as an SQL expression.
pub(crate) fn db_now(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED)",
        _ => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    }
}

/// `partition_state` as an `UPDATE` target that MySQL/MariaDB must reach through its primary
/// key. Given a list of a quarter of the partitions, the optimizer otherwise prefers a scan of
/// the whole (small) table, which locks every row it reads: each lane's fence then waits for
/// every other lane's open commit, and all commits run one at a time.
fn partition_rows(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::MySql => "partition_state FORCE INDEX (PRIMARY)",
        _ => "partition_state",
    }
}

/// The `UPDATE` that gives `node` those of `partitions` that are free (no owner, or an owner
/// whose lease ran out) or already its own, at the next epoch.
fn take_statement(backend: DbBackend, node: &str, partitions: &[u32]) -> Statement {
    let now = db_now(backend);
    let sql = format!(
        "UPDATE {} SET owner = ?, epoch = epoch + 1, lease_until = 0 \
         WHERE partition_id IN ({}) AND (owner IS NULL OR owner = ? OR NOT EXISTS \
         (SELECT 1 FROM partition_nodes n WHERE n.node_id = partition_state.owner \
         AND n.lease_until > {now}))",
        partition_rows(backend),
        placeholders(partitions.len())
    );
    let mut values: Vec<Value> = vec![node.into()];
    values.extend(partitions.iter().map(|p| Value::from(*p)));
    values.push(node.into());
    Statement::from_sql_and_values(backend, sql, values)
}

pub(crate) fn micros_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl<'a> Partitions<'a> {
    pub(crate) fn new(db: &'a DatabaseConnection) -> Self {
        Self { db }
    }

    fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    async fn exec(&self, sql: &str, values: Vec<Value>) -> Result<u64, StoreError> {
        let statement = Statement::from_sql_and_values(self.backend(), sql, values);
        Ok(self.db.execute_raw(statement).await?.rows_affected())
    }

    /// Makes sure rows `0..count` exist (a first start creates them, unowned).
    ///
    /// # Errors
    /// [`StoreError::Internal`] when the store holds partitions at or above `count`: it was set
    /// up with more partitions, and changing the number is a drain-and-migrate operation (every
    /// profile may move); database errors.
    pub async fn ensure(&self, count: u32) -> Result<(), StoreError> {
        let rows = self.all().await?;
        if let Some(max) = rows.iter().map(|r| r.partition).max()
            && max >= count
        {
            return Err(StoreError::Internal(format!(
                "the store was set up with {} partitions but {count} are configured; changing \
                 the number of partitions is a drain-and-migrate operation (see the README)",
                max + 1
            )));
        }
        let missing: Vec<u32> = (0..count)
            .filter(|p| !rows.iter().any(|r| r.partition == *p))
            .collect();
        let verb = match self.backend() {
            DbBackend::MySql => "INSERT IGNORE",
            _ => "INSERT OR IGNORE",
        };
        for chunk in missing.chunks(500) {
            let sql = format!(
                "{verb} INTO partition_state (partition_id) VALUES {}",
                vec!["(?)"; chunk.len()].join(", ")
            );
            self.exec(&sql, chunk.iter().map(|p| Value::from(*p)).collect())
                .await?;
        }
        Ok(())
    }

    /// Every partition's row, in partition order.
    ///
    /// # Errors
    /// Database errors.
    pub async fn all(&self) -> Result<Vec<PartitionRecord>, StoreError> {
        let statement = Statement::from_string(
            self.backend(),
            "SELECT s.partition_id, s.owner, s.epoch, COALESCE(n.lease_until, 0) AS lease_until, \
             s.last_seq, s.log_seq, s.committed_at FROM partition_state s LEFT JOIN partition_nodes n ON n.node_id = s.owner \
             ORDER BY s.partition_id",
        );
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter()
            .map(|row| {
                let partition: i64 = row.try_get("", "partition_id")?;
                Ok(PartitionRecord {
                    partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    owner: row.try_get("", "owner")?,
                    epoch: row.try_get("", "epoch")?,
                    lease_until: row.try_get("", "lease_until")?,
                    last_seq: row.try_get("", "last_seq")?,
                    log_seq: row.try_get("", "log_seq")?,
                    committed_at: row.try_get("", "committed_at")?,
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(StoreError::from)
    }

    /// The partitions `node` owns, with their epochs, while its lease has not run out (none
    /// after that).
    ///
    /// # Errors
    /// Database errors.
    pub async fn held_by(&self, node: &str) -> Result<Vec<Held>, StoreError> {
        let sql = format!(
            "SELECT s.partition_id, s.epoch FROM partition_state s JOIN partition_nodes n \
             ON n.node_id = s.owner WHERE s.owner = ? AND n.lease_until > {} \
             ORDER BY s.partition_id",
            db_now(self.backend())
        );
        let statement = Statement::from_sql_and_values(self.backend(), sql, [node.into()]);
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter()
            .map(|row| {
                let partition: i64 = row.try_get("", "partition_id")?;
                Ok(Held {
                    partition: u32::try_from(partition).unwrap_or(u32::MAX),
                    epoch: row.try_get("", "epoch")?,
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(StoreError::from)
    }

    /// Takes the partitions among `partitions` that are free (never owned, released, or whose
    /// owner's lease ran out) or already `node`'s, raising each one's epoch so that commits of
    /// any earlier holder are fenced, and sets `node`'s lease to `ttl` from now (which renews
    /// every partition it holds). Returns how many it took; read [`Partitions::held_by`] for the
    /// epochs.
    ///
    /// # Errors
    /// Database errors.
    pub async fn acquire(
        &self,
        node: &str,
        partitions: &[u32],
        ttl: Duration,
    ) -> Result<u64, StoreError> {
        self.lease(node, ttl).await?;
        if partitions.is_empty() {
            return Ok(0);
        }
        let backend = self.backend();
        if backend != DbBackend::MySql {
            let statement = take_statement(backend, node, partitions);
            return Ok(self.db.execute_raw(statement).await?.rows_affected());
        }
        // A row locked by an open commit (its fence, the transaction's first statement) is
        // skipped rather than waited for: the committing node may be paused mid-transaction
        // (a stopped process, a frozen VM), and waiting would stall this node's whole round,
        // renewals of its own lease included. The row is taken at a later round, once that
        // transaction ends (the server ends it, see `Store::connect`).
        let txn = self.db.begin().await?;
        let sql = format!(
            "SELECT partition_id FROM partition_state WHERE partition_id IN ({}) \
             FOR UPDATE SKIP LOCKED",
            placeholders(partitions.len())
        );
        let values: Vec<Value> = partitions.iter().map(|p| Value::from(*p)).collect();
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        let free = rows
            .iter()
            .map(|row| {
                let partition: i64 = row.try_get("", "partition_id")?;
                Ok(u32::try_from(partition).unwrap_or(u32::MAX))
            })
            .collect::<Result<Vec<u32>, sea_orm::DbErr>>()?;
        let taken = if free.is_empty() {
            0
        } else {
            txn.execute_raw(take_statement(backend, node, &free))
                .await?
                .rows_affected()
        };
        txn.commit().await?;
        Ok(taken)
    }

    /// Sets `node`'s lease to `ttl` from now and returns how many of `held` it still owns at
    /// those epochs (fewer than `held` means some were taken by another node).
    ///
    /// # Errors
    /// Database errors.
    pub async fn renew(&self, node: &str, held: &[Held], ttl: Duration) -> Result<u64, StoreError> {
        self.lease(node, ttl).await?;
        if held.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "SELECT COUNT(*) AS n FROM partition_state WHERE owner = ? AND ({})",
            pairs(held.len())
        );
        let mut values: Vec<Value> = vec![node.into()];
        values.extend(pair_values(held));
        let statement = Statement::from_sql_and_values(self.backend(), sql, values);
        let row = self.db.query_one_raw(statement).await?;
        let n: i64 = match row {
            Some(row) => row.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Sets `node`'s lease (and heartbeat) to `ttl` from now: every partition it owns stays
    /// held that long.
    ///
    /// # Errors
    /// Database errors.
    pub async fn lease(&self, node: &str, ttl: Duration) -> Result<(), StoreError> {
        let now = db_now(self.backend());
        let sql = match self.backend() {
            DbBackend::MySql => format!(
                "INSERT INTO partition_nodes (node_id, heartbeat_at, lease_until) \
                 VALUES (?, {now}, {now} + ?) ON DUPLICATE KEY UPDATE \
                 heartbeat_at = VALUES(heartbeat_at), lease_until = VALUES(lease_until)"
            ),
            _ => format!(
                "INSERT INTO partition_nodes (node_id, heartbeat_at, lease_until) \
                 VALUES (?, {now}, {now} + ?) ON CONFLICT (node_id) DO UPDATE SET \
                 heartbeat_at = excluded.heartbeat_at, lease_until = excluded.lease_until"
            ),
        };
        self.exec(&sql, vec![node.into(), micros_of(ttl).into()])
            .await?;
        Ok(())
    }

    /// Gives up `node`'s ownership of `partitions` (a graceful hand-over: another node may take
    /// them at once). The epoch is left as is; the next owner raises it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn release(&self, node: &str, partitions: &[u32]) -> Result<u64, StoreError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE {} SET owner = NULL, lease_until = 0 WHERE owner = ? AND \
             partition_id IN ({})",
            partition_rows(self.backend()),
            placeholders(partitions.len())
        );
        let mut values: Vec<Value> = vec![node.into()];
        values.extend(partitions.iter().map(|p| Value::from(*p)));
        self.exec(&sql, values).await
    }

    /// Records that `node` is alive now (insert or update of its heartbeat row).
    ///
    /// # Errors
    /// Database errors.
    pub async fn heartbeat(&self, node: &str) -> Result<(), StoreError> {
        let now = db_now(self.backend());
        let sql = match self.backend() {
            DbBackend::MySql => format!(
                "INSERT INTO partition_nodes (node_id, heartbeat_at) VALUES (?, {now}) \
                 ON DUPLICATE KEY UPDATE heartbeat_at = VALUES(heartbeat_at)"
            ),
            _ => format!(
                "INSERT INTO partition_nodes (node_id, heartbeat_at) VALUES (?, {now}) \
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
            ),
        };
        self.exec(&sql, vec![node.into()]).await?;
        Ok(())
    }

    /// Nodes whose heartbeat is younger than `max_age`, sorted.
    ///
    /// # Errors
    /// Database errors.
    pub async fn live_nodes(&self, max_age: Duration) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT node_id FROM partition_nodes WHERE heartbeat_at > {} - ? ORDER BY node_id",
            db_now(self.backend())
        );
        let statement =
            Statement::from_sql_and_values(self.backend(), sql, [micros_of(max_age).into()]);
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter()
            .map(|row| row.try_get::<String>("", "node_id"))
            .collect::<Result<_, _>>()
            .map_err(StoreError::from)
    }

    /// The database's clock now, in microseconds since the Unix epoch: what heartbeats,
    /// leases and commit times are measured against.
    ///
    /// # Errors
    /// Database errors.
    pub async fn now(&self) -> Result<i64, StoreError> {
        let sql = format!("SELECT {} AS clock", db_now(self.backend()));
        let row = self
            .db
            .query_one_raw(Statement::from_string(self.backend(), sql))
            .await?;
        match row {
            Some(row) => Ok(row.try_get("", "clock")?),
            None => Err(StoreError::Internal(
                "the clock query returned no row".into(),
            )),
        }
    }

    /// Nodes seen within `seen_within` (heartbeat), still leased, or named as a partition's
    /// owner, sorted by id. A node that shut down cleanly has no row and is not listed.
    ///
    /// # Errors
    /// Database errors.
    pub async fn nodes(&self, seen_within: Duration) -> Result<Vec<NodeRecord>, StoreError> {
        let now = db_now(self.backend());
        let sql = format!(
            "SELECT node_id, heartbeat_at, lease_until FROM partition_nodes \
             WHERE heartbeat_at > {now} - ? OR lease_until > {now} OR node_id IN \
             (SELECT owner FROM partition_state WHERE owner IS NOT NULL) ORDER BY node_id"
        );
        let statement =
            Statement::from_sql_and_values(self.backend(), sql, [micros_of(seen_within).into()]);
        let rows = self.db.query_all_raw(statement).await?;
        rows.iter()
            .map(|row| {
                Ok(NodeRecord {
                    node_id: row.try_get("", "node_id")?,
                    heartbeat_at: row.try_get("", "heartbeat_at")?,
                    lease_until: row.try_get("", "lease_until")?,
                })
            })
            .collect::<Result<_, sea_orm::DbErr>>()
            .map_err(StoreError::from)
    }

    /// Removes `node`'s heartbeat and lease (a node shutting down), so others take whatever it
    /// still owns at once.
    ///
    /// # Errors
    /// Database errors.
    pub async fn forget_node(&self, node: &str) -> Result<(), StoreError> {
        self.exec(
            "DELETE FROM partition_nodes WHERE node_id = ?",
            vec![node.into()],
        )
        .await?;
        Ok(())
    }
}

/// `(partition_id = ? AND epoch = ?) OR …` for `n` pairs.
fn pairs(n: usize) -> String {
    vec!["(partition_id = ? AND epoch = ?)"; n].join(" OR ")
}

fn pair_values(held: &[Held]) -> impl Iterator<Item = Value> + '_ {
    held.iter()
        .flat_map(|h| [Value::from(h.partition), Value::from(h.epoch)])
}

/// The epoch fence: the first statement of an owner's batch transaction. Moves each of `held`'s
/// `last_seq` on, but only where the partition is still at that epoch; if any is not (another
/// node took it since), the whole batch must roll back.
///
/// Every fenced partition counts one more commit (`last_seq`). `seqs` is the progress of an owner
/// reading the partition log: each partition listed there records that stream sequence as its
/// `log_seq`, and the others keep theirs.
///
/// # Errors
/// [`StoreError::Fenced`] naming the partitions whose epoch moved on; database errors.
pub(crate) async fn fence<C: ConnectionTrait>(
    db: &C,
    held: &[Held],
    seqs: Option<&[(u32, i64)]>,
) -> Result<(), StoreError> {
    if held.is_empty() {
        return Ok(());
    }
    let backend = db.get_database_backend();
    let mut values: Vec<Value> = Vec::new();
    let progress = match seqs {
        None | Some([]) => String::new(),
        Some(seqs) => {
            values.extend(
                seqs.iter()
                    .flat_map(|(p, seq)| [Value::from(*p), Value::from(*seq)]),
            );
            format!(
                ", log_seq = CASE partition_id {} ELSE log_seq END",
                vec!["WHEN ? THEN ?"; seqs.len()].join(" ")
            )
        }
    };
    // Primary-key lookups of the `IN` list lock only these rows (see `partition_rows`).
    let sql = format!(
        "UPDATE {} SET last_seq = last_seq + 1{progress}, committed_at = {} \
         WHERE partition_id IN ({}) AND ({})",
        partition_rows(backend),
        db_now(backend),
        placeholders(held.len()),
        pairs(held.len())
    );
    values.extend(held.iter().map(|h| Value::from(h.partition)));
    values.extend(pair_values(held));
    let matched = db
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?
        .rows_affected();
    if matched == u64::try_from(held.len()).unwrap_or(u64::MAX) {
        return Ok(());
    }
    Err(StoreError::Fenced(format!(
        "{} of the batch's {} partitions moved to a newer epoch",
        u64::try_from(held.len()).unwrap_or(u64::MAX) - matched,
        held.len()
    )))
}
