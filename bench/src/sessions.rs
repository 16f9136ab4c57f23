//! The producer of the session workloads (abandonment, burst): every checkout, in batches at
//! the target rate (or at once), and for each batch, `purchase_after` after it went out, the
//! purchases of its buying sessions. A purchase waits for its checkout's acknowledgement (it
//! is dropped if the checkout was refused), so it never overtakes the checkout.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::record::{Recorder, Status};
use crate::workload::{Batch, Pace, Resend, Workload};

/// How often a purchase whose checkout is not answered yet looks again.
const RECHECK: Duration = Duration::from_millis(10);
/// Longest sleep while waiting for answers, so the end of the run is seen promptly.
const IDLE: Duration = Duration::from_millis(5);

/// Work queued for later: purchases of sessions, or refused events to send again.
#[derive(Debug)]
enum Queued {
    Purchases(Vec<u64>),
    Resend(Vec<u64>),
}

/// The state of one run's producer.
struct Producer {
    pace: Pace,
    purchase_after: Duration,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    out: mpsc::Sender<Batch>,
    start: Instant,
    /// The next checkout (session) to send.
    next: u64,
    /// Queued work by (due, tie-breaker).
    later: BTreeMap<(Instant, u64), Queued>,
    ties: u64,
}

/// Hands every checkout and purchase to `out`, resends from `resends`, and returns once every
/// event has a final answer (dropping `out` then tells the transport to finish).
pub async fn produce(
    pace: Pace,
    purchase_after: Duration,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    mut resends: mpsc::UnboundedReceiver<Resend>,
    out: mpsc::Sender<Batch>,
) {
    let mut producer = Producer {
        pace,
        purchase_after,
        workload,
        recorder,
        out,
        start: Instant::now(),
        next: 0,
        later: BTreeMap::new(),
        ties: 0,
    };
    loop {
        while let Ok(resend) = resends.try_recv() {
            producer.queue(resend.not_before, Queued::Resend(resend.seqs));
        }
        match producer.step().await {
            Step::Sent => {}
            Step::Closed | Step::Finished => return,
            Step::Wait(until) => {
                tokio::select! {
                    resend = resends.recv() => match resend {
                        Some(resend) => {
                            producer.queue(resend.not_before, Queued::Resend(resend.seqs));
                        }
                        // Every transport is gone: nothing can answer the rest.
                        None => return,
                    },
                    () = tokio::time::sleep_until(until) => {}
                }
            }
        }
    }
}

/// What one look at the schedule did.
enum Step {
    /// Handed something to the transport (or dropped it); look again at once.
    Sent,
    /// Nothing due before this instant.
    Wait(Instant),
    /// The transport is gone.
    Closed,
    /// Every checkout and purchase went out and every event has its final answer.
    Finished,
}

impl Producer {
    fn queue(&mut self, at: Instant, queued: Queued) {
        self.ties += 1;
        self.later.insert((at, self.ties), queued);
    }

    /// When the next checkout batch is due, if one is left.
    fn checkout_due(&self) -> Option<Instant> {
        (self.next < self.pace.events)
            .then(|| self.start + self.pace.due_after(self.next).unwrap_or_default())
    }

    /// Sends what is due (queued work first), or says how long to wait.
    async fn step(&mut self) -> Step {
        let now = Instant::now();
        if let Some(entry) = self.later.first_entry()
            && entry.key().0 <= now
        {
            let sent = match entry.remove() {
                Queued::Resend(seqs) => self.send(seqs, None).await,
                Queued::Purchases(sessions) => self.purchases(sessions, now).await,
            };
            return if sent { Step::Sent } else { Step::Closed };
        }
        let checkout_due = self.checkout_due();
        if let Some(due) = checkout_due
            && due <= now
        {
            return if self.checkouts(due).await {
                Step::Sent
            } else {
                Step::Closed
            };
        }
        if checkout_due.is_none() && self.later.is_empty() && self.recorder.outstanding() == 0 {
            return Step::Finished;
        }
        let mut until = now + IDLE;
        if let Some(due) = checkout_due {
            until = until.min(due);
        }
        if let Some(((due, _), _)) = self.later.first_key_value() {
            until = until.min(*due);
        }
        Step::Wait(until)
    }

