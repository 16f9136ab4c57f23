//! The firer: keeps claimed timers ordered by due time, hands those due to the engine in
//! batches (several calls in flight), records the outcomes, and at shutdown releases the claims
//! of the timers it did not fire.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use journeys_engine::{EngineError, TimerOutcome, TimerStatus};
use journeys_runtime::metrics;
use journeys_store::{Store, TimerRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::Instrument as _;

use super::{Message, Shared, backoff};
use crate::lateness::LatenessHistogram;
use crate::queue::TimerQueue;

/// Longest sleep of the firer with nothing to do; it wakes earlier for claims and due times.
const MAX_IDLE: Duration = Duration::from_secs(1);
/// Ids per `release` statement at shutdown.
const RELEASE_CHUNK: usize = 1000;

/// Fires claimed timers when due until stopped, then releases what it still holds.
pub(super) async fn fire_loop(
    shared: Arc<Shared>,
    sender: mpsc::UnboundedSender<Message>,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut queue = TimerQueue::default();
    'run: loop {
        while let Ok(message) = receiver.try_recv() {
            enqueue(&shared, &mut queue, message);
        }
        let now = Utc::now();
        let ready = queue.take_ready(now, shared.watermark.watermark());
        if !ready.is_empty() {
            tracing::trace!(count = ready.len(), "firing timers");
        }
        let mut ready = ready.into_iter().peekable();
        while ready.peek().is_some() {
            let batch: Vec<TimerRecord> = ready.by_ref().take(config.fire_batch).collect();
            let permit = tokio::select! {
                biased;
                permit = Arc::clone(&permits).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'run,
                },
                _ = stop.changed() => {
                    // Not fired: put back so the shutdown below releases them.
                    for timer in batch.into_iter().chain(ready) {
                        queue.requeue(timer);
                    }
                    break 'run;
                }
            };
            tokio::spawn(fire(
                Arc::clone(&shared),
                batch,
                permit,
                sender.clone(),
                stop.clone(),
            ));
        }

        let now = Utc::now();
        let wake = queue.next_wake(now);
        let mut sleep_for = MAX_IDLE;
        if let Some(at) = wake.at {
            sleep_for = sleep_for.min((at - now).to_std().unwrap_or(Duration::ZERO));
        }
        if wake.waiting_for_watermark {
            sleep_for = sleep_for.min(config.watermark_poll);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => break 'run,
            message = receiver.recv() => match message {
                Some(message) => enqueue(&shared, &mut queue, message),
                None => break 'run,
            },
            () = tokio::time::sleep(sleep_for) => {}
        }
    }

    release_held(&shared, &permits, receiver, queue).await;
}

/// At shutdown: lets the engine calls in flight finish (failed ones send their timers back),
/// then releases the claims of everything not fired.
async fn release_held(
    shared: &Shared,
    permits: &Semaphore,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    mut queue: TimerQueue,
) {
    let in_flight = u32::try_from(shared.config.max_in_flight).unwrap_or(u32::MAX);
    if let Ok(all) = permits.acquire_many(in_flight).await {
        drop(all);
    }
    while let Ok(message) = receiver.try_recv() {
        enqueue(shared, &mut queue, message);
    }
    let left = queue.drain();
    shared
        .counters
        .held
        .fetch_sub(left.len(), Ordering::Relaxed);
    release(&shared.store, left).await;
}

/// Applies a message to the queue: claims are queued (dropping timers already queued or being
/// fired, whose lease ran out and which were claimed again), finished firings forgotten,
/// failed ones queued again.
fn enqueue(shared: &Shared, queue: &mut TimerQueue, message: Message) {
    let gone = match message {
        Message::Claimed(timers) => timers
            .into_iter()
            .filter(|timer| !queue.insert(timer.clone()))
            .count(),
        Message::Finished(ids) => {
            queue.finish(ids.iter().map(String::as_str));
            ids.len()
        }
        Message::Retry(timers) => {
            for timer in timers {
                queue.requeue(timer);
            }
            0
        }
    };
    if gone > 0 {
        shared.counters.held.fetch_sub(gone, Ordering::Relaxed);
        shared.room.notify_one();
    }
}

