//! [`PartitionLog`]: connecting, checking the stream, publishing, trimming and the tail.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, DeleteStreamErrorKind, PublishAckFuture, PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, PurgeErrorKind, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::{ConnectErrorKind, ConnectOptions};
use bytes::Bytes;

use crate::error::LogError;
use crate::reader::Reader;

/// How long a message id is remembered for deduplication unless configured otherwise: longer
/// than a client's retry loop, short enough that the server's id set stays small.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long a JetStream request or publish acknowledgement may take before the log reports
/// itself unavailable: a healthy server answers in milliseconds, and a caller (an ingest
/// request) is still waiting.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a [`PartitionLog`] connects to and how it sets up its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Stream name, also the first token of every subject (`<stream>.ev.<partition>`).
    pub stream: String,
    /// Number of partitions `P`: partitions are `0..P`. The stream itself does not record it,
    /// so every process of a deployment must agree (as they must on the store's partitions).
    pub partitions: u32,
    /// JetStream's duplicate window, used when this process creates the stream.
    pub duplicate_window: Duration,
    /// Stream replicas (1 on a single server, 3 on a cluster), used when creating the stream.
    pub replicas: usize,
    /// Bound on every JetStream request and publish acknowledgement.
    pub request_timeout: Duration,
}

impl LogConfig {
    /// `stream` with `partitions` partitions and the defaults: a two-minute duplicate window,
    /// one replica, five-second requests.
    #[must_use]
    pub fn new(stream: impl Into<String>, partitions: u32) -> Self {
        Self {
            stream: stream.into(),
            partitions,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            replicas: 1,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// The subject pattern of the stream: `<stream>.ev.*`.
    fn subjects(&self) -> String {
        format!("{}.ev.*", self.stream)
    }

    fn validate(&self) -> Result<(), LogError> {
        let name = &self.stream;
        if name.is_empty() {
            return Err(LogError::InvalidArgument(
                "stream: must not be empty".to_owned(),
            ));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(*c))
        {
            return Err(LogError::InvalidArgument(format!(
                "stream: {name:?} contains {bad:?}; a stream name is one subject token \
                 (no whitespace, '.', '*', '>', '/' or '\\')"
            )));
        }
        if self.partitions == 0 {
            return Err(LogError::InvalidArgument(
                "partitions: must be at least 1".to_owned(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(LogError::InvalidArgument(
                "request_timeout: must be above zero".to_owned(),
            ));
        }
        Ok(())
    }
}

/// What JetStream answered to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The entry's stream sequence (for a duplicate: the first entry's).
    pub seq: u64,
    /// The message id was already in the duplicate window: nothing was added.
    pub duplicate: bool,
}

/// One entry to publish with [`PartitionLog::publish_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition, `0..partitions`.
    pub partition: u32,
    /// Deduplication id (`Nats-Msg-Id`), e.g. `<source>:<messageId>`.
    pub msg_id: String,
    /// The entry's bytes, opaque to the log.
    pub payload: Bytes,
}

/// Handle to the partitioned stream. Cheap to clone: clones share one NATS connection, which
/// reconnects by itself after an outage.
#[derive(Debug, Clone)]
pub struct PartitionLog {
    context: Context,
    stream: stream::Stream<()>,
    config: LogConfig,
}

impl PartitionLog {
    /// Connects to the NATS server at `url` and creates the stream `stream` (subjects
    /// `<stream>.ev.*`, file storage, the default duplicate window) unless it exists.
    ///
    /// # Errors
    /// As [`PartitionLog::connect_with`].
    pub async fn connect(url: &str, stream: &str, partitions: u32) -> Result<Self, LogError> {
        Self::connect_with(url, LogConfig::new(stream, partitions)).await
    }

    /// Connects with a full [`LogConfig`]. Idempotent: processes connecting at the same time,
    /// or again later, share the stream. An existing stream keeps its own duplicate window and
    /// replicas (a differing one is logged).
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a bad config, [`LogError::Unavailable`] when NATS
    /// or JetStream does not answer, [`LogError::StreamMismatch`] when the stream exists with
    /// other subjects.
    pub async fn connect_with(url: &str, config: LogConfig) -> Result<Self, LogError> {
        config.validate()?;
        let client = ConnectOptions::new()
            .name("journeys-log")
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(url)
            .await
            .map_err(|err| {
                let transient = matches!(
                    err.kind(),
                    ConnectErrorKind::Dns | ConnectErrorKind::TimedOut | ConnectErrorKind::Io
                );
                LogError::classify(transient, &format!("connecting to {url}"), err)
            })?;
        let context = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            // A batch larger than the in-flight limit waits for acks instead of failing.
            .backpressure_on_inflight(true)
            .build(client);

        let expected = config.subjects();
        let created = context
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![expected.clone()],
                storage: StorageType::File,
                duplicate_window: config.duplicate_window,
                num_replicas: config.replicas,
                ..stream::Config::default()
            })
            .await
            .map_err(|err| {
                let transient = matches!(
                    err.kind(),
                    CreateStreamErrorKind::JetStreamUnavailable
                        | CreateStreamErrorKind::TimedOut
                        | CreateStreamErrorKind::Response
                );
                LogError::classify(
                    transient,
                    &format!("creating stream {}", config.stream),
                    err,
                )
            })?;
        let info = &created.cached_info().config;
        if info.subjects != [expected.clone()] {
            return Err(LogError::StreamMismatch {
                stream: config.stream.clone(),
                expected,
                found: info.subjects.clone(),
            });
        }
        if info.duplicate_window != config.duplicate_window {
            tracing::warn!(
                stream = %config.stream,
                existing = ?info.duplicate_window,
                configured = ?config.duplicate_window,
                "the stream keeps its own duplicate window"
            );
        }
        let stream = context
            .get_stream_no_info(&config.stream)
            .await
            .map_err(|err| LogError::Internal(err.to_string()))?;
        tracing::debug!(stream = %config.stream, partitions = config.partitions, "partition log ready");
        Ok(Self {
            context,
            stream,
            config,
        })
    }

    /// The configuration this log was connected with.
    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The subject of `partition`: `<stream>.ev.<partition>`.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] when `partition` is not below the partition count.
    pub fn subject(&self, partition: u32) -> Result<String, LogError> {
        if partition >= self.config.partitions {
            return Err(LogError::InvalidArgument(format!(
                "partition: {partition} is out of range, the log has {} partitions (0..{})",
                self.config.partitions, self.config.partitions
            )));
        }
        Ok(format!("{}.ev.{partition}", self.config.stream))
    }

