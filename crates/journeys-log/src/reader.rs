//! [`Reader`]: one partition's entries in order, from an ordered consumer that is opened again
//! from the next sequence whenever it fails.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::{
    Ordered, OrderedConfig, OrderedError, OrderedErrorKind,
};
use async_nats::jetstream::stream::{self, ConsumerErrorKind};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};

use crate::error::LogError;

/// First wait before opening a failed reader again; doubles per failed attempt.
const REOPEN_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest wait between two attempts while NATS stays away.
const REOPEN_MAX_DELAY: Duration = Duration::from_secs(5);

/// One entry of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream sequence: what an owner commits as its progress (`last_seq`).
    pub seq: u64,
    /// The deduplication id it was published with (empty for an entry published by something
    /// other than this crate without one).
    pub msg_id: String,
    /// The bytes that were published.
    pub payload: Bytes,
}

/// A partition's entries in stream order, from the requested sequence on. Never ends by
/// itself: it waits for new entries.
///
/// An `Err` item (NATS went away, the server lost the consumer) does not end it: the reader
/// opens its consumer again from the sequence after the last entry it yielded, waiting longer
/// between failed attempts (up to 5 s), and goes on. Dropping it deletes its consumers on the
/// server in the background.
pub struct Reader {
    state: State,
    /// Lowest sequence still to yield. Guards the promise of strictly increasing sequences
    /// from the start on: a consumer recreated before it delivered anything starts over from
    /// the partition's first entry.
    next_seq: u64,
    /// Consecutive failed attempts, for the wait before the next one.
    failures: u32,
    /// What opening the consumer again needs.
    stream: stream::Stream<()>,
    partition: u32,
    subject: String,
    /// Every consumer of this reader is named `<name>` or `<name>_<suffix>`, so dropping the
    /// reader can find them all (the ordered consumer names its recreations `<name>_<n>`).
    name: String,
    /// Openings so far, for the next consumer's name.
    opened: u32,
}

enum State {
    // Boxed: an ordered consumer is large, and a reader moves between the two states.
    Reading(Box<Ordered>),
    Opening(BoxFuture<'static, Result<Ordered, LogError>>),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("subject", &self.subject)
            .field("consumer", &self.name)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens a reader of `partition` (subject `subject`) of the stream `stream_name` from
    /// `from_seq` on.
    pub(crate) async fn open(
        stream: stream::Stream<()>,
        stream_name: &str,
        partition: u32,
        subject: String,
        from_seq: u64,
    ) -> Result<Self, LogError> {
        let name = format!(
            "{stream_name}_rd{partition}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let messages = consume(
            stream.clone(),
            partition,
            subject.clone(),
            name.clone(),
            from_seq,
        )
        .await?;
        Ok(Self {
            state: State::Reading(Box::new(messages)),
            next_seq: from_seq,
            failures: 0,
            stream,
            partition,
            subject,
            name,
            opened: 0,
        })
    }

    /// Starts opening the consumer again from `next_seq`, after a wait that grows with the
    /// failures, first deleting what is left of the previous consumers.
    fn reopen(&mut self) {
        let delay = REOPEN_FIRST_DELAY
            .saturating_mul(1 << self.failures.min(6))
            .min(REOPEN_MAX_DELAY);
        self.failures = self.failures.saturating_add(1);
        self.opened += 1;
        let (stream, partition, subject, base) = (
            self.stream.clone(),
            self.partition,
            self.subject.clone(),
            self.name.clone(),
        );
        let name = format!("{base}_r{}", self.opened);
        let from_seq = self.next_seq;
        self.state = State::Opening(
            async move {
                tokio::time::sleep(delay).await;
                delete_consumers(&stream, &base).await?;
                consume(stream, partition, subject, name, from_seq).await
            }
            .boxed(),
        );
    }
}

impl Stream for Reader {
    type Item = Result<Entry, LogError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let message = match &mut self.state {
                State::Opening(opening) => match opening.poll_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(messages)) => {
                        self.state = State::Reading(Box::new(messages));
                        continue;
                    }
                    Poll::Ready(Err(err)) => {
                        self.reopen();
                        return Poll::Ready(Some(Err(err)));
                    }
                },
                State::Reading(messages) => match messages.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(message))) => message,
                    // Neither a failed nor an ended consumer ends the reader.
                    Poll::Ready(Some(Err(err))) => {
                        self.reopen();
                        return Poll::Ready(Some(Err(read_error(&err))));
                    }
                    Poll::Ready(None) => {
                        self.reopen();
                        continue;
                    }
                },
            };
            let seq = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(err) => {
                    return Poll::Ready(Some(Err(LogError::Internal(format!(
                        "an entry of {} without its sequence: {err}",
                        self.subject
                    )))));
                }
            };
            self.failures = 0;
            if seq < self.next_seq {
                continue;
            }
            self.next_seq = seq + 1;
            let message = message.message;
            let msg_id = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(NATS_MESSAGE_ID))
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default();
            return Poll::Ready(Some(Ok(Entry {
                seq,
                msg_id,
                payload: message.payload,
            })));
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Without a runtime (dropped at shutdown) the server's inactivity threshold removes
        // the consumers.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stream = self.stream.clone();
        let name = std::mem::take(&mut self.name);
        runtime.spawn(async move {
            if let Err(err) = delete_consumers(&stream, &name).await {
                tracing::debug!(consumer = %name, error = %err, "reader consumer left to expire");
            }
        });
    }
}

/// Creates the ordered consumer `name` of `subject` from `from_seq` and starts its messages.
async fn consume(
    stream: stream::Stream<()>,
    partition: u32,
    subject: String,
    name: String,
    from_seq: u64,
) -> Result<Ordered, LogError> {
    let consumer = stream
        .create_consumer(OrderedConfig {
            name: Some(name),
            filter_subject: subject,
            deliver_policy: DeliverPolicy::ByStartSequence {
                // Sequences start at 1; the server refuses a start sequence of 0.
                start_sequence: from_seq.max(1),
            },
            ..OrderedConfig::default()
        })
        .await
        .map_err(|err| {
            let transient = matches!(
                err.kind(),
                ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request
            );
            LogError::classify(
                transient,
                &format!("opening a reader of partition {partition}"),
                err,
            )
        })?;
    consumer.messages().await.map_err(|err| {
        LogError::Unavailable(format!("starting a reader of partition {partition}: {err}"))
    })
}

/// Deletes the consumer `name` and every `name_<suffix>`.
async fn delete_consumers(stream: &stream::Stream<()>, name: &str) -> Result<(), LogError> {
    let derived = format!("{name}_");
    let mut names = stream.consumer_names();
    let mut doomed = Vec::new();
    while let Some(found) = names.next().await {
        let found =
            found.map_err(|err| LogError::Unavailable(format!("listing readers: {err}")))?;
        if found == name || found.starts_with(&derived) {
            doomed.push(found);
        }
    }
    for consumer in doomed {
        // Already gone (expired, or the server restarted) is fine.
        if let Err(err) = stream.delete_consumer(&consumer).await {
            tracing::debug!(%consumer, error = %err, "deleting a reader's consumer");
        }
    }
    Ok(())
}

fn read_error(err: &OrderedError) -> LogError {
    let transient = !matches!(
        err.kind(),
        OrderedErrorKind::Other
            | OrderedErrorKind::PushBasedConsumer
            | OrderedErrorKind::RequestLimitExceeded
    );
    LogError::classify(transient, "reading", err)
}
