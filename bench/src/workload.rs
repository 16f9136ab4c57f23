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

use crate::cli::WorkloadKind;
use crate::record::Recorder;

/// Entry event of the forwarding journey.
pub const EVENT_NAME: &str = "load_event";
/// Entry event of the forwarding-half journey.
pub const FORM_EVENT: &str = "form_submitted";
/// Entry event of the abandonment journey: one per session.
pub const CHECKOUT_EVENT: &str = "checkout_started";
/// The event a buying session sends after its checkout; takes the hold's `bought` branch.
pub const PURCHASE_EVENT: &str = "purchase_completed";

/// How long a refused event waits before its first resend; doubled for each further one.
pub const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait before a resend.
pub const MAX_RETRY_PAUSE: Duration = Duration::from_secs(2);

/// The wait before resend number `attempt` (1 for the first): exponential backoff.
pub fn backoff(attempt: u8) -> Duration {
    let doublings = u32::from(attempt.saturating_sub(1)).min(16);
    (RETRY_PAUSE * 2u32.pow(doublings)).min(MAX_RETRY_PAUSE)
}

/// What every event of a run looks like, by sequence number.
///
/// Forwarding workloads: event `seq` belongs to profile `seq % profiles`. Session workloads
/// (abandonment, burst): event `seq < events` is the checkout of session `seq`, event
/// `events + s` the purchase of session `s` (sent only if the session buys), and both belong
/// to profile `s % profiles`. Every event carries `run` and `seq` (as strings).
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short random id of this run: prefixes message ids and user ids, and is the journey's
    /// entry filter, so runs against a shared stack do not see each other's events.
    pub run: String,
    pub kind: WorkloadKind,
    pub profiles: u64,
    /// Events of the run (session workloads: checkouts; the purchases come on top).
    pub events: u64,
}

/// A property value of a generated event.
#[derive(Debug, Clone, PartialEq)]
enum Prop {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
}

impl Workload {
    pub fn new(kind: WorkloadKind, events: u64, profiles: u64) -> Workload {
        let mut run = uuid::Uuid::new_v4().simple().to_string();
        run.truncate(10);
        Workload {
            run,
            kind,
            profiles,
            events,
        }
    }

    /// Sequence numbers the run can use: the recorder keeps one slot for each.
    pub fn slots(&self) -> u64 {
        if self.kind.sessions() {
            self.events.saturating_mul(2)
        } else {
            self.events
        }
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

    /// The session of a purchase, or the event itself.
    fn index(&self, seq: u64) -> u64 {
        if self.kind.sessions() && seq >= self.events {
            seq - self.events
        } else {
            seq
        }
    }

    pub fn user_id(&self, seq: u64) -> String {
        format!("{}-user-{}", self.run, self.index(seq) % self.profiles)
    }

    /// Every other event in sending order, and every other event of each profile: true for
    /// exactly half of each profile's events when each has an even number of them.
    fn alternate(&self, index: u64) -> bool {
        (index % self.profiles + index / self.profiles).is_multiple_of(2)
    }

    /// Whether event `seq` passes the entry filter of a forwarding journey (forwarding-half:
    /// every other one, `matches: true`).
    pub fn forwarded(&self, seq: u64) -> bool {
        match self.kind {
            WorkloadKind::Forwarding => true,
            WorkloadKind::ForwardingHalf => self.alternate(seq),
            WorkloadKind::Abandonment | WorkloadKind::Burst => false,
        }
    }

    /// Whether session `session` sends a purchase after its checkout (half of them).
    pub fn buys(&self, session: u64) -> bool {
        self.alternate(session)
    }

    /// The sequence number of session `session`'s purchase.
    pub fn purchase_of(&self, session: u64) -> u64 {
        self.events + session
    }

    /// Event `seq`: its name and properties.
    fn event(&self, seq: u64) -> (&'static str, Vec<(&'static str, Prop)>) {
        let str = |s: &str| Prop::Str(s.to_owned());
        let mut props = vec![("run", str(&self.run)), ("seq", str(&seq.to_string()))];
        let name = match self.kind {
            WorkloadKind::Forwarding => {
                props.extend([
                    ("plan", str("pro")),
                    ("currency", str("EUR")),
                    ("amount", Prop::Num(42.5)),
                    ("items", Prop::Int(3)),
                ]);
                EVENT_NAME
            }
            WorkloadKind::ForwardingHalf => {
                props.extend([
                    ("matches", Prop::Bool(self.alternate(seq))),
                    ("form_id", str("newsletter")),
                    ("page", str("/pricing")),
                    ("plan", str("pro")),
                ]);
                FORM_EVENT
            }
            WorkloadKind::Abandonment | WorkloadKind::Burst => {
                let session = self.index(seq);
                props.push(("session_id", str(&format!("s{session}"))));
                if seq == session {
                    props.extend([("cart_value", Prop::Num(42.5)), ("items", Prop::Int(3))]);
                    CHECKOUT_EVENT
                } else {
                    props.push(("amount", Prop::Num(42.5)));
                    PURCHASE_EVENT
                }
            }
        };
        (name, props)
    }

