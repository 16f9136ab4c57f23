//! gRPC ingestion helpers: building `journeys.v1.Event`s from JSON, attaching a write key, and
//! a bidirectional `Ingest` stream that sends requests and collects acknowledgements.

use std::collections::HashMap;
use std::time::Duration;

use journeys_control_plane::convert::json::json_to_struct;
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Streaming};

/// A track event `event` of `user_id`, as a client sends it; the same argument order as
/// [`journeys_testkit::track`].
pub fn track(user_id: &str, event: &str, message_id: &str, properties: &Value) -> pb::Event {
    pb::Event {
        r#type: pb::EventType::Track as i32,
        message_id: message_id.to_owned(),
        user_id: user_id.to_owned(),
        event: event.to_owned(),
        properties: Some(json_to_struct(properties)),
        ..Default::default()
    }
}

/// An identify event of `user_id`, as a client sends it; the same argument order as
/// [`journeys_testkit::identify`].
pub fn identify(user_id: &str, message_id: &str, traits: &Value) -> pb::Event {
    pb::Event {
        r#type: pb::EventType::Identify as i32,
        message_id: message_id.to_owned(),
        user_id: user_id.to_owned(),
        traits: Some(json_to_struct(traits)),
        ..Default::default()
    }
}

/// `message` as a request carrying `write_key` in `x-write-key` metadata.
pub fn keyed<T>(message: T, write_key: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-write-key", write_key.parse()?);
    Ok(request)
}

/// Sends `events` one by one through the unary `Track`/`Identify` calls (by their type) and
/// fails unless each is ACCEPTED.
pub async fn send_accepted(
    client: &mut IngestServiceClient<Channel>,
    write_key: &str,
    events: Vec<pb::Event>,
) -> anyhow::Result<()> {
    for event in events {
        let id = event.message_id.clone();
        let ack = if event.r#type == pb::EventType::Identify as i32 {
            client.identify(keyed(event, write_key)?).await?
        } else {
            client.track(keyed(event, write_key)?).await?
        }
        .into_inner();
        anyhow::ensure!(
            ack.status == pb::AckStatus::Accepted as i32,
            "event {id} was not accepted: {ack:?}"
        );
    }
    Ok(())
}

/// An open `Ingest` stream.
pub struct IngestStream {
    requests: Option<mpsc::Sender<pb::IngestRequest>>,
    responses: Streaming<pb::IngestResponse>,
}

impl IngestStream {
    /// Opens a stream authenticated by `write_key`.
    pub async fn open(
        client: &mut IngestServiceClient<Channel>,
        write_key: &str,
    ) -> anyhow::Result<IngestStream> {
        let (requests, rx) = mpsc::channel(256);
        let responses = client
            .ingest(keyed(ReceiverStream::new(rx), write_key)?)
            .await?
            .into_inner();
        Ok(IngestStream {
            requests: Some(requests),
            responses,
        })
    }

    /// Sends one event as its own request.
    pub async fn send(&self, event: pb::Event) -> anyhow::Result<()> {
        self.send_request(pb::IngestRequest {
            payload: Some(pb::ingest_request::Payload::Event(event)),
        })
        .await
    }

    /// Sends several events as one batch request.
    pub async fn send_batch(&self, events: Vec<pb::Event>) -> anyhow::Result<()> {
        self.send_request(pb::IngestRequest {
            payload: Some(pb::ingest_request::Payload::Batch(pb::EventBatch {
                events,
            })),
        })
        .await
    }

    /// Sends a raw request.
    pub async fn send_request(&self, request: pb::IngestRequest) -> anyhow::Result<()> {
        let Some(requests) = &self.requests else {
            anyhow::bail!("the stream was closed");
        };
        requests
            .send(request)
            .await
            .map_err(|_| anyhow::anyhow!("the ingest stream is gone"))
    }

    /// The next response's acks; `None` when the server ended the stream.
    pub async fn next_acks(&mut self) -> anyhow::Result<Option<Vec<pb::Ack>>> {
        Ok(self.responses.message().await?.map(|r| r.acks))
    }

    /// Reads responses until `n` acks arrived (failing after `timeout` or if the stream ends).
    pub async fn acks(&mut self, n: usize, timeout: Duration) -> anyhow::Result<Vec<pb::Ack>> {
        let mut acks = Vec::with_capacity(n);
        tokio::time::timeout(timeout, async {
            while acks.len() < n {
                match self.next_acks().await? {
                    Some(more) => acks.extend(more),
                    None => anyhow::bail!("the stream ended after {} of {n} acks", acks.len()),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| anyhow::anyhow!("only {} of {n} acks within {timeout:?}", acks.len()))??;
        Ok(acks)
    }

    /// Ends the request side; the server finishes the pending acks and ends the stream.
    pub fn close(&mut self) {
        self.requests = None;
    }
}

/// Ack status by message id.
pub fn statuses(acks: &[pb::Ack]) -> HashMap<String, pb::AckStatus> {
    acks.iter()
        .map(|a| {
            (
                a.message_id.clone(),
                pb::AckStatus::try_from(a.status).unwrap_or(pb::AckStatus::Unspecified),
            )
        })
        .collect()
}
