//! Work handed to a lane, and the per-item outcomes it sends back.
//!
//! One call (`submit`, `apply_timers`, a termination) is split by lane; each part travels as
//! one [`Job`] carrying the items' positions in the call, so the caller can put the answers
//! back in input order.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use journeys_core::machine::ExitReason;
use journeys_core::model::Event;
use journeys_store::TimerRecord;
use tokio::sync::oneshot;

use crate::ack::{Ack, AckStatus};
use crate::watermark::InFlight;

/// What happened to one timer handed to [`crate::Engine::apply_timers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerOutcome {
    pub timer_id: String,
    pub status: TimerStatus,
    /// When the engine answered for this timer: for a fired or discarded one, just after the
    /// commit of its lane's batch (one call's lanes commit at different times), which is when
    /// its effects (the sends it queued) exist.
    pub answered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerStatus {
    /// The instance took the timer; its transition committed and the timer row is gone.
    Fired,
    /// Deleted without effect: the instance is missing or finished, or waits on another
    /// timer (a stale one, e.g. a hold restarted or already resolved by an event).
    Discarded,
    /// Not applied and left in place (store unavailable, repeated conflicts, journey not
    /// loaded); the caller should let it be claimed again.
    Retry { code: String, message: String },
    /// Not applied: another node holds the timer's partition (or this one lost it). The
    /// caller should release its claim so the owner claims it.
    Elsewhere,
}

/// What an operator exit did to one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateOutcome {
    /// The instance was active and is now exited.
    Exited,
    /// The instance exists but had already finished.
    NotActive,
    /// No instance has this id.
    NotFound,
}

/// One item of a lane batch.
#[derive(Debug)]
pub(crate) enum Item {
    Event(Event),
    Timer(TimerRecord),
    Terminate {
        instance_id: String,
        reason: ExitReason,
    },
    /// `DeleteProfile` of the item's profile.
    Delete {
        suppress: bool,
    },
    /// An event that links the item's profile (its `anonymousId`, or an `alias`'s
    /// `previousId`) to the event's user: applied first by the owner of the linked id, which
    /// links it (or refuses) and hands the event on to the user's profile.
    Link(Event),
    /// An event of another profile handed on through this item's lane, after the items queued
    /// before it (it follows a [`Item::Link`] of the same call to its profile).
    Relay {
        to: String,
        event: Event,
    },
    /// Merge the pending linked profiles into the item's profile (sent by the owner of the
    /// linked id `from` with the link, ahead of the items it hands on).
    Merge {
        from: String,
    },
}

impl Item {
    /// The item as handed on to profile `to`'s lane. An event of another id is re-addressed
    /// to `to` ([`addressed_to`]).
    pub fn handed_on(&self, to: &str) -> Self {
        match self {
            Self::Event(event) | Self::Link(event) | Self::Relay { event, .. } => {
                Self::Event(addressed_to(event.clone(), to))
            }
            Self::Timer(timer) => Self::Timer(journeys_store::TimerRecord {
                profile_id: to.to_owned(),
                ..timer.clone()
            }),
            Self::Terminate {
                instance_id,
                reason,
            } => Self::Terminate {
                instance_id: instance_id.clone(),
                reason: reason.clone(),
            },
            Self::Delete { suppress } => Self::Delete {
                suppress: *suppress,
            },
            Self::Merge { from } => Self::Merge { from: from.clone() },
        }
    }

    /// Whether the item is an event (counted as one).
    pub fn is_event(&self) -> bool {
        matches!(self, Self::Event(_) | Self::Link(_) | Self::Relay { .. })
    }
}

/// `event` as applied to profile `to` (the profile its id is linked to): its `userId` becomes
/// `to`, so that what it starts is keyed to that profile; its `anonymousId` stays.
pub(crate) fn addressed_to(mut event: Event, to: &str) -> Event {
    if event.profile_id() != Some(to) {
        event.user_id = Some(to.to_owned());
    }
    event
}