    /// Sends the next checkout batch, due at `due`, and queues its purchases.
    async fn checkouts(&mut self, due: Instant) -> bool {
        let end = (self.next + self.pace.batch).min(self.pace.events);
        let stamp = self
            .pace
            .rate
            .is_some()
            .then(|| self.recorder.stamp(due.into_std()));
        self.recorder.handed_out(end - self.next);
        let sessions: Vec<u64> = (self.next..end).collect();
        let buyers: Vec<u64> = sessions
            .iter()
            .copied()
            .filter(|&s| self.workload.buys(s))
            .collect();
        self.next = end;
        if !self.send(sessions, stamp).await {
            return false;
        }
        if !buyers.is_empty() {
            let at = Instant::now() + self.purchase_after;
            self.queue(at, Queued::Purchases(buyers));
        }
        true
    }

    /// Sends the purchases of `sessions` whose checkout was accepted, looks again later at
    /// those still unanswered, and drops those whose checkout was refused.
    async fn purchases(&mut self, sessions: Vec<u64>, now: Instant) -> bool {
        let mut ready = Vec::new();
        let mut unanswered = Vec::new();
        for session in sessions {
            match self.recorder.status(session) {
                Status::Accepted { .. } => ready.push(self.workload.purchase_of(session)),
                Status::Pending => unanswered.push(session),
                Status::Rejected => {}
            }
        }
        if !unanswered.is_empty() {
            self.queue(now + RECHECK, Queued::Purchases(unanswered));
        }
        if ready.is_empty() {
            return true;
        }
        self.recorder.handed_out(ready.len() as u64);
        self.send(ready, None).await
    }

    /// Hands `seqs` to the transport; false once it is gone.
    async fn send(&self, seqs: Vec<u64>, due: Option<u64>) -> bool {
        self.out.send(Batch { seqs, due }).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::WorkloadKind;
    use crate::record::Answer;

    /// Answers every batch at once, accepting all but `refuse`; returns the batches seen.
    async fn answer_all(
        recorder: Arc<Recorder>,
        mut batches: mpsc::Receiver<Batch>,
        refuse: u64,
    ) -> Vec<(Instant, Vec<u64>)> {
        let mut seen = Vec::new();
        while let Some(batch) = batches.recv().await {
            for &seq in &batch.seqs {
                let answer = if seq == refuse {
                    Answer::Rejected {
                        code: "invalid".into(),
                    }
                } else {
                    Answer::Accepted
                };
                recorder.answer(seq, &answer, recorder.now());
            }
            seen.push((Instant::now(), batch.seqs));
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn each_buying_session_purchases_once_after_its_checkout() {
        let workload = Arc::new(Workload::new(WorkloadKind::Abandonment, 40, 4));
        let recorder = Arc::new(Recorder::new(workload.slots(), 0));
        let (_resend_tx, resends) = mpsc::unbounded_channel();
        let (out, batches) = mpsc::channel(4);
        let pace = Pace {
            events: 40,
            batch: 10,
            rate: Some(100.0),
        };
        let start = Instant::now();
        let producer = tokio::spawn(produce(
            pace,
            Duration::from_secs(1),
            Arc::clone(&workload),
            Arc::clone(&recorder),
            resends,
            out,
        ));
        // Session 0 buys, but its checkout is refused: no purchase for it.
        let seen = answer_all(Arc::clone(&recorder), batches, 0).await;
        producer.await.unwrap();
        let checkouts: Vec<u64> = seen
            .iter()
            .flat_map(|(_, s)| s.clone())
            .filter(|&s| s < 40)
            .collect();
        assert_eq!(checkouts, (0..40).collect::<Vec<_>>());
        let mut purchases = Vec::new();
        for (at, seqs) in &seen {
            for &seq in seqs.iter().filter(|&&s| s >= 40) {
                let session = seq - 40;
                // Checkout batch of `session` was due at session / 100 s.
                let due = start + Duration::from_millis(session / 10 * 100);
                assert!(
                    *at >= due + Duration::from_secs(1),
                    "purchase {seq} too early"
                );
                purchases.push(session);
            }
        }
        purchases.sort_unstable();
        let buyers: Vec<u64> = (1..40).filter(|&s| workload.buys(s)).collect();
        assert_eq!(purchases, buyers);
        assert_eq!(
            buyers.len(),
            19,
            "half of the 40 sessions buy; session 0 was refused"
        );
    }
}
