//! Partition ownership of an engine running as an owner (SCALE-OUT.md §1).
//!
//! A background task renews this node's heartbeat and lease (one row: the lease is the node's,
//! so renewing never touches the partition rows that commits lock for their fence), computes by
//! rendezvous hashing over the live nodes which partitions are this node's, releases the others
//! (a graceful hand-over) and acquires what is free, every [`OwnerConfig::lease_ttl`] / 3 at
//! most. Each held partition carries its epoch and a local deadline: the start of the round that last renewed
//! it plus the lease, measured on this host's monotonic clock, which can only run out sooner
//! than the lease in the store (the store's deadline counts from when the renewal arrived). A
//! lane applies an item only while its partition is held and before that deadline, so a node
//! cut off from the store stops applying within the lease; and every commit is fenced by the
//! epochs (`Batches::commit_fenced`), so even a node paused past its lease cannot write.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use journeys_core::partition::rendezvous_owner;
use journeys_store::{Held, Store, StoreError};
use tokio::sync::{Notify, watch};

/// A node is live while its heartbeat is younger than this.
pub const LIVE_WINDOW: Duration = Duration::from_secs(2);

/// How an owner engine takes part in partition ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerConfig {
    /// This node's id: unique among the nodes sharing a store, and stable across restarts so
    /// a restarted node takes its partitions back at once instead of waiting for the lease.
    pub node_id: String,
    /// How long a lease lasts without renewal; renewed every third of it (at most every
    /// 500 ms, so heartbeats stay within [`LIVE_WINDOW`]).
    pub lease_ttl: Duration,
    /// Profiles whose state a lane keeps in memory between batches (per engine, spread over
    /// the lanes; least recently used first out). `0` reads every profile from the store.
    pub profile_cache: usize,
    /// `messageId`s this owner committed that it remembers (per engine, spread over the lanes;
    /// least recently used first out). An event whose id is neither remembered nor taken in
    /// the store is applied without reading the store's dedupe keys first: the commit's unique
    /// key catches the rare duplicate, and the batch is redone with a read. `0` reads the
    /// store for every batch.
    pub recent_message_ids: usize,
}

impl Default for OwnerConfig {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            lease_ttl: Duration::from_secs(5),
            profile_cache: 100_000,
            recent_message_ids: 262_144,
        }
    }
}

/// The host name (stable across restarts), or `journeys` when it cannot be read.
#[must_use]
pub fn default_node_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "journeys".to_owned())
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    epoch: i64,
    until: Instant,
}

/// The partitions this node holds, shared by the lanes and the ownership task.
pub(crate) struct Ownership {
    config: OwnerConfig,
    partitions: u32,
    leases: RwLock<Vec<Option<Lease>>>,
    ready: watch::Sender<bool>,
    /// Wakes the task for an early round (after a fenced commit).
    recheck: Notify,
}

