//! [`ClusterApi`]: the operator's read of partition ownership (SCALE-OUT.md §1) — which nodes
//! are alive, which partitions each one holds, at which epoch, and how far each partition has
//! come.
//!
//! Everything is read from the store (`partition_state`, `partition_nodes`) and measured on
//! the database's clock, the clock leases are kept on, so the answer is the same whichever
//! control plane is asked. A partition's lag needs its log's tail, which only a server that
//! reads the partition log (NATS JetStream) knows: give one with [`ClusterApi::with_log_tails`];
//! without it (the in-process path, where an event is applied in the commit that acknowledges
//! it) lag is left unset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use journeys_engine::LIVE_WINDOW;
use journeys_store::{PartitionRecord, Store};

use crate::error::Result;

/// Nodes whose last heartbeat is at most this old are listed when the request names no window.
pub const DEFAULT_SEEN_WITHIN: Duration = Duration::from_secs(3600);

/// The tail of each partition's log: the sequence of its last entry (`0` when empty).
pub trait LogTails: Send + Sync {
    /// `partition`'s tail, or `None` when the log cannot be read now (lag is then unset).
    fn tail(&self, partition: u32) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>>;
}

/// The NATS partition log's tails.
impl LogTails for journeys_engine::PartitionLog {
    fn tail(&self, partition: u32) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>> {
        Box::pin(async move {
            journeys_engine::PartitionLog::tail(self, partition)
                .await
                .ok()
        })
    }
}

/// What [`ClusterApi::list_nodes`] shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The database's clock when the read was made, microseconds since the Unix epoch.
    pub read_at: i64,
    /// By id.
    pub nodes: Vec<NodeView>,
    /// Every partition, by id.
    pub partitions: Vec<PartitionView>,
}

/// One node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    /// Microseconds since the Unix epoch, on the database's clock.
    pub heartbeat_at: i64,
    /// `read_at - heartbeat_at` (zero if the heartbeat is newer than the read).
    pub heartbeat_age: Duration,
    /// Microseconds since the Unix epoch; `0` when it never took a lease.
    pub lease_until: i64,
    /// Heartbeat within [`LIVE_WINDOW`]: partitions are assigned to it.
    pub live: bool,
    /// Partitions it owns under a lease that has not run out.
    pub partitions: Vec<u32>,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub record: PartitionRecord,
    /// The owner's lease still runs.
    pub held: bool,
    /// Log entries past `log_seq`; `None` without a log tail.
    pub lag: Option<i64>,
}

/// Cluster reads over the store's `Partitions` repository.
#[derive(Clone)]
pub struct ClusterApi {
    store: Store,
    tails: Option<Arc<dyn LogTails>>,
}

impl ClusterApi {
    pub fn new(store: Store) -> Self {
        Self { store, tails: None }
    }

    /// Reports each partition's lag against `tails`.
    #[must_use]
    pub fn with_log_tails(mut self, tails: Arc<dyn LogTails>) -> Self {
        self.tails = Some(tails);
        self
    }

    /// The nodes seen within `seen_within` (and any still leased or owning a partition), and
    /// every partition.
    pub async fn list_nodes(&self, seen_within: Duration) -> Result<ClusterView> {
        let partitions = self.store.partitions();
        let read_at = partitions.now().await?;
        let nodes = partitions.nodes(seen_within).await?;
        let records = partitions.all().await?;
        let mut lags = Vec::with_capacity(records.len());
        for record in &records {
            lags.push(match &self.tails {
                Some(tails) => tails
                    .tail(record.partition)
                    .await
                    .map(|tail| lag(tail, record.log_seq)),
                None => None,
            });
        }
        let partitions: Vec<PartitionView> = records
            .into_iter()
            .zip(lags)
            .map(|(record, lag)| PartitionView {
                held: record.owner.is_some() && record.lease_until > read_at,
                record,
                lag,
            })
            .collect();
        let live_micros = i64::try_from(LIVE_WINDOW.as_micros()).unwrap_or(i64::MAX);
        let nodes = nodes
            .into_iter()
            .map(|node| NodeView {
                partitions: partitions
                    .iter()
                    .filter(|p| p.held && p.record.owner.as_deref() == Some(node.node_id.as_str()))
                    .map(|p| p.record.partition)
                    .collect(),
                heartbeat_age: micros_duration(read_at.saturating_sub(node.heartbeat_at)),
                live: node.heartbeat_at > read_at.saturating_sub(live_micros),
                id: node.node_id,
                heartbeat_at: node.heartbeat_at,
                lease_until: node.lease_until,
            })
            .collect();
        Ok(ClusterView {
            read_at,
            nodes,
            partitions,
        })
    }
}

/// Entries of a log whose last entry is `tail` that come after `log_seq`.
fn lag(tail: u64, log_seq: i64) -> i64 {
    let applied = u64::try_from(log_seq).unwrap_or(0);
    i64::try_from(tail.saturating_sub(applied)).unwrap_or(i64::MAX)
}

/// A non-negative count of microseconds as a duration (negative ones are zero).
fn micros_duration(micros: i64) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_entries_past_the_applied_sequence() {
        assert_eq!(lag(10, 7), 3);
        assert_eq!(lag(7, 7), 0);
        assert_eq!(lag(0, 0), 0);
        // Trimmed to empty after everything was applied: nothing is waiting.
        assert_eq!(lag(0, 5), 0);
    }

    /// A log that has `tail` entries in every partition.
    struct FixedTail(u64);

    impl LogTails for FixedTail {
        fn tail(&self, _: u32) -> Pin<Box<dyn Future<Output = Option<u64>> + Send + '_>> {
            Box::pin(std::future::ready(Some(self.0)))
        }
    }

    #[tokio::test]
    async fn shows_owners_epochs_and_lag_against_the_log_tail() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let parts = store.partitions();
        parts.ensure(3).await.unwrap();
        parts.heartbeat("n1").await.unwrap();
        parts
            .acquire("n1", &[0, 2], Duration::from_secs(30))
            .await
            .unwrap();

        let api = ClusterApi::new(store.clone());
        let view = api.list_nodes(DEFAULT_SEEN_WITHIN).await.unwrap();
        assert_eq!(view.nodes.len(), 1);
        let node = &view.nodes[0];
        assert_eq!(node.id, "n1");
        assert!(node.live && node.lease_until > view.read_at);
        assert_eq!(node.partitions, vec![0, 2]);
        let owners: Vec<(Option<&str>, i64, bool, Option<i64>)> = view
            .partitions
            .iter()
            .map(|p| (p.record.owner.as_deref(), p.record.epoch, p.held, p.lag))
            .collect();
        assert_eq!(
            owners,
            vec![
                (Some("n1"), 1, true, None),
                (None, 0, false, None),
                (Some("n1"), 1, true, None)
            ],
            "no lag without a log"
        );

        let with_log = api.with_log_tails(Arc::new(FixedTail(4)));
        let view = with_log.list_nodes(DEFAULT_SEEN_WITHIN).await.unwrap();
        assert!(view.partitions.iter().all(|p| p.lag == Some(4)));
        store.close().await.unwrap();
    }

    #[test]
    fn ages_are_never_negative() {
        assert_eq!(micros_duration(-5), Duration::ZERO);
        assert_eq!(micros_duration(1_500_000), Duration::from_millis(1500));
    }
}
