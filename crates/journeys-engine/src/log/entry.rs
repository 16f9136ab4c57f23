//! What travels on the log: the entries fronts publish, and the commit notices owners announce.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use journeys_core::machine::ExitReason;
use journeys_core::model::Event;
use journeys_store::TimerRecord;
use serde::{Deserialize, Serialize};

use crate::ack::AckStatus;
use crate::job::{Outcome, TerminateOutcome, TimerStatus};

/// One entry of a partition.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    /// An event a front received and validated.
    Event(Event),
    /// An operator exit (`ExitInstance`, archiving in exit mode) of one of the partition's
    /// instances.
    Terminate {
        profile_id: String,
        instance_id: String,
        reason: ExitReason,
    },
    /// A due timer a scheduler claimed: applied by the owner in log order, after every event
    /// published into the partition before it.
    Timer(TimerEntry),
    /// Profiles changed outside the owners (audience members set by an operator): the owner
    /// drops them from memory, so what it applies next reads them from the store.
    Forget { profile_ids: Vec<String> },
    /// `DeleteProfile`: applied by the owner after every event published into the partition
    /// before it.
    Delete { profile_id: String, suppress: bool },
    /// An event linking an id (its `anonymousId`, or an `alias`'s `previousId`) to its user,
    /// published into the id's partition: the id's owner links it and hands the event on to
    /// the user's partition.
    Link(Event),
    /// An event of profile `to` published into the partition of `via`, a linked id whose
    /// linking event the same call published before it: the id's owner hands it on after that
    /// one, so the user's events stay in order.
    Relay {
        via: String,
        to: String,
        event: Event,
    },
    /// Merge the linked profiles waiting for `profile_id` (published by the owner of a linked
    /// id, ahead of what it hands on).
    Merge { profile_id: String, from: String },
}

/// A timer on the log (the store's [`TimerRecord`]).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TimerEntry {
    pub id: String,
    pub instance_id: String,
    pub profile_id: String,
    pub journey_id: String,
    pub due_at: DateTime<Utc>,
    pub kind: String,
    pub step_key: String,
}

impl From<&TimerRecord> for TimerEntry {
    fn from(t: &TimerRecord) -> Self {
        Self {
            id: t.id.clone(),
            instance_id: t.instance_id.clone(),
            profile_id: t.profile_id.clone(),
            journey_id: t.journey_id.clone(),
            due_at: t.due_at,
            kind: t.kind.clone(),
            step_key: t.step_key.clone(),
        }
    }
}

impl From<TimerEntry> for TimerRecord {
    fn from(t: TimerEntry) -> Self {
        Self {
            id: t.id,
            instance_id: t.instance_id,
            profile_id: t.profile_id,
            journey_id: t.journey_id,
            due_at: t.due_at,
            kind: t.kind,
            step_key: t.step_key,
        }
    }
}

impl Entry {
    pub fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// An owner's announcement that it committed its partition up to `seq`: every entry of the
/// partition at or below it is applied. Entries not answered `accepted` are listed with their
/// outcome; the rest were accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Notice {
    pub epoch: i64,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outcomes: Vec<(u64, Answer)>,
}

/// The outcome of an entry that was not simply accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Answer {
    Duplicate,
    Rejected {
        code: String,
        message: String,
    },
    /// An operator exit that found nothing to end (`exited` is the accepted outcome).
    Terminated(TerminateOutcome),
    /// A timer deleted without effect (`fired` is the accepted outcome).
    Discarded,
}

impl Answer {
    /// The answer of a status, `None` for accepted.
    pub fn of(status: &AckStatus) -> Option<Self> {
        match status {
            AckStatus::Accepted => None,
            AckStatus::Duplicate => Some(Self::Duplicate),
            AckStatus::Rejected { code, message } => Some(Self::Rejected {
                code: code.clone(),
                message: message.clone(),
            }),
        }
    }

    /// What a lane's outcome announces: `Ok(None)` accepted, `Ok(Some(answer))` settled
    /// otherwise, `Err(code)` not applied (the entry is read again).
    pub fn settle(outcome: Option<Outcome>) -> Result<Option<Self>, String> {
        let retryable = |code: &str| {
            code == crate::ack::UNAVAILABLE
                || code == crate::ack::INTERNAL
                || code == crate::ack::LINK_PENDING
        };
        match outcome {
            Some(Outcome::Ack(AckStatus::Rejected { code, .. })) if retryable(&code) => Err(code),
            Some(Outcome::Ack(status)) => Ok(Self::of(&status)),
            Some(
                Outcome::Terminate(Ok(TerminateOutcome::Exited))
                | Outcome::Timer(TimerStatus::Fired)
                | Outcome::Delete(Ok(()))
                | Outcome::Merged,
            ) => Ok(None),
            Some(Outcome::Terminate(Ok(other))) => Ok(Some(Self::Terminated(other))),
            Some(Outcome::Terminate(Err(failure)) | Outcome::Delete(Err(failure))) => Err(failure
                .split(':')
                .next()
                .unwrap_or(crate::ack::UNAVAILABLE)
                .to_owned()),
            Some(Outcome::Timer(TimerStatus::Discarded)) => Ok(Some(Self::Discarded)),
            Some(Outcome::Timer(TimerStatus::Retry { code, .. })) => Err(code),
            // Owners reading the log hand nothing on (identity links are not made there).
            Some(Outcome::Timer(TimerStatus::Elsewhere) | Outcome::Forward { .. }) | None => {
                Err(crate::ack::UNAVAILABLE.to_owned())
            }
        }
    }

    /// The acknowledgement of an event with this answer (`None`: accepted).
    pub fn status(answer: Option<Self>) -> AckStatus {
        match answer {
            Some(Self::Duplicate) => AckStatus::Duplicate,
            Some(Self::Rejected { code, message }) => AckStatus::Rejected { code, message },
            None | Some(Self::Terminated(_) | Self::Discarded) => AckStatus::Accepted,
        }
    }
}

impl Notice {
    pub fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_list_only_what_was_not_accepted() {
        let notice = Notice {
            epoch: 3,
            seq: 42,
            outcomes: vec![
                (40, Answer::Duplicate),
                (
                    41,
                    Answer::Rejected {
                        code: "rate_limited".into(),
                        message: "slow down".into(),
                    },
                ),
            ],
        };
        let bytes = notice.encode().unwrap();
        assert_eq!(Notice::decode(&bytes).unwrap(), notice);
        assert_eq!(Answer::of(&AckStatus::Accepted), None);
        let empty = Notice {
            epoch: 1,
            seq: 7,
            outcomes: Vec::new(),
        };
        assert_eq!(
            std::str::from_utf8(&empty.encode().unwrap()).unwrap(),
            r#"{"epoch":1,"seq":7}"#
        );
    }
}
