//! [`LogFront`]: the event sink of a data plane whose node shares a NATS log with others.
//!
//! It publishes each valid event into its profile's partition and answers once the owner
//! announced the commit that applied it. A notice can be lost (core NATS is at most once, and
//! the owner may die between its commit and its notice), so every second the front also reads
//! `log_seq` of the partitions it has waited on for longer than [`FrontConfig::fallback_after`]:
//! an entry at or below it is applied, and answered `accepted` (the notice would have said
//! more, such as `rate_limited`; that detail is what a lost notice costs). An event still not
//! applied after [`FrontConfig::commit_wait`] is answered `unavailable`: it is in the log and
//! will be applied, and a resend is answered from the same entry.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use journeys_core::machine::ExitReason;
use journeys_core::model::Event;
use journeys_core::partition::partition_of;
use journeys_log::{PartitionLog, Record};
use journeys_store::{Store, TimerRecord};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::entry::{Answer, Entry, Notice};
use crate::ack::{Ack, AckStatus, EventSink, INTERNAL, OVERLOADED, UNAVAILABLE};
use crate::job::{TerminateOutcome, TimerOutcome, TimerStatus};
use crate::watermark::Watermark;

/// Outcomes other than `accepted` a front remembers per partition, for answers that arrive
/// before their waiter registers.
const REMEMBERED_ANSWERS: usize = 4096;

/// How a [`LogFront`] waits for owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontConfig {
    /// Partitions of the deployment: the same number every node and the log use.
    pub partitions: u32,
    /// How long an event may wait for its commit before it is answered `unavailable`.
    pub commit_wait: Duration,
    /// How long a front waits for a commit notice before it reads the partition's progress
    /// from the store instead.
    pub fallback_after: Duration,
    /// Events received but not yet answered above which new ones are answered `overloaded`.
    pub max_in_flight_events: usize,
}

impl FrontConfig {
    /// The defaults for `partitions`: 30 s to commit, the store read after 1 s without a
    /// notice, 100,000 events in flight.
    #[must_use]
    pub fn new(partitions: u32) -> Self {
        Self {
            partitions,
            commit_wait: Duration::from_secs(30),
            fallback_after: Duration::from_secs(1),
            max_in_flight_events: 100_000,
        }
    }
}

/// The event sink that publishes into the partition log. Cheap to clone.
#[derive(Clone)]
pub struct LogFront {
    inner: Arc<Inner>,
}

struct Inner {
    log: PartitionLog,
    store: Store,
    config: FrontConfig,
    waits: Mutex<HashMap<u32, Waits>>,
    watermark: Arc<Watermark>,
    stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Per published record: its entry's sequence, whether that entry was already in the log, and
/// its committed outcome (`None`: not committed in time; `Some(None)`: accepted).
type Settled = (u64, bool, Option<Option<Answer>>);

/// Refusals an owner may judge otherwise later: a resend of an event refused with one of these
/// is published again for a fresh judgement.
const REEVALUATED: [&str; 2] = [crate::ack::RATE_LIMITED, crate::ack::TOO_MANY_INSTANCES];
/// How many times one call publishes such a resend again (each matching an earlier refusal).
const MAX_REEVALUATIONS: usize = 8;

/// Who waits for an entry's commit, and hears its outcome (`None`: accepted).
type Waiter = oneshot::Sender<Option<Answer>>;

/// One partition's progress as this front knows it, and who waits on it.
#[derive(Default)]
struct Waits {
    committed: u64,
    /// Recent outcomes other than `accepted`, by sequence.
    answers: BTreeMap<u64, Answer>,
    /// Waiters by sequence, with when the first of them started waiting.
    waiting: BTreeMap<u64, (Instant, Vec<Waiter>)>,
}

impl Waits {
    /// Moves the committed sequence to `seq` and answers whoever waited up to it.
    fn advance(&mut self, seq: u64, outcomes: Vec<(u64, Answer)>) {
        self.answers.extend(outcomes);
        while self.answers.len() > REMEMBERED_ANSWERS {
            self.answers.pop_first();
        }
        self.committed = self.committed.max(seq);
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > self.committed {
                break;
            }
            let (waited, (_, senders)) = entry.remove_entry();
            let status = self.status_of(waited);
            for sender in senders {
                let _ = sender.send(status.clone());
            }
        }
    }

    /// The outcome of `seq` once committed: `None` accepted (or exited), else its answer.
    fn status_of(&self, seq: u64) -> Option<Answer> {
        self.answers.get(&seq).cloned()
    }
}

