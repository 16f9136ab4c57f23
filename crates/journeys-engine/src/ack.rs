//! What ingestion front ends and the engine agree on: events in, one acknowledgement out per
//! event, after commit.

use std::future::Future;

use journeys_core::model::Event;

/// Ack code of rate-limited events (per-profile events per second): slow down and resend.
pub const RATE_LIMITED: &str = "rate_limited";
/// Ack code of events that could not be stored right now (store down, shutting down):
/// resend later.
pub const UNAVAILABLE: &str = "unavailable";
/// Ack code of events lost to a bug (a change that could not be written, a missing ack).
pub const INTERNAL: &str = "internal";
/// A merge read before the link that sent it is committed (on a log, the linking owner
/// publishes the merge first): not a fault of the entry, so it is read again for longer than
/// an `internal` failure before it is skipped ([`crate::log`]'s pump).
pub const LINK_PENDING: &str = "link_pending";
/// Ack code of events refused because the engine has too many events in flight. Retryable:
/// the fronts answer HTTP 503 with `Retry-After`, and clients resend after a pause.
pub const OVERLOADED: &str = "overloaded";

/// Ack code of an `identify` refused because it would grow the profile's traits past their
/// limits (count or size). Final: the same traits are refused again.
pub const TRAITS_LIMIT: &str = "traits_limit";

/// Ack code of an event refused because it would start an instance while its profile has the
/// maximum of active instances. Final for automatic retries (instances may wait for days); the
/// same event sent once some of the profile's instances have ended is applied.
pub const TOO_MANY_INSTANCES: &str = "too_many_instances";

/// The outcome for one event, sent to the client only once it is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub message_id: String,
    pub status: AckStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// Stored, and its effects (instances, timers, sends) committed.
    Accepted,
    /// A `messageId` seen within the dedupe window: acknowledged and ignored.
    Duplicate,
    /// Not stored. `code` is stable and machine-readable (`rate_limited`,
    /// `too_many_instances`, `unavailable`, `overloaded`, `invalid`…); `message` is for people.
    Rejected { code: String, message: String },
}

impl Ack {
    pub fn accepted(message_id: impl Into<String>) -> Self {
        Self {
            message_id: message_id.into(),
            status: AckStatus::Accepted,
        }
    }

    pub fn rejected(
        message_id: impl Into<String>,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            message_id: message_id.into(),
            status: AckStatus::Rejected {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

/// Where validated events go. Returns exactly one [`Ack`] per event, in input order, each
/// only after the event's effects are durably committed (or it was rejected).
pub trait EventSink: Clone + Send + Sync + 'static {
    fn submit(&self, events: Vec<Event>) -> impl Future<Output = Vec<Ack>> + Send;
}