    /// Event `seq` as the gRPC message.
    pub fn proto_event(&self, seq: u64) -> pb::Event {
        let (name, props) = self.event(seq);
        let fields: BTreeMap<String, prost_types::Value> = props
            .into_iter()
            .map(|(key, prop)| {
                let kind = match prop {
                    Prop::Str(s) => Kind::StringValue(s),
                    #[allow(clippy::cast_precision_loss, reason = "small literal counts")]
                    Prop::Int(n) => Kind::NumberValue(n as f64),
                    Prop::Num(n) => Kind::NumberValue(n),
                    Prop::Bool(b) => Kind::BoolValue(b),
                };
                (key.to_owned(), prost_types::Value { kind: Some(kind) })
            })
            .collect();
        pb::Event {
            r#type: pb::EventType::Track.into(),
            message_id: self.message_id(seq),
            user_id: self.user_id(seq),
            event: name.to_owned(),
            properties: Some(prost_types::Struct { fields }),
            ..pb::Event::default()
        }
    }

    /// Event `seq` as a Segment `track` call in JSON.
    pub fn json_event(&self, seq: u64) -> serde_json::Value {
        let (name, props) = self.event(seq);
        let properties: serde_json::Map<String, serde_json::Value> = props
            .into_iter()
            .map(|(key, prop)| {
                let value = match prop {
                    Prop::Str(s) => json!(s),
                    Prop::Int(n) => json!(n),
                    Prop::Num(n) => json!(n),
                    Prop::Bool(b) => json!(b),
                };
                (key.to_owned(), value)
            })
            .collect();
        json!({
            "type": "track",
            "event": name,
            "messageId": self.message_id(seq),
            "userId": self.user_id(seq),
            "properties": properties,
        })
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
        let w = Workload::new(WorkloadKind::Forwarding, 100, 10);
        assert_eq!(w.seq_of(&w.message_id(12_345)), Some(12_345));
        assert_eq!(w.seq_of("someone-else-12"), None);
        assert_eq!(w.seq_of("garbage"), None);
        assert_eq!(w.user_id(3), w.user_id(13));
        assert_ne!(w.user_id(3), w.user_id(4));
    }

    #[test]
    fn half_of_the_form_events_match_and_every_profile_has_both() {
        let w = Workload::new(WorkloadKind::ForwardingHalf, 20_000, 2_000);
        let matching: Vec<u64> = (0..20_000).filter(|&s| w.forwarded(s)).collect();
        assert_eq!(matching.len(), 10_000);
        assert!(
            w.forwarded(0) && !w.forwarded(1),
            "alternating in sending order"
        );
        for user in [0, 1, 1_999] {
            let of_user: Vec<bool> = (0..20_000)
                .filter(|s| s % 2_000 == user)
                .map(|s| w.forwarded(s))
                .collect();
            assert_eq!(of_user.iter().filter(|&&m| m).count(), 5, "user {user}");
        }
        let event = w.json_event(1);
        assert_eq!(event["event"], FORM_EVENT);
        assert_eq!(event["properties"]["matches"], false);
        let proto = w.proto_event(0);
        let matches = &proto.properties.unwrap().fields["matches"];
        assert_eq!(matches.kind, Some(Kind::BoolValue(true)));
    }

    #[test]
    fn half_of_the_sessions_buy_and_purchases_belong_to_their_session() {
        let burst = Workload::new(WorkloadKind::Burst, 300, 37);
        assert_eq!((0..300).filter(|&s| burst.buys(s)).count(), 150);
        let w = Workload::new(WorkloadKind::Abandonment, 10_000, 1_000);
        assert_eq!(w.slots(), 20_000);
        assert_eq!((0..10_000).filter(|&s| w.buys(s)).count(), 5_000);
        let purchase = w.purchase_of(1_234);
        assert_eq!(w.user_id(purchase), w.user_id(1_234));
        let checkout = w.json_event(1_234);
        let bought = w.json_event(purchase);
        assert_eq!(checkout["event"], CHECKOUT_EVENT);
        assert_eq!(bought["event"], PURCHASE_EVENT);
        assert_eq!(checkout["properties"]["session_id"], "s1234");
        assert_eq!(bought["properties"]["session_id"], "s1234");
        assert_eq!(w.seq_of(&w.message_id(purchase)), Some(purchase));
    }

    #[test]
    fn the_forwarding_event_keeps_its_properties() {
        let w = Workload::new(WorkloadKind::Forwarding, 10, 10);
        let event = w.json_event(7);
        assert_eq!(event["event"], EVENT_NAME);
        assert_eq!(event["properties"]["seq"], "7");
        assert_eq!(event["properties"]["items"], 3);
        assert_eq!(event["properties"]["amount"], 42.5);
        let proto = w.proto_event(7);
        assert_eq!(proto.properties.unwrap().fields.len(), 6);
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