impl LogFront {
    /// Starts listening for commit notices on `log`. `store` is where the fallback reads
    /// partition progress.
    ///
    /// # Errors
    /// The notice subscription could not be made (NATS is down).
    pub async fn start(
        log: PartitionLog,
        store: Store,
        config: FrontConfig,
    ) -> Result<Self, journeys_log::LogError> {
        let mut notices = log.notices().await?;
        let inner = Arc::new(Inner {
            log,
            store,
            config,
            waits: Mutex::new(HashMap::new()),
            watermark: Arc::new(Watermark::default()),
            stopping: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        let listening = Arc::downgrade(&inner);
        let listener = tokio::spawn(async move {
            while let Some((partition, payload)) = notices.next().await {
                let Some(inner) = listening.upgrade() else {
                    return;
                };
                match Notice::decode(&payload) {
                    Ok(notice) => {
                        inner.waits_of(partition, |w| w.advance(notice.seq, notice.outcomes));
                    }
                    Err(err) => {
                        tracing::warn!(partition, error = %err, "commit notice does not decode");
                    }
                }
            }
        });
        let checking = Arc::downgrade(&inner);
        let fallback_after = inner.config.fallback_after;
        let fallback = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(fallback_after.max(Duration::from_millis(50)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = checking.upgrade() else {
                    return;
                };
                inner.fall_back().await;
            }
        });
        inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([listener, fallback]);
        Ok(Self { inner })
    }

    /// The receive time of the oldest event received but not yet answered, or now when idle.
    #[must_use]
    pub fn watermark(&self) -> DateTime<Utc> {
        self.inner.watermark.current()
    }

    /// Stops taking events (they are answered `unavailable`) and stops listening. Events
    /// already published are applied by their owners regardless.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::Release);
        for task in self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }

    /// Ends the instances `targets` (instance id, profile id) through the owners of their
    /// partitions, each in its partition's order: per target, what the exit did, or why it
    /// could not be applied (`code: message`).
    pub async fn terminate(
        &self,
        targets: Vec<(String, String)>,
        reason: &ExitReason,
    ) -> Vec<Result<TerminateOutcome, String>> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return targets
                .iter()
                .map(|_| Err(format!("{UNAVAILABLE}: the node is shutting down")))
                .collect();
        }
        self.inner.terminate(targets, reason).await
    }

    /// Deletes `profile_id` through the owner of its partition, in the partition's order
    /// (`code: message` when it could not be applied).
    ///
    /// # Errors
    /// As described: `unavailable` while shutting down or without the log.
    pub async fn delete_profile(&self, profile_id: &str, suppress: bool) -> Result<(), String> {
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(format!("{UNAVAILABLE}: the node is shutting down"));
        }
        self.inner.delete_profile(profile_id, suppress).await
    }

    /// Makes the owners of `profile_ids` drop them from memory, in their partitions' log
    /// order; returns once every owner did (or the wait ran out).
    ///
    /// # Errors
    /// The log is unavailable, or an owner did not apply it within the commit wait.
    pub async fn forget(&self, profile_ids: &[String]) -> Result<(), String> {
        let mut by_partition: std::collections::BTreeMap<u32, Vec<String>> =
            std::collections::BTreeMap::new();
        for profile_id in profile_ids {
            by_partition
                .entry(partition_of(profile_id, self.inner.config.partitions))
                .or_default()
                .push(profile_id.clone());
        }
        let request = uuid::Uuid::new_v4().simple().to_string();
        let mut records = Vec::with_capacity(by_partition.len());
        for (partition, profile_ids) in by_partition {
            let payload = Entry::Forget { profile_ids }
                .encode()
                .map_err(|err| err.to_string())?;
            records.push(Record {
                partition,
                msg_id: format!("forget:{request}:{partition}"),
                payload,
            });
        }
        let settled = self
            .inner
            .publish_and_wait(&records)
            .await
            .map_err(|err| err.to_string())?;
        if settled.iter().all(|(_, _, answer)| answer.is_some()) {
            Ok(())
        } else {
            Err("an owner did not apply the change in time".to_owned())
        }
    }

    /// Fires `timers` through the owners of their partitions: each is applied after every
    /// event published into its partition before it. Per timer, in input order, what became
    /// of it.
    pub async fn fire_timers(&self, timers: Vec<TimerRecord>) -> Vec<TimerOutcome> {
        let retry = |message: String| TimerStatus::Retry {
            code: UNAVAILABLE.to_owned(),
            message,
        };
        if self.inner.stopping.load(Ordering::Acquire) {
            return timers
                .into_iter()
                .map(|t| TimerOutcome {
                    timer_id: t.id,
                    status: retry("the node is shutting down".to_owned()),
                    answered_at: Utc::now(),
                })
                .collect();
        }
        let mut records = Vec::with_capacity(timers.len());
        for timer in &timers {
            let partition = partition_of(&timer.profile_id, self.inner.config.partitions);
            // One entry per timer and due time: a timer claimed again (its claim lapsed) is
            // answered from the entry already in the log.
            let msg_id = format!("timer:{}:{}", timer.id, timer.due_at.timestamp_micros());
            match Entry::Timer(timer.into()).encode() {
                Ok(payload) => records.push(Record {
                    partition,
                    msg_id,
                    payload,
                }),
                Err(err) => {
                    return timers
                        .into_iter()
                        .map(|t| TimerOutcome {
                            timer_id: t.id,
                            status: retry(format!("the timer does not encode: {err}")),
                            answered_at: Utc::now(),
                        })
                        .collect();
                }
            }
        }
        let settled = match self.inner.publish_and_wait(&records).await {
            Ok(settled) => settled.into_iter().map(|(_, _, answer)| answer).collect(),
            Err(err) => {
                tracing::warn!(error = %err, timers = records.len(), "publishing timers failed");
                vec![None; timers.len()]
            }
        };
        let answered_at = Utc::now();
        timers
            .into_iter()
            .zip(settled)
            .map(|(timer, answer)| TimerOutcome {
                timer_id: timer.id,
                answered_at,
                status: match answer {
                    Some(None) => TimerStatus::Fired,
                    Some(Some(Answer::Discarded)) => TimerStatus::Discarded,
                    Some(Some(Answer::Rejected { code, message })) => {
                        TimerStatus::Retry { code, message }
                    }
                    Some(Some(_)) | None => {
                        retry("the timer is in the log but not applied yet".to_owned())
                    }
                },
            })
            .collect()
    }

    /// Publishes `events` and returns one acknowledgement per event, in input order, each once
    /// its owner committed it (or it was refused).
    pub fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        async move { inner.submit(events).await }
    }
}

