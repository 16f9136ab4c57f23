//! The dispatcher's marker: records the outcomes of finished deliveries in batches, so that a
//! burst of deliveries costs one store statement per batch instead of one transaction each.
//!
//! Delivery tasks hand their outcome over through a bounded channel and end; the marker writes
//! what has accumulated ([`journeys_store::Outbox::record`]) once `mark_batch` outcomes are
//! waiting or the oldest has waited `mark_delay`, whichever comes first. A full channel makes
//! delivery tasks wait with their in-flight slots taken, so the dispatcher claims no faster than
//! the store records. Until its mark is written a delivered row stays pending and leased; if the
//! process dies first, the row is sent again once its claim is free (the dispatcher's claimant
//! lease ran out) with the same `Idempotency-Key` (delivery is at least once). Once every sender is gone (the dispatcher stopped and its
//! deliveries ended) the marker writes what is left and ends.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use journeys_store::{OutboxMark, Store};

/// Tries per batch before its marks are given up (the rows are then sent again after their
/// lease).
const FLUSH_ATTEMPTS: u32 = 3;
/// Pause between tries of a batch, so that a store outage is not hammered.
const FLUSH_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Hands outcomes to the marker. Cheap to clone; the marker ends once every clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct MarkSender {
    tx: mpsc::Sender<OutboxMark>,
}

impl MarkSender {
    /// Queues `mark`, waiting while the marker is `mark_batch` marks behind.
    pub async fn send(&self, mark: OutboxMark) {
        if let Err(unsent) = self.tx.send(mark).await {
            // Only after the marker task died: the row goes again after its lease.
            tracing::warn!(
                outbox_id = unsent.0.id(),
                "delivery outcome not recorded: the marker has stopped"
            );
        }
    }
}

/// Starts the marker over `store`; `notify` wakes the dispatcher after a batch with retries (the
/// dispatcher may be asleep past their new due time).
pub(crate) fn start(
    store: Store,
    notify: Arc<Notify>,
    batch: usize,
    delay: Duration,
) -> (MarkSender, JoinHandle<()>) {
    let batch = batch.max(1);
    let (tx, rx) = mpsc::channel(batch);
    let marker = Marker {
        store,
        notify,
        batch,
        delay,
    };
    (MarkSender { tx }, tokio::spawn(marker.run(rx)))
}

struct Marker {
    store: Store,
    notify: Arc<Notify>,
    batch: usize,
    delay: Duration,
}

impl Marker {
    async fn run(self, mut rx: mpsc::Receiver<OutboxMark>) {
        let mut marks = Vec::with_capacity(self.batch);
        loop {
            if rx.recv_many(&mut marks, self.batch).await == 0 {
                // Every sender is gone and nothing is left.
                return;
            }
            let deadline = Instant::now() + self.delay;
            let mut open = true;
            while open && marks.len() < self.batch {
                let room = self.batch - marks.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut marks, room)).await {
                    Ok(0) => open = false,
                    Ok(_) => {}
                    Err(_elapsed) => break,
                }
            }
            self.flush(&mut marks).await;
            if !open {
                return;
            }
        }
    }

    /// Records `marks` (and empties it), trying a few times when the store fails.
    async fn flush(&self, marks: &mut Vec<OutboxMark>) {
        let retries = marks
            .iter()
            .any(|mark| matches!(mark, OutboxMark::Retry { .. }));
        let mut attempt = 1;
        loop {
            match self.store.outbox().record(marks, Utc::now()).await {
                Ok(changed) => {
                    tracing::debug!(marks = marks.len(), changed, "recorded delivery outcomes");
                    if retries {
                        self.notify.notify_one();
                    }
                    break;
                }
                Err(err) if attempt < FLUSH_ATTEMPTS => {
                    tracing::warn!(
                        error = %err,
                        marks = marks.len(),
                        attempt,
                        "could not record delivery outcomes; trying again"
                    );
                    attempt += 1;
                    tokio::time::sleep(FLUSH_ERROR_PAUSE).await;
                }
                Err(err) => {
                    tracing::warn!(
                        error = %err,
                        marks = marks.len(),
                        "could not record delivery outcomes; their rows are delivered again \
                         after their lease (same Idempotency-Key)"
                    );
                    break;
                }
            }
        }
        marks.clear();
    }
}