    /// Appends `payload` to `partition` with the deduplication id `msg_id`, and waits for
    /// JetStream's acknowledgement.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a partition out of range or an empty `msg_id`
    /// (nothing is sent), [`LogError::Unavailable`] when the acknowledgement does not come in
    /// time (the entry may or may not be stored: publish again with the same id).
    pub async fn publish(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<Published, LogError> {
        let ack = self.send(partition, msg_id, payload).await?;
        settle(ack.await)
    }

    /// Publishes every record, pipelined (all are sent before any acknowledgement is
    /// awaited), and returns their acknowledgements in the records' order.
    ///
    /// Records are validated first: one invalid record sends nothing. Each partition's records
    /// are stored in the order given.
    ///
    /// # Errors
    /// As [`PartitionLog::publish`]; after a failure some records may be stored and others
    /// not, and publishing the whole batch again is safe (the stored ones come back as
    /// duplicates).
    pub async fn publish_batch(&self, records: &[Record]) -> Result<Vec<Published>, LogError> {
        for record in records {
            self.subject(record.partition)?;
            check_msg_id(&record.msg_id)?;
        }
        let mut acks = Vec::with_capacity(records.len());
        let mut failure = None;
        for record in records {
            match self
                .send(record.partition, &record.msg_id, record.payload.clone())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        // Every sent publish is settled, even after a failure, so none is left in flight.
        let settled =
            futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await;
        if let Some(err) = failure {
            return Err(err);
        }
        settled.into_iter().map(settle).collect()
    }

    /// Sends one publish and returns the future of its acknowledgement.
    async fn send(
        &self,
        partition: u32,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishAckFuture, LogError> {
        let subject = self.subject(partition)?;
        check_msg_id(msg_id)?;
        self.context
            .send_publish(
                subject,
                PublishMessage::build().payload(payload).message_id(msg_id),
            )
            .await
            .map_err(publish_error)
    }

    /// Reads `partition` from sequence `from_seq` on (the first entry with a sequence at least
    /// `from_seq`), in order, through an ordered consumer: no acknowledgements; after a failure
    /// (a connection loss, a server restart) the reader opens its consumer again after the
    /// last entry it yielded.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a partition out of range, [`LogError::Unavailable`]
    /// when the consumer cannot be created.
    pub async fn read(&self, partition: u32, from_seq: u64) -> Result<Reader, LogError> {
        let subject = self.subject(partition)?;
        Reader::open(
            self.stream.clone(),
            &self.config.stream,
            partition,
            subject,
            from_seq,
        )
        .await
    }

    /// Removes `partition`'s entries with a sequence below `below_seq` (what its owner has
    /// committed), and returns how many were removed. Other partitions are untouched.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a partition out of range, [`LogError::Unavailable`]
    /// when JetStream does not answer.
    pub async fn trim(&self, partition: u32, below_seq: u64) -> Result<u64, LogError> {
        let subject = self.subject(partition)?;
        // Sequence 0 would mean "no bound" to JetStream and purge the whole partition.
        if below_seq <= 1 {
            return Ok(0);
        }
        let purged = self
            .stream
            .purge()
            .filter(subject)
            .sequence(below_seq)
            .await
            .map_err(|err| {
                let transient = matches!(
                    err.kind(),
                    PurgeErrorKind::Request | PurgeErrorKind::TimedOut
                );
                LogError::classify(transient, &format!("trimming partition {partition}"), err)
            })?;
        Ok(purged.purged)
    }

    /// The sequence of `partition`'s last entry, 0 when it holds none (never written, or
    /// trimmed to empty). A partition's lag is `tail.saturating_sub(last_seq)`.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a partition out of range, [`LogError::Unavailable`]
    /// when JetStream does not answer.
    pub async fn tail(&self, partition: u32) -> Result<u64, LogError> {
        let subject = self.subject(partition)?;
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(message.sequence),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => {
                let transient = err.kind() == LastRawMessageErrorKind::Other;
                Err(LogError::classify(
                    transient,
                    &format!("reading the tail of partition {partition}"),
                    err,
                ))
            }
        }
    }

    /// Announces `payload` on `partition`'s notice subject (`<stream>.done.<partition>`),
    /// outside the stream: core NATS, at most once, to whoever listens now. Owners announce
    /// their commits this way; fronts waiting to acknowledge a client listen with
    /// [`PartitionLog::notices`], and fall back to the store when a notice is lost.
    ///
    /// # Errors
    /// [`LogError::InvalidArgument`] for a partition out of range, [`LogError::Unavailable`]
    /// when the connection cannot take it.
    pub async fn notify(&self, partition: u32, payload: Bytes) -> Result<(), LogError> {
        self.subject(partition)?;
        let subject = format!("{}.done.{partition}", self.config.stream);
        self.context
            .client()
            .publish(subject, payload)
            .await
            .map_err(|err| LogError::Unavailable(format!("announcing a commit: {err}")))
    }

    /// Every partition's notices from now on, as `(partition, payload)`. Ends only when the
    /// connection is closed for good; notices sent while the connection was down are lost.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when the subscription cannot be made.
    pub async fn notices(&self) -> Result<Notices, LogError> {
        let subject = format!("{}.done.*", self.config.stream);
        let subscriber = self
            .context
            .client()
            .subscribe(subject)
            .await
            .map_err(|err| LogError::Unavailable(format!("listening for commits: {err}")))?;
        Ok(Notices { subscriber })
    }

    /// The sequence of the stream's last entry, whatever its partition (0 for a new stream).
    /// Sequences only grow over a stream's life, trimming included: a progress above it was
    /// made on an earlier stream of the same name.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when JetStream does not answer.
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        let info = self.stream.get_info().await.map_err(|err| {
            LogError::Unavailable(format!("reading stream {}: {err}", self.config.stream))
        })?;
        Ok(info.state.last_sequence)
    }

    /// Deletes the stream with every partition's entries (tests, tear-down). A stream already
    /// gone is fine.
    ///
    /// # Errors
    /// [`LogError::Unavailable`] when JetStream does not answer.
    pub async fn delete_stream(&self) -> Result<(), LogError> {
        match self.context.delete_stream(&self.config.stream).await {
            Ok(_) => Ok(()),
            Err(err) => match err.kind() {
                DeleteStreamErrorKind::JetStream(js) if js.code() == 404 => Ok(()),
                DeleteStreamErrorKind::Request => Err(LogError::Unavailable(format!(
                    "deleting stream {}: {err}",
                    self.config.stream
                ))),
                _ => Err(LogError::Internal(format!(
                    "deleting stream {}: {err}",
                    self.config.stream
                ))),
            },
        }
    }
}

/// A message id must be present: without one, JetStream cannot deduplicate a retry.
fn check_msg_id(msg_id: &str) -> Result<(), LogError> {
    if msg_id.trim().is_empty() {
        return Err(LogError::InvalidArgument(
            "msg_id: must not be empty or blank".to_owned(),
        ));
    }
    if msg_id.contains(['\r', '\n']) {
        return Err(LogError::InvalidArgument(
            "msg_id: must not contain line breaks".to_owned(),
        ));
    }
    Ok(())
}

/// An awaited acknowledgement as a [`Published`].
fn settle(
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Result<Published, LogError> {
    let ack = ack.map_err(publish_error)?;
    Ok(Published {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

fn publish_error(err: jetstream::context::PublishError) -> LogError {
    let transient = matches!(
        err.kind(),
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::MaxAckPending
    );
    LogError::classify(transient, "publishing", err)
}

#[cfg(test)]
mod tests {
    use super::{LogConfig, check_msg_id};
    use crate::LogError;

    fn refusal(config: &LogConfig) -> String {
        match config.validate() {
            Err(LogError::InvalidArgument(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn configs_name_the_field_they_fail_on() {
        assert!(LogConfig::new("journeys", 64).validate().is_ok());
        assert_eq!(LogConfig::new("journeys", 64).subjects(), "journeys.ev.*");
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "tab\there"] {
            assert!(
                refusal(&LogConfig::new(bad, 8)).starts_with("stream:"),
                "{bad:?}"
            );
        }
        assert!(refusal(&LogConfig::new("j", 0)).starts_with("partitions:"));
        let zero = LogConfig {
            request_timeout: std::time::Duration::ZERO,
            ..LogConfig::new("j", 1)
        };
        assert!(refusal(&zero).starts_with("request_timeout:"));
    }

    #[test]
    fn message_ids_must_be_present_and_on_one_line() {
        assert!(check_msg_id("web:m-1").is_ok());
        for bad in ["", " ", "a\nb", "a\rb"] {
            assert!(check_msg_id(bad).is_err(), "{bad:?}");
        }
    }
}

/// The notices of every partition, from [`PartitionLog::notices`].
#[derive(Debug)]
pub struct Notices {
    subscriber: async_nats::Subscriber,
}

impl Notices {
    /// The next notice as `(partition, payload)`; `None` once the connection closed for good.
    /// A notice on a subject that does not end in a partition number is skipped.
    pub async fn next(&mut self) -> Option<(u32, Bytes)> {
        use futures::StreamExt;
        loop {
            let message = self.subscriber.next().await?;
            let partition = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|p| p.parse().ok());
            if let Some(partition) = partition {
                return Some((partition, message.payload));
            }
        }
    }
}