impl Inner {
    fn waits_of<T>(&self, partition: u32, f: impl FnOnce(&mut Waits) -> T) -> T {
        let mut waits = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
        f(waits.entry(partition).or_default())
    }

    async fn submit(&self, events: Vec<Event>) -> Vec<Ack> {
        let message_ids: Vec<String> = events.iter().map(|e| e.message_id.clone()).collect();
        let refusal = if self.stopping.load(Ordering::Acquire) {
            Some((UNAVAILABLE, "the node is shutting down"))
        } else if self.watermark.in_flight_events() + events.len()
            > self.config.max_in_flight_events
        {
            Some((OVERLOADED, "too many events in flight; retry later"))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            return message_ids
                .into_iter()
                .map(|id| Ack::rejected(id, code, message))
                .collect();
        }
        let _in_flight = self.watermark.enter(events.len());
        let mut answers: Vec<Option<AckStatus>> = vec![None; events.len()];
        let mut records = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        // Per user whose linking event this call published: the linked id it went through.
        let mut relays: HashMap<String, String> = HashMap::new();
        for (position, event) in events.into_iter().enumerate() {
            let profile = match event.profile_id() {
                Some(profile) if !event.message_id.is_empty() => profile.to_owned(),
                _ => {
                    answers[position] = Some(rejected(
                        "invalid",
                        "an event needs a messageId and a userId or anonymousId",
                    ));
                    continue;
                }
            };
            // Scoped per source, as the engine's own dedupe is.
            let msg_id = event.dedupe_key().into_owned();
            let (via, entry) = Self::route(&mut relays, &profile, event);
            let partition = partition_of(&via, self.config.partitions);
            match entry.encode() {
                Ok(payload) => {
                    records.push(Record {
                        partition,
                        msg_id,
                        payload,
                    });
                    positions.push(position);
                }
                Err(err) => {
                    tracing::error!(error = %err, "an event does not encode");
                    answers[position] = Some(rejected(INTERNAL, "the event could not be encoded"));
                }
            }
        }
        if !records.is_empty() {
            self.publish(&records, &positions, &mut answers).await;
        }
        message_ids
            .into_iter()
            .zip(answers)
            .map(|(message_id, status)| Ack {
                message_id,
                status: status.unwrap_or_else(|| rejected(INTERNAL, "no answer")),
            })
            .collect()
    }