/// Applies one batch through the engine and records the outcome; failed timers go back to the
/// firer after a backoff.
async fn fire(
    shared: Arc<Shared>,
    batch: Vec<TimerRecord>,
    permit: OwnedSemaphorePermit,
    sender: mpsc::UnboundedSender<Message>,
    mut stop: watch::Receiver<bool>,
) {
    let count = batch.len();
    let ids: Vec<String> = batch.iter().map(|t| t.id.clone()).collect();
    let called = std::time::Instant::now();
    {
        let handed_at = Utc::now();
        let mut wait = shared
            .counters
            .wait
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for timer in &batch {
            wait.record((handed_at - timer.due_at).to_std().unwrap_or_default());
        }
    }
    let span = tracing::info_span!("scheduler.fire", timers = count);
    let result = shared
        .engine
        .apply_timers(batch.clone())
        .instrument(span)
        .await;
    shared
        .counters
        .apply_time
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(called.elapsed());
    let (retry, elsewhere) = match result {
        Ok(outcomes) => record(&shared, batch, &outcomes),
        Err(error) => {
            if matches!(error, EngineError::ShuttingDown) {
                tracing::debug!("engine shutting down; timers go back to the store");
            } else {
                tracing::warn!(%error, count, "firing timers failed");
            }
            (batch, Vec::new())
        }
    };
    // Timers of partitions another node holds: their owner claims them once released.
    release(&shared.store, elsewhere).await;
    if retry.len() < count {
        let retrying: std::collections::HashSet<&str> =
            retry.iter().map(|t| t.id.as_str()).collect();
        let done = ids
            .into_iter()
            .filter(|id| !retrying.contains(id.as_str()))
            .collect();
        // The firer is gone only at shutdown, after every firing ended.
        let _ = sender.send(Message::Finished(done));
    }
    if retry.is_empty() {
        shared.fire_failures.store(0, Ordering::Relaxed);
    } else {
        shared
            .counters
            .retried
            .fetch_add(retry.len() as u64, Ordering::Relaxed);
        let failures = shared.fire_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !*stop.borrow() {
            tokio::select! {
                _ = stop.changed() => {}
                () = tokio::time::sleep(backoff(failures)) => {}
            }
        }
        // Still held: counted in `held` until fired or released.
        if sender.send(Message::Retry(retry)).is_err() {
            tracing::debug!("timer firer gone; failed timers are claimed again after their lease");
        }
    }
    drop(permit);
}

/// Counts the outcomes of one engine call and returns the timers to try again and those to
/// release to another node.
fn record(
    shared: &Shared,
    batch: Vec<TimerRecord>,
    outcomes: &[TimerOutcome],
) -> (Vec<TimerRecord>, Vec<TimerRecord>) {
    let mut applied = 0u64;
    let mut discarded = 0u64;
    let mut retry = Vec::new();
    let mut elsewhere = Vec::new();
    let mut lateness = LatenessHistogram::new();
    let mut by_id: std::collections::HashMap<&str, &TimerOutcome> =
        outcomes.iter().map(|o| (o.timer_id.as_str(), o)).collect();
    let mut unanswered = Vec::new();
    let exported = metrics::metrics();
    // Fired at its lane's commit, which may come before the call's other lanes commit.
    let mut late = |timer: &TimerRecord, fired_at: DateTime<Utc>| {
        let value = (fired_at - timer.due_at).to_std().unwrap_or_default();
        lateness.record(value);
        exported.timer_lateness.observe(value);
    };
    for timer in batch {
        let Some(outcome) = by_id.remove(timer.id.as_str()) else {
            unanswered.push(timer);
            continue;
        };
        match &outcome.status {
            TimerStatus::Fired => {
                applied += 1;
                late(&timer, outcome.answered_at);
            }
            TimerStatus::Discarded => {
                discarded += 1;
                late(&timer, outcome.answered_at);
            }
            TimerStatus::Retry { code, message } => {
                tracing::debug!(timer = %timer.id, %code, %message, "timer not applied; retrying");
                retry.push(timer);
            }
            TimerStatus::Elsewhere => elsewhere.push(timer),
        }
    }
    if !unanswered.is_empty() {
        tracing::warn!(
            count = unanswered.len(),
            "the engine did not answer for some timers; retrying them"
        );
        retry.extend(unanswered);
    }
    exported.timers_fired.add(&["applied"], applied);
    exported.timers_fired.add(&["discarded"], discarded);
    let counters = &shared.counters;
    counters.applied.fetch_add(applied, Ordering::Relaxed);
    counters.discarded.fetch_add(discarded, Ordering::Relaxed);
    counters
        .lateness
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .merge(&lateness);
    (retry, elsewhere)
}

/// Releases the claims of `timers`, in chunks; failures only delay them until the lease ends.
async fn release(store: &Store, timers: Vec<TimerRecord>) {
    if timers.is_empty() {
        return;
    }
    let ids: Vec<String> = timers.into_iter().map(|t| t.id).collect();
    let mut released = 0;
    for chunk in ids.chunks(RELEASE_CHUNK) {
        match store.timers().release(chunk).await {
            Ok(()) => released += chunk.len(),
            Err(error) => {
                tracing::warn!(%error, count = chunk.len(), "releasing timer claims failed; they are claimable again after their lease");
            }
        }
    }
    tracing::debug!(released, "released unfired timer claims");
}
