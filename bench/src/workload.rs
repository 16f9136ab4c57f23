//! The events of a run and the producer that hands them to a transport in batches, at full
//! speed or paced to a target rate, with refused events fed back in for a resend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use journeys_proto::v1 as pb;
use prost_types::value::Kind;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::record::Recorder;

/// Entry event of the forwarding journey.
pub const EVENT_NAME: &str = "load_event";

/// How long a refused event waits before its first resend; doubled for each further one.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait before a resend.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The wait before resend number `attempt` (1 for the first): exponential backoff.
pub fn backoff(attempt: u8) -> Duration {
    let doublings = u32::from(attempt.saturating_sub(1)).min(16);
    (RETRY_PAUSE * 2u32.pow(doublings)).min(MAX_RETRY_PAUSE)
}

/// What every event of a run looks like. Event `seq` belongs to profile `seq % profiles` and
/// carries `run` and `seq` (as strings) among a few ordinary properties.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short random id of this run: prefixes message ids and user ids, and is the journey's
    /// entry filter, so runs against a shared stack do not see each other's events.
    pub run: String,
    pub profiles: u64,
}

impl Workload {
    pub fn new(profiles: u64) -> Workload {
        let mut run = uuid::Uuid::new_v4().simple().to_string();
        run.truncate(10);
        Workload { run, profiles }
    }

    pub fn message_id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.run)
    }

    /// The sequence number in one of this run's message ids.
    pub fn seq_of(&self, message_id: &str) -> Option<u64> {
        let (run, seq) = message_id.rsplit_once('-')?;
        if run != self.run {
            return None;
        }
        seq.parse().ok()
    }

    pub fn user_id(&self, seq: u64) -> String {
        format!("{}-user-{}", self.run, seq % self.profiles)
    }

    /// Event `seq` as the gRPC message.
    pub fn proto_event(&self, seq: u64) -> pb::Event {
        let mut fields = BTreeMap::new();
        fields.insert("run".to_owned(), string(&self.run));
        fields.insert("seq".to_owned(), string(&seq.to_string()));
        fields.insert("plan".to_owned(), string("pro"));
        fields.insert("currency".to_owned(), string("EUR"));
        fields.insert("amount".to_owned(), number(42.5));
        fields.insert("items".to_owned(), number(3.0));
        pb::Event {
            r#type: pb::EventType::Track.into(),
            message_id: self.message_id(seq),
            user_id: self.user_id(seq),
            event: EVENT_NAME.to_owned(),
            properties: Some(prost_types::Struct { fields }),
            ..pb::Event::default()
        }
    }

    /// Event `seq` as a Segment `track` call in JSON.
    pub fn json_event(&self, seq: u64) -> serde_json::Value {
        json!({
            "type": "track",
            "event": EVENT_NAME,
            "messageId": self.message_id(seq),
            "userId": self.user_id(seq),
            "properties": {
                "run": self.run,
                "seq": seq.to_string(),
                "plan": "pro",
                "currency": "EUR",
                "amount": 42.5,
                "items": 3,
            },
        })
    }
}

fn string(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

/// Events for one request.
#[derive(Debug)]
pub struct Batch {
    pub seqs: Vec<u64>,
    /// Stamp of the time the batch was due at the target rate; `None` at full speed (the
    /// transport then stamps the moment it sends).
    pub due: Option<u64>,
}

/// Events to send again, not before `not_before`.
#[derive(Debug)]
pub struct Resend {
    pub seqs: Vec<u64>,
    pub not_before: Instant,
}

/// How the producer paces.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub events: u64,
    pub batch: u64,
    /// Events per second; `None` for full speed.
    pub rate: Option<f64>,
}

impl Pace {
    /// When the batch starting at event `first` is due, counted from the start of the run.
    pub fn due_after(&self, first: u64) -> Option<Duration> {
        #[allow(clippy::cast_precision_loss, reason = "event counts far below 2^52")]
        self.rate
            .map(|rate| Duration::from_secs_f64(first as f64 / rate))
    }
}

/// Hands every event to `out` in batches, resends from `resends` first, and returns once every
/// event has a final answer (then dropping `out` tells the transport to finish).
pub async fn produce(
    pace: Pace,
    recorder: Arc<Recorder>,
    mut resends: mpsc::UnboundedReceiver<Resend>,
    out: mpsc::Sender<Batch>,
) {
    let start = Instant::now();
    let mut next = 0;
    loop {
        while let Ok(resend) = resends.try_recv() {
            tokio::time::sleep_until(resend.not_before).await;
            if out
                .send(Batch {
                    seqs: resend.seqs,
                    due: None,
                })
                .await
                .is_err()
            {
                return;
            }
        }
        if next < pace.events {
            let end = (next + pace.batch).min(pace.events);
            let due = pace.due_after(next).map(|after| {
                let at = start + after;
                (at, recorder.stamp(at.into_std()))
            });
            if let Some((at, _)) = due {
                tokio::time::sleep_until(at).await;
            }
            recorder.handed_out(end - next);
            let batch = Batch {
                seqs: (next..end).collect(),
                due: due.map(|(_, stamp)| stamp),
            };
            if out.send(batch).await.is_err() {
                return;
            }
            next = end;
        } else if recorder.outstanding() == 0 {
            return;
        } else {
            tokio::select! {
                resend = resends.recv() => match resend {
                    Some(resend) => {
                        tokio::time::sleep_until(resend.not_before).await;
                        if out.send(Batch { seqs: resend.seqs, due: None }).await.is_err() {
                            return;
                        }
                    }
                    // Every transport is gone: nothing can answer the rest.
                    None => return,
                },
                () = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_round_trip_and_foreign_ids_are_ignored() {
        let w = Workload::new(10);
        assert_eq!(w.seq_of(&w.message_id(12_345)), Some(12_345));
        assert_eq!(w.seq_of("someone-else-12"), None);
        assert_eq!(w.seq_of("garbage"), None);
        assert_eq!(w.user_id(3), w.user_id(13));
        assert_ne!(w.user_id(3), w.user_id(4));
    }

    #[test]
    fn resends_back_off_exponentially_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(4), Duration::from_millis(400));
        assert_eq!(backoff(200), MAX_RETRY_PAUSE);
    }

    #[test]
    fn pacing_spreads_batches_over_time() {
        let pace = Pace {
            events: 1000,
            batch: 100,
            rate: Some(500.0),
        };
        assert_eq!(pace.due_after(0), Some(Duration::ZERO));
        assert_eq!(pace.due_after(500), Some(Duration::from_secs(1)));
        let full = Pace { rate: None, ..pace };
        assert_eq!(full.due_after(500), None);
    }

    #[tokio::test]
    async fn producer_covers_every_event_once_then_waits_for_answers() {
        let recorder = Arc::new(Recorder::new(250, 0));
        let (_resend_tx, resends) = mpsc::unbounded_channel();
        let (out, mut batches) = mpsc::channel(100);
        let pace = Pace {
            events: 250,
            batch: 100,
            rate: None,
        };
        let task = tokio::spawn(produce(pace, Arc::clone(&recorder), resends, out));
        let mut seen = Vec::new();
        for _ in 0..3 {
            let batch = batches.recv().await.unwrap();
            seen.extend(batch.seqs);
        }
        assert_eq!(seen, (0..250).collect::<Vec<_>>());
        assert!(!task.is_finished());
        for seq in 0..250 {
            recorder.answer(seq, &crate::record::Answer::Accepted, 1);
        }
        task.await.unwrap();
        assert!(batches.recv().await.is_none());
    }
}