    /// Where an event of `profile` goes, as what: an event linking an id to its user goes to
    /// the id's partition first ([`Entry::Link`]); a later event of that user in the same call
    /// follows it there ([`Entry::Relay`]); any other to its profile's partition.
    fn route(relays: &mut HashMap<String, String>, profile: &str, event: Event) -> (String, Entry) {
        if let Some(identity) = event.linked_identity() {
            let identity = identity.to_owned();
            relays
                .entry(profile.to_owned())
                .or_insert_with(|| identity.clone());
            return (identity, Entry::Link(event));
        }
        match relays.get(profile) {
            Some(via) => (
                via.clone(),
                Entry::Relay {
                    via: via.clone(),
                    to: profile.to_owned(),
                    event,
                },
            ),
            None => (profile.to_owned(), Entry::Event(event)),
        }
    }

    /// Publishes `records` (of the events at `positions`) and waits for their commits.
    async fn publish(
        &self,
        records: &[Record],
        positions: &[usize],
        answers: &mut [Option<AckStatus>],
    ) {
        let mut batch: Vec<(usize, Record)> = positions
            .iter()
            .copied()
            .zip(records.iter().cloned())
            .collect();
        for round in 0..=MAX_REEVALUATIONS {
            let records: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
            let settled = match self.publish_and_wait(&records).await {
                Ok(settled) => settled,
                Err(err) => {
                    tracing::warn!(error = %err, events = records.len(), "publishing to the log failed");
                    for (position, _) in batch {
                        answers[position] =
                            Some(rejected(UNAVAILABLE, "the event log is unavailable; retry"));
                    }
                    return;
                }
            };
            let mut again = Vec::new();
            for ((position, record), (seq, duplicate, answer)) in batch.into_iter().zip(settled) {
                // A resend of an event the owner refused for now (rate limit, instance limit)
                // matches the refused entry within JetStream's duplicate window: it is published
                // again under a new id derived from that entry, for the owner to judge afresh
                // (a refused event left no dedupe key, so it cannot apply twice).
                if let (true, Some(Some(Answer::Rejected { code, .. }))) = (duplicate, &answer)
                    && REEVALUATED.contains(&code.as_str())
                    && round < MAX_REEVALUATIONS
                {
                    again.push((
                        position,
                        Record {
                            msg_id: format!("{}~{seq}", record.msg_id),
                            ..record
                        },
                    ));
                    continue;
                }
                answers[position] = Some(match answer.map(Answer::status) {
                    Some(AckStatus::Accepted) if duplicate => AckStatus::Duplicate,
                    Some(status) => status,
                    None => rejected(
                        UNAVAILABLE,
                        "the event is in the log but not applied yet; resend it (it is deduplicated)",
                    ),
                });
            }
            if again.is_empty() {
                return;
            }
            batch = again;
        }
    }