impl Ownership {
    pub fn new(config: OwnerConfig, partitions: u32) -> Self {
        let count = usize::try_from(partitions).unwrap_or(0);
        Self {
            config,
            partitions,
            leases: RwLock::new(vec![None; count]),
            ready: watch::channel(false).0,
            recheck: Notify::new(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The partition held with a lease that has not run out, at its epoch.
    pub fn held(&self, partition: u32, now: Instant) -> Option<Held> {
        let leases = self
            .leases
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lease = (*leases.get(usize::try_from(partition).ok()?)?)?;
        (lease.until > now).then_some(Held {
            partition,
            epoch: lease.epoch,
        })
    }

    /// The partitions held now, in order.
    pub fn held_ids(&self) -> Vec<u32> {
        let now = Instant::now();
        (0..self.partitions)
            .filter(|p| self.held(*p, now).is_some())
            .collect()
    }

    /// How many partitions are held now.
    pub fn held_count(&self) -> usize {
        self.held_ids().len()
    }

    /// Forgets `partitions` at once (a commit was fenced) and asks for an early round, which
    /// takes back those that are still this node's at a new epoch.
    pub fn lost(&self, partitions: &[u32]) {
        self.set(partitions, |_| None);
        self.recheck.notify_one();
    }

    /// Waits until the first round finished (successfully or not).
    pub async fn wait_ready(&self) {
        let mut ready = self.ready.subscribe();
        // The sender lives as long as `self`, so this only ends when the round ran.
        let _ = ready.wait_for(|ready| *ready).await;
    }

    fn interval(&self) -> Duration {
        (self.config.lease_ttl / 3).min(Duration::from_millis(500))
    }

    /// Runs rounds until `stop` fires, then releases every partition and the heartbeat.
    pub async fn run(self: Arc<Self>, store: Store, mut stop: tokio::sync::oneshot::Receiver<()>) {
        if let Err(err) = store.partitions().ensure(self.partitions).await {
            tracing::error!(error = %err, "partition rows could not be set up");
        }
        loop {
            if let Err(err) = self.round(&store).await {
                tracing::warn!(error = %err, node = %self.config.node_id, "ownership round failed");
            }
            self.ready.send_replace(true);
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(self.interval()) => {}
                () = self.recheck.notified() => {}
            }
        }
        self.release_all(&store).await;
    }

    /// One round: heartbeat and lease, assignment, release, acquire, then the held set as the
    /// store has it.
    async fn round(&self, store: &Store) -> Result<(), StoreError> {
        let started = Instant::now();
        let node = self.config.node_id.as_str();
        let ttl = self.config.lease_ttl;
        self.count_lapses(started);
        let parts = store.partitions();
        // The heartbeat and the lease of everything this node owns, in one row.
        parts.lease(node, ttl).await?;
        let mut live = parts.live_nodes(LIVE_WINDOW).await?;
        if !live.iter().any(|n| n == node) {
            live.push(node.to_owned());
        }
        let live: Vec<&str> = live.iter().map(String::as_str).collect();
        let wanted: BTreeSet<u32> = (0..self.partitions)
            .filter(|p| rendezvous_owner(*p, &live) == Some(node))
            .collect();
        let held: Vec<Held> = (0..self.partitions)
            .filter_map(|p| self.held(p, started))
            .collect();
        let release: Vec<u32> = held
            .iter()
            .map(|h| h.partition)
            .filter(|p| !wanted.contains(p))
            .collect();
        if !release.is_empty() {
            // Stop applying first, then hand over.
            self.set(&release, |_| None);
            parts.release(node, &release).await?;
            tracing::info!(node, partitions = ?release, "released partitions to other nodes");
        }
        let keep: Vec<Held> = held
            .into_iter()
            .filter(|h| wanted.contains(&h.partition))
            .collect();
        let missing: Vec<u32> = wanted
            .iter()
            .copied()
            .filter(|p| !keep.iter().any(|h| h.partition == *p))
            .collect();
        if !missing.is_empty() {
            parts.acquire(node, &missing, ttl).await?;
        }
        let now_held = parts.held_by(node).await?;
        let mut leases = self
            .leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = leases.iter().filter(|l| l.is_some()).count();
        for (p, slot) in leases.iter_mut().enumerate() {
            let partition = u32::try_from(p).unwrap_or(u32::MAX);
            *slot = now_held
                .iter()
                .find(|h| h.partition == partition && wanted.contains(&partition))
                .map(|h| Lease {
                    epoch: h.epoch,
                    until: started + ttl,
                });
        }
        let after = leases.iter().filter(|l| l.is_some()).count();
        if after != before {
            tracing::info!(
                node,
                held = after,
                of = self.partitions,
                "partition ownership changed"
            );
        }
        Ok(())
    }

    /// Counts (and logs) the partitions whose lease ran out before this round: the node was
    /// paused or could not reach the store for a whole lease. They are forgotten here; the
    /// round takes back those that are still this node's, at a new epoch.
    fn count_lapses(&self, now: Instant) {
        let mut leases = self
            .leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut lapsed = Vec::new();
        for (p, slot) in leases.iter_mut().enumerate() {
            if slot.is_some_and(|lease| lease.until <= now) {
                *slot = None;
                lapsed.push(p);
            }
        }
        if !lapsed.is_empty() {
            let count = u64::try_from(lapsed.len()).unwrap_or(u64::MAX);
            journeys_telemetry::metrics::metrics()
                .engine_lease_lapses
                .add(count);
            tracing::warn!(
                node = %self.config.node_id,
                partitions = ?lapsed,
                "partition leases ran out before they were renewed; stopped applying them"
            );
        }
    }

    fn set(&self, partitions: &[u32], to: impl Fn(Option<Lease>) -> Option<Lease>) {
        let mut leases = self
            .leases
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in partitions {
            if let Some(slot) = usize::try_from(*p).ok().and_then(|i| leases.get_mut(i)) {
                *slot = to(*slot);
            }
        }
    }

    async fn release_all(&self, store: &Store) {
        let all: Vec<u32> = (0..self.partitions).collect();
        self.set(&all, |_| None);
        let node = self.config.node_id.as_str();
        if let Err(err) = store.partitions().release(node, &all).await {
            tracing::warn!(error = %err, node, "partitions not released; they free up when the lease runs out");
        }
        if let Err(err) = store.partitions().forget_node(node).await {
            tracing::warn!(error = %err, node, "heartbeat not removed");
        }
    }
}
