//! Handing a request's events to the [`EventSink`] and reading its acknowledgements: merging
//! edge refusals with the sink's acks in request order, and summarising them for HTTP.

use journeys_core::model::Event;
use journeys_engine::{Ack, AckStatus, EventSink, OVERLOADED};

use crate::error::EventError;

// The ack codes are the engine's ([`journeys_engine::ack`]); the edge uses the same ones
// (`INTERNAL` when the sink broke its contract and gave no ack for an event).
pub use journeys_engine::{INTERNAL, RATE_LIMITED, UNAVAILABLE};

/// One event of a request: valid, or refused at the edge (with the message id as sent, maybe
/// empty, to acknowledge it by).
pub(crate) type Item = Result<Event, (String, EventError)>;

/// Submits the valid events of `items` to `sink` in one call and returns one ack per item, in
/// order: the sink's for valid events, `REJECTED` with the edge's reason for the others.
pub(crate) async fn submit_items<S: EventSink>(sink: &S, items: Vec<Item>) -> Vec<Ack> {
    let mut slots = Vec::with_capacity(items.len());
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Ok(event) => {
                slots.push(None);
                events.push(event);
            }
            Err((message_id, error)) => slots.push(Some(Ack::rejected(
                message_id,
                error.code.as_str(),
                error.message(),
            ))),
        }
    }
    let mut acks = submit(sink, events).await.into_iter();
    slots
        .into_iter()
        .map(|slot| match slot {
            Some(refused) => refused,
            // `submit` returns exactly one ack per event.
            None => acks
                .next()
                .unwrap_or_else(|| Ack::rejected("", INTERNAL, "internal error")),
        })
        .collect()
}

/// `sink.submit(events)`, holding the sink to its contract of one ack per event: missing acks
/// become `REJECTED internal`, extra ones are dropped (both logged).
pub(crate) async fn submit<S: EventSink>(sink: &S, events: Vec<Event>) -> Vec<Ack> {
    if events.is_empty() {
        return Vec::new();
    }
    let ids: Vec<String> = events.iter().map(|e| e.message_id.clone()).collect();
    let mut acks = sink.submit(events).await;
    if acks.len() != ids.len() {
        tracing::error!(
            events = ids.len(),
            acks = acks.len(),
            "the event sink returned the wrong number of acks"
        );
        acks.truncate(ids.len());
        for id in &ids[acks.len()..] {
            acks.push(Ack::rejected(id.clone(), INTERNAL, "internal error"));
        }
    }
    acks
}

/// What a whole HTTP request amounts to, given its events' acks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every event accepted or a duplicate.
    Stored,
    /// At least one event rate limited (takes precedence: the client should back off).
    RateLimited(String),
    /// At least one event could not be taken for now.
    Unavailable(String),
    /// The engine failed unexpectedly on some event.
    Internal,
    /// Some event refused because too many events are in flight; resend shortly.
    Overloaded(String),
    /// Some event refused for good (e.g. a per-profile limit); resending will not help.
    Refused { code: String, message: String },
}

pub(crate) fn outcome(acks: &[Ack]) -> Outcome {
    let rejected: Vec<(usize, &str, &str)> = acks
        .iter()
        .enumerate()
        .filter_map(|(i, ack)| match &ack.status {
            AckStatus::Rejected { code, message } => Some((i, code.as_str(), message.as_str())),
            AckStatus::Accepted | AckStatus::Duplicate => None,
        })
        .collect();
    if rejected.is_empty() {
        return Outcome::Stored;
    }
    let count = |wanted: &str| rejected.iter().filter(|(_, c, _)| *c == wanted).count();
    let total = acks.len();
    let limited = count(RATE_LIMITED);
    if limited > 0 {
        return Outcome::RateLimited(format!(
            "{limited} of {total} events were rate limited; resend the request later \
             (events already accepted are deduplicated by messageId)"
        ));
    }
    let overloaded = count(OVERLOADED);
    if overloaded > 0 {
        return Outcome::Overloaded(format!(
            "{overloaded} of {total} events were refused because the server is busy; resend the \
             request shortly (events already accepted are deduplicated by messageId)"
        ));
    }
    let unavailable = count(UNAVAILABLE);
    if unavailable > 0 {
        return Outcome::Unavailable(format!(
            "{unavailable} of {total} events could not be stored right now; resend the request \
             later (events already accepted are deduplicated by messageId)"
        ));
    }
    if count(INTERNAL) > 0 {
        return Outcome::Internal;
    }
    let (index, code, message) = rejected[0];
    let message = if total == 1 {
        message.to_owned()
    } else {
        format!(
            "{} of {total} events were refused; the first, batch[{index}]: {message}",
            rejected.len()
        )
    };
    Outcome::Refused {
        code: code.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_win_over_other_refusals() {
        let acks = [
            Ack::accepted("a"),
            Ack::rejected("b", "too_many_instances", "x"),
            Ack::rejected("c", UNAVAILABLE, "y"),
            Ack::rejected("d", RATE_LIMITED, "z"),
        ];
        assert!(matches!(outcome(&acks), Outcome::RateLimited(_)));
        assert!(matches!(outcome(&acks[..3]), Outcome::Unavailable(_)));
        let overloaded = [Ack::accepted("a"), Ack::rejected("b", OVERLOADED, "busy")];
        assert!(matches!(outcome(&overloaded), Outcome::Overloaded(_)));
        assert_eq!(
            outcome(&acks[..2]),
            Outcome::Refused {
                code: "too_many_instances".into(),
                message: "1 of 2 events were refused; the first, batch[1]: x".into()
            }
        );
        let duplicate = Ack {
            message_id: "e".into(),
            status: AckStatus::Duplicate,
        };
        assert_eq!(outcome(&[acks[0].clone(), duplicate]), Outcome::Stored);
    }
}