    /// Publishes `records` and waits (up to `commit_wait`) for the commit of each: per record,
    /// its entry's sequence, whether that entry was already in the log, and its committed
    /// outcome (`None` when it did not commit in time).
    async fn publish_and_wait(
        &self,
        records: &[Record],
    ) -> Result<Vec<Settled>, journeys_log::LogError> {
        let published = self.log.publish_batch(records).await?;
        let waiting: Vec<_> = records
            .iter()
            .zip(published)
            .map(|(record, done)| {
                let rx = self.wait_for(record.partition, done.seq);
                (done.seq, done.duplicate, rx)
            })
            .collect();
        let deadline = tokio::time::Instant::now() + self.config.commit_wait;
        let mut settled = Vec::with_capacity(waiting.len());
        for (seq, duplicate, rx) in waiting {
            let answer = tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok);
            settled.push((seq, duplicate, answer));
        }
        Ok(settled)
    }

    /// Deletes `profile_id` through its partition's owner, after every event published into
    /// the partition before.
    pub(crate) async fn delete_profile(
        &self,
        profile_id: &str,
        suppress: bool,
    ) -> Result<(), String> {
        let partition = partition_of(profile_id, self.config.partitions);
        let request = uuid::Uuid::new_v4().simple().to_string();
        let entry = Entry::Delete {
            profile_id: profile_id.to_owned(),
            suppress,
        };
        let payload = entry.encode().map_err(|err| format!("{INTERNAL}: {err}"))?;
        let records = [Record {
            partition,
            msg_id: format!("delete:{profile_id}:{request}"),
            payload,
        }];
        match self.publish_and_wait(&records).await {
            Ok(settled) => match settled.into_iter().next().map(|(_, _, answer)| answer) {
                Some(Some(None)) => Ok(()),
                Some(Some(Some(Answer::Rejected { code, message }))) => {
                    Err(format!("{code}: {message}"))
                }
                _ => Err(format!(
                    "{UNAVAILABLE}: the deletion is in the log but not applied yet"
                )),
            },
            Err(err) => Err(format!("{UNAVAILABLE}: {err}")),
        }
    }

    /// Ends `targets` (instance id, profile id) through their partitions' owners.
    async fn terminate(
        &self,
        targets: Vec<(String, String)>,
        reason: &ExitReason,
    ) -> Vec<Result<TerminateOutcome, String>> {
        let request = uuid::Uuid::new_v4().simple().to_string();
        let mut records = Vec::with_capacity(targets.len());
        for (instance_id, profile_id) in targets {
            let partition = partition_of(&profile_id, self.config.partitions);
            let msg_id = format!("exit:{instance_id}:{request}");
            let entry = Entry::Terminate {
                profile_id,
                instance_id,
                reason: reason.clone(),
            };
            match entry.encode() {
                Ok(payload) => records.push(Record {
                    partition,
                    msg_id,
                    payload,
                }),
                Err(err) => return vec![Err(format!("{INTERNAL}: {err}"))],
            }
        }
        match self.publish_and_wait(&records).await {
            Ok(settled) => settled
                .into_iter()
                .map(|(_, _, answer)| match answer {
                    Some(None) => Ok(TerminateOutcome::Exited),
                    Some(Some(Answer::Terminated(outcome))) => Ok(outcome),
                    Some(Some(Answer::Rejected { code, message })) => {
                        Err(format!("{code}: {message}"))
                    }
                    Some(Some(Answer::Duplicate | Answer::Discarded)) | None => Err(format!(
                        "{UNAVAILABLE}: the exit is in the log but not applied yet"
                    )),
                })
                .collect(),
            Err(err) => records
                .iter()
                .map(|_| Err(format!("{UNAVAILABLE}: {err}")))
                .collect(),
        }
    }

    /// A receiver answered once `seq` of `partition` is committed (at once if it is).
    fn wait_for(&self, partition: u32, seq: u64) -> oneshot::Receiver<Option<Answer>> {
        let (tx, rx) = oneshot::channel();
        self.waits_of(partition, |waits| {
            if seq <= waits.committed {
                let _ = tx.send(waits.status_of(seq));
            } else {
                waits
                    .waiting
                    .entry(seq)
                    .or_insert_with(|| (Instant::now(), Vec::new()))
                    .1
                    .push(tx);
            }
        });
        rx
    }

    /// Reads the progress of the partitions whose oldest waiter has waited past
    /// `fallback_after`, and answers what it shows committed.
    async fn fall_back(&self) {
        let overdue: Vec<u32> = {
            let waits = self.waits.lock().unwrap_or_else(PoisonError::into_inner);
            waits
                .iter()
                .filter(|(_, w)| {
                    w.waiting
                        .values()
                        .next()
                        .is_some_and(|(since, _)| since.elapsed() >= self.config.fallback_after)
                })
                .map(|(p, _)| *p)
                .collect()
        };
        if overdue.is_empty() {
            return;
        }
        match self.store.partitions().all().await {
            Ok(rows) => {
                for row in rows.into_iter().filter(|r| overdue.contains(&r.partition)) {
                    let seq = u64::try_from(row.log_seq).unwrap_or(0);
                    self.waits_of(row.partition, |w| w.advance(seq, Vec::new()));
                }
            }
            Err(err) => tracing::debug!(error = %err, "partition progress unreadable"),
        }
    }
}

impl EventSink for LogFront {
    fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send {
        LogFront::submit(self, events)
    }
}

fn rejected(code: &str, message: &str) -> AckStatus {
    AckStatus::Rejected {
        code: code.to_owned(),
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_answers_waiters_up_to_its_sequence_with_their_outcomes() {
        let mut waits = Waits::default();
        let mut receivers = Vec::new();
        for seq in [3, 5, 9] {
            let (tx, rx) = oneshot::channel();
            waits.waiting.insert(seq, (Instant::now(), vec![tx]));
            receivers.push(rx);
        }
        waits.advance(5, vec![(5, Answer::Duplicate)]);
        assert_eq!(receivers[0].try_recv().unwrap(), None);
        assert_eq!(receivers[1].try_recv().unwrap(), Some(Answer::Duplicate));
        assert!(receivers[2].try_recv().is_err(), "9 is not committed yet");
        // A late, older notice moves nothing back.
        waits.advance(4, Vec::new());
        assert_eq!(waits.committed, 5);
        assert_eq!(waits.status_of(5), Some(Answer::Duplicate));
    }
}
