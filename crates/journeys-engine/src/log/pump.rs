//! The owner's side of the log: one reader per held partition, feeding the partition's lane.
//!
//! A supervisor looks at the held partitions every [`LOOK_EVERY`]: it starts a reader for a
//! partition held at an epoch it has no reader for, and stops readers of partitions no longer
//! held (or held again at a newer epoch, which gets its own reader). A reader:
//!
//! 1. reads the partition's `log_seq` from the store (what the previous tenure committed) and
//!    the log's tail (what was published before this tenure began);
//! 2. reads entries from `log_seq + 1`, a batch at a time (what is ready, up to the lane's
//!    batch size), hands the batch to the lane stamped with its epoch, and waits for the answers;
//! 3. announces the committed prefix to the fronts (a [`Notice`]), and every few seconds trims
//!    what is committed;
//! 4. when an entry was not applied (the store is down, the partition's lease ran out), reads
//!    again from the entry after the committed prefix, after a pause that grows; an entry that
//!    fails as `internal` [`MAX_ATTEMPTS`] times is skipped (its progress committed alone, the
//!    failure announced), so one bad entry cannot stall its partition; a merge read before its
//!    link is committed (`link_pending`) is tried for longer ([`MAX_LINK_ATTEMPTS`]).
//!
//! The partition counts as caught up once it committed the tail seen at start: only then does
//! the scheduler fire its timers (a timer must not overtake events published before it was due).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use journeys_core::partition::partition_of;
use journeys_log::{Entry as LogEntry, PartitionLog};
use journeys_store::{Changes, Held};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::entry::{Answer, Entry, Notice};
use crate::ack::{AckStatus, INTERNAL, LINK_PENDING};
use crate::job::{Item, Job, LaneMessage, Outcome, Routed};
use crate::lane::{Shared, lane_of_partition};

/// How often the supervisor compares its readers with the held partitions.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Attempts at an entry failing as `internal` before it is skipped.
const MAX_ATTEMPTS: u32 = 5;
/// Tries of a merge whose link is not committed yet (`link_pending`) before it is skipped:
/// with the growing pause (at most 3.2 s), about 30 s, longer than a partition's hand-over.
const MAX_LINK_ATTEMPTS: u32 = 14;
/// How often a reader trims what its partition committed.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The running readers of an owner engine.
pub(crate) struct Pump {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    caught_up: Arc<CaughtUp>,
}

/// Which partitions' readers have applied everything published before they started.
#[derive(Default)]
pub(crate) struct CaughtUp(RwLock<HashMap<u32, i64>>);

impl CaughtUp {
    fn set(&self, partition: u32, epoch: Option<i64>) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match epoch {
            Some(epoch) => map.insert(partition, epoch),
            None => map.remove(&partition),
        };
    }

    /// Whether `held` is caught up at its epoch.
    pub fn is(&self, held: Held) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&held.partition)
            == Some(&held.epoch)
    }
}

impl Pump {
    pub fn start(
        shared: Arc<Shared>,
        lanes: Vec<mpsc::UnboundedSender<LaneMessage>>,
        log: PartitionLog,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let caught_up = Arc::new(CaughtUp::default());
        let task = tokio::spawn(supervise(
            shared,
            lanes,
            log,
            Arc::clone(&caught_up),
            stopped,
        ));
        Self {
            stop,
            task,
            caught_up,
        }
    }

    pub fn caught_up(&self) -> &CaughtUp {
        &self.caught_up
    }

    /// Stops every reader. What they already handed to the lanes is still applied.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "log readers ended abnormally");
        }
    }
}