/// The answer for one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ack(AckStatus),
    Timer(TimerStatus),
    Terminate(Result<TerminateOutcome, String>),
    /// A deletion applied (`Err`: "code: message" when it could not be committed).
    Delete(Result<(), String>),
    /// Merges applied, or nothing to merge (an internal item: nobody waits for its answer).
    Merged,
    /// The item belongs to profile `to` (a linked id's redirect, a link's user): the lane
    /// hands it on to `to`'s lane once its batch committed, preceded by an [`Item::Merge`]
    /// when `merge` (the batch linked the id).
    Forward {
        to: String,
        merge: bool,
    },
}

impl Outcome {
    /// A rejected event.
    pub fn rejected(code: &str, message: &str) -> Self {
        Self::Ack(AckStatus::Rejected {
            code: code.to_owned(),
            message: message.to_owned(),
        })
    }

    /// The outcome of an item that could not be committed, by failure code.
    pub fn failed(item: &Item, code: &str, message: &str) -> Self {
        match item {
            Item::Event(_) | Item::Link(_) | Item::Relay { .. } => Self::rejected(code, message),
            Item::Merge { .. } => Self::Merged,
            Item::Timer(_) => Self::Timer(TimerStatus::Retry {
                code: code.to_owned(),
                message: message.to_owned(),
            }),
            Item::Terminate { .. } => Self::Terminate(Err(format!("{code}: {message}"))),
            Item::Delete { .. } => Self::Delete(Err(format!("{code}: {message}"))),
        }
    }
}

/// One item of a call on its way to a lane: the profile's partition is computed once, where
/// the call is split by lane, and travels with it.
#[derive(Debug)]
pub(crate) struct Routed {
    /// Position in the call.
    pub position: usize,
    pub profile_id: String,
    pub partition: u32,
    pub item: Item,
    /// The item's partition-log sequence, when an owner read it from the NATS log: the
    /// commit that applies it records it as the partition's `log_seq`.
    pub seq: Option<u64>,
    /// How many times the item was handed on from one profile's lane to another's.
    pub hops: u8,
}

/// A part of one call, for one lane.
#[derive(Debug)]
pub(crate) struct Job {
    pub items: Vec<Routed>,
    pub reply: oneshot::Sender<Vec<(usize, Outcome)>>,
    /// W3C `traceparent` of the span the call was made in (the ingest request, the timer
    /// firing), when telemetry records one: the lane continues that trace.
    pub trace: Option<String>,
    /// Holds the call's receive time in the watermark until the lane answered (events only);
    /// only its `Drop` matters.
    #[allow(dead_code)]
    pub in_flight: Option<Arc<InFlight>>,
    /// For a job read from the partition log: the epoch its reader was started at. The lane
    /// applies it only while the partition is held at that epoch (a reader of an older
    /// tenure must not commit under a newer one, which has its own reader).
    pub epoch: Option<i64>,
}

/// A lane's mailbox message.
#[derive(Debug)]
pub(crate) enum LaneMessage {
    Work(Job),
    /// Drop these profiles from the owner's memory: something outside the lanes changed
    /// them in the store (audience memberships set by an operator).
    Forget(Vec<String>),
    /// Finish what is queued before this message, then stop.
    Stop,
}

/// Converts lane outcomes into acknowledgements, in input order; events a lane never answered
/// (the engine stopped) are rejected as `unavailable`.
pub(crate) fn acks_in_order(message_ids: Vec<String>, outcomes: Vec<Option<Outcome>>) -> Vec<Ack> {
    message_ids
        .into_iter()
        .zip(outcomes)
        .map(|(message_id, outcome)| match outcome {
            Some(Outcome::Ack(status)) => Ack { message_id, status },
            _ => Ack::rejected(
                message_id,
                crate::ack::UNAVAILABLE,
                "the engine is shutting down",
            ),
        })
        .collect()
}