async fn supervise(
    shared: Arc<Shared>,
    lanes: Vec<mpsc::UnboundedSender<LaneMessage>>,
    log: PartitionLog,
    caught_up: Arc<CaughtUp>,
    mut stop: oneshot::Receiver<()>,
) {
    let Some(ownership) = shared.ownership.clone() else {
        tracing::error!("an engine reading the log must be a partition owner");
        return;
    };
    tokio::select! {
        _ = &mut stop => return,
        () = ownership.wait_ready() => {}
    }
    let mut readers: HashMap<u32, (i64, JoinHandle<()>)> = HashMap::new();
    loop {
        let now = Instant::now();
        for partition in 0..shared.config.partitions {
            let held = ownership.held(partition, now);
            let current = readers.get(&partition).map(|(epoch, _)| *epoch);
            if current.is_some() && current != held.map(|h| h.epoch) {
                if let Some((_, task)) = readers.remove(&partition) {
                    task.abort();
                }
                caught_up.set(partition, None);
            }
            if let (Some(held), false) = (held, readers.contains_key(&partition)) {
                let lane = lanes[lane_of_partition(partition, lanes.len())].clone();
                let reader = PartitionReader {
                    shared: Arc::clone(&shared),
                    lane,
                    log: log.clone(),
                    held,
                    caught_up: Arc::clone(&caught_up),
                };
                readers.insert(partition, (held.epoch, tokio::spawn(reader.run())));
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
    for (partition, (_, task)) in readers {
        task.abort();
        caught_up.set(partition, None);
    }
}

struct PartitionReader {
    shared: Arc<Shared>,
    lane: mpsc::UnboundedSender<LaneMessage>,
    log: PartitionLog,
    held: Held,
    caught_up: Arc<CaughtUp>,
}

/// The batch's items cut after each merge, to be applied one group after the other: a merge
/// and what follows it in its partition must not commit out of order.
fn merge_groups(items: Vec<Routed>) -> Vec<Vec<Routed>> {
    let mut groups = vec![Vec::new()];
    for routed in items {
        let merge = matches!(routed.item, Item::Merge { .. });
        if let Some(group) = groups.last_mut() {
            group.push(routed);
        }
        if merge {
            groups.push(Vec::new());
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Answers of entries settled without the lane, by position (`None`: applied).
type Answered = HashMap<usize, Option<Answer>>;

/// What became of a batch handed to the lane.
struct Applied {
    /// The highest sequence of the committed prefix (unchanged when nothing committed).
    committed: u64,
    /// The first entry that was not applied, with its failure code.
    stalled: Option<(u64, String)>,
}

impl PartitionReader {
    async fn run(self) {
        let partition = self.held.partition;
        let (mut committed, tail) = self.start_points().await;
        if committed >= tail {
            self.caught_up.set(partition, Some(self.held.epoch));
        }
        tracing::info!(
            partition,
            epoch = self.held.epoch,
            from = committed + 1,
            tail,
            "reading the partition log"
        );
        let mut failures: (u64, u32) = (0, 0);
        let mut trimmed = Instant::now();
        loop {
            let mut reader = match self.log.read(partition, committed + 1).await {
                Ok(reader) => reader,
                Err(err) => {
                    tracing::warn!(partition, error = %err, "partition log unreadable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let Some(entries) =
                    next_batch(&mut reader, self.shared.config.max_batch_events).await
                else {
                    break;
                };
                let Some(applied) = self.apply(&entries, committed).await else {
                    // The lane is gone: the engine is stopping.
                    return;
                };
                committed = applied.committed;
                if committed >= tail {
                    self.caught_up.set(partition, Some(self.held.epoch));
                }
                if trimmed.elapsed() >= TRIM_EVERY {
                    trimmed = Instant::now();
                    if let Err(err) = self.log.trim(partition, committed + 1).await {
                        tracing::debug!(partition, error = %err, "trimming failed");
                    }
                }
                let Some((seq, code)) = applied.stalled else {
                    continue;
                };
                failures = if failures.0 == seq {
                    (seq, failures.1 + 1)
                } else {
                    (seq, 1)
                };
                let give_up = (code == INTERNAL && failures.1 >= MAX_ATTEMPTS)
                    || (code == LINK_PENDING && failures.1 >= MAX_LINK_ATTEMPTS);
                if give_up && self.skip(seq).await {
                    committed = seq;
                } else {
                    let pause = Duration::from_millis(50u64 << failures.1.min(6));
                    tokio::time::sleep(pause).await;
                }
                // Read again from the first entry not applied.
                break;
            }
        }
    }

    /// The partition's committed `log_seq` and the log's tail, retried until both are read.
    async fn start_points(&self) -> (u64, u64) {
        let partition = self.held.partition;
        loop {
            let committed = self
                .shared
                .store
                .partitions()
                .all()
                .await
                .map_err(|e| e.to_string())
                .and_then(|rows| {
                    rows.iter()
                        .find(|r| r.partition == partition)
                        .map(|r| u64::try_from(r.log_seq).unwrap_or(0))
                        .ok_or_else(|| format!("partition {partition} has no row"))
                });
            let tail = self.log.tail(partition).await.map_err(|e| e.to_string());
            let stream_end = self.log.last_seq().await.map_err(|e| e.to_string());
            match (committed, tail, stream_end) {
                (Ok(committed), Ok(tail), Ok(end)) if committed > end => {
                    // The progress is from an earlier stream of this name (deleted and made
                    // again): this one's entries all come after it.
                    tracing::warn!(
                        partition,
                        committed,
                        stream_end = end,
                        "the partition's progress is past the stream's end (the stream was made \
                         again); reading the stream from its start"
                    );
                    return (0, tail);
                }
                (Ok(committed), Ok(tail), Ok(_)) => return (committed, tail),
                (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
                    tracing::warn!(partition, error = %err, "cannot start reading the partition; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Hands `entries` to the lane, waits for the answers and announces the committed prefix.
    /// `None` when the lane is gone.
    async fn apply(&self, entries: &[LogEntry], committed: u64) -> Option<Applied> {
        // Each entry was acknowledged after whatever a client had published before it, through
        // any node: the lane must meet those journeys, whatever its cache's last poll saw.
        if let Err(err) = self.shared.cache.fresh_since(Instant::now()).await {
            tracing::debug!(error = %err, "could not check the journeys before a batch");
        }
        let (items, mut answered, forget) = self.decode(entries);
        if !forget.is_empty() {
            // Before the batch: its items read those profiles from the store (at least as new
            // as the entries before the forget need).
            self.lane.send(LaneMessage::Forget(forget)).ok()?;
        }
        let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
        for group in merge_groups(items) {
            let positions: Vec<usize> = group.iter().map(|r| r.position).collect();
            let (reply, answers) = oneshot::channel();
            let job = Job {
                items: group,
                reply,
                trace: None,
                in_flight: None,
                epoch: Some(self.held.epoch),
            };
            self.lane.send(LaneMessage::Work(job)).ok()?;
            outcomes.extend(answers.await.ok()?);
            // A merge not applied yet (its link still uncommitted) holds back everything after
            // it: those entries are read again after it, so none of them may take effect
            // before it (a purchase must find the merged hold waiting).
            let held_back = positions.iter().any(|p| {
                matches!(
                    outcomes.get(p),
                    Some(Outcome::Ack(AckStatus::Rejected { code, .. })) if code == LINK_PENDING
                )
            });
            if held_back {
                break;
            }
        }
        let mut applied = Applied {
            committed,
            stalled: None,
        };
        let mut notice = Notice {
            epoch: self.held.epoch,
            seq: committed,
            outcomes: Vec::new(),
        };
        for (position, log_entry) in entries.iter().enumerate() {
            // An entry the reader answered itself can never apply: it is committed past.
            let answer = match answered.remove(&position) {
                Some(answer) => Ok(answer),
                None => Answer::settle(outcomes.remove(&position)),
            };
            match answer {
                Ok(answer) => {
                    notice.seq = log_entry.seq;
                    if let Some(answer) = answer {
                        notice.outcomes.push((log_entry.seq, answer));
                    }
                }
                Err(code) => {
                    applied.stalled = Some((log_entry.seq, code));
                    break;
                }
            }
        }
        if notice.seq > committed {
            applied.committed = notice.seq;
            self.announce(&notice).await;
        }
        Some(applied)
    }

    /// The entries as lane items, and the answers of those that can never apply (undecodable,
    /// or of another partition), by position.
    fn decode(&self, entries: &[LogEntry]) -> (Vec<Routed>, Answered, Vec<String>) {
        let partitions = self.shared.config.partitions;
        let partition = self.held.partition;
        // Entries answered without the lane: forgets (applied at once), undecodable ones and
        // those of another partition (never applicable).
        let mut answered: Answered = HashMap::new();
        let mut forget = Vec::new();
        let mut items = Vec::with_capacity(entries.len());
        for (position, log_entry) in entries.iter().enumerate() {
            let (profile_id, item) = match Entry::decode(&log_entry.payload) {
                Ok(Entry::Event(event)) => {
                    (event.profile_id().map(str::to_owned), Item::Event(event))
                }
                Ok(Entry::Terminate {
                    profile_id,
                    instance_id,
                    reason,
                }) => (
                    Some(profile_id),
                    Item::Terminate {
                        instance_id,
                        reason,
                    },
                ),
                Ok(Entry::Timer(timer)) => {
                    (Some(timer.profile_id.clone()), Item::Timer(timer.into()))
                }
                Ok(Entry::Delete {
                    profile_id,
                    suppress,
                }) => (Some(profile_id), Item::Delete { suppress }),
                Ok(Entry::Link(event)) => (
                    event.linked_identity().map(str::to_owned),
                    Item::Link(event),
                ),
                Ok(Entry::Relay { via, to, event }) => (Some(via), Item::Relay { to, event }),
                Ok(Entry::Merge { profile_id, from }) => (Some(profile_id), Item::Merge { from }),
                Ok(Entry::Forget { profile_ids }) => {
                    forget.extend(profile_ids);
                    answered.insert(position, None);
                    continue;
                }
                Err(err) => {
                    tracing::error!(partition, seq = log_entry.seq, error = %err, "undecodable log entry skipped");
                    answered.insert(
                        position,
                        Some(rejected(INTERNAL, "the entry does not decode")),
                    );
                    continue;
                }
            };
            match profile_id {
                Some(profile_id) if partition_of(&profile_id, partitions) == partition => {
                    items.push(Routed {
                        position,
                        profile_id,
                        partition,
                        item,
                        seq: Some(log_entry.seq),
                        hops: 0,
                    });
                }
                _ => {
                    tracing::error!(
                        partition,
                        seq = log_entry.seq,
                        "an entry of another partition (do all nodes use the same partition count?)"
                    );
                    answered.insert(
                        position,
                        Some(rejected(INTERNAL, "published to the wrong partition")),
                    );
                }
            }
        }
        (items, answered, forget)
    }

    /// Commits `seq` as applied without effect (an entry that keeps failing) and announces it.
    async fn skip(&self, seq: u64) -> bool {
        let partition = self.held.partition;
        let progress = [(partition, i64::try_from(seq).unwrap_or(i64::MAX))];
        let skipped = self
            .shared
            .store
            .batches()
            .commit_logged(&Changes::default(), &[self.held], &progress)
            .await;
        match skipped {
            Ok(()) => {
                tracing::error!(
                    partition,
                    seq,
                    "an entry failed {MAX_ATTEMPTS} times and was skipped"
                );
                let notice = Notice {
                    epoch: self.held.epoch,
                    seq,
                    outcomes: vec![(
                        seq,
                        Answer::Rejected {
                            code: INTERNAL.to_owned(),
                            message: "the event could not be applied".to_owned(),
                        },
                    )],
                };
                self.announce(&notice).await;
                true
            }
            Err(err) => {
                tracing::warn!(partition, seq, error = %err, "could not skip a failing entry");
                false
            }
        }
    }

    async fn announce(&self, notice: &Notice) {
        let partition = self.held.partition;
        match notice.encode() {
            Ok(bytes) => {
                // A lost notice only delays a front: it falls back to the store.
                if let Err(err) = self.log.notify(partition, bytes).await {
                    tracing::debug!(partition, error = %err, "commit notice not sent");
                }
            }
            Err(err) => tracing::error!(partition, error = %err, "commit notice does not encode"),
        }
    }
}

fn rejected(code: &str, message: &str) -> Answer {
    Answer::Rejected {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

/// The next entries: waits for one, then takes what is ready, up to `max`. `None` when the
/// reader ended (it does not, short of the engine stopping).
async fn next_batch(reader: &mut journeys_log::Reader, max: usize) -> Option<Vec<LogEntry>> {
    let first = loop {
        match reader.next().await? {
            Ok(entry) => break entry,
            Err(err) => tracing::debug!(error = %err, "partition log read failed; reopening"),
        }
    };
    let mut entries = vec![first];
    while entries.len() < max.max(1) {
        match reader.next().now_or_never() {
            Some(Some(Ok(entry))) => entries.push(entry),
            _ => break,
        }
    }
    Some(entries)
}
