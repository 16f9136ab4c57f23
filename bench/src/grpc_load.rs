//! `--transport grpc`: one `IngestService.Ingest` stream. Batches go out as soon as a slot is
//! free (`--in-flight` requests awaiting acks); the server answers each request with its acks,
//! in request order, once the events are committed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use journeys_proto::v1 as pb;
use journeys_proto::v1::ingest_request::Payload;
use journeys_proto::v1::ingest_service_client::IngestServiceClient;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::record::{Answer, Next, Recorder};
use crate::workload::{Batch, Resend, Workload, backoff};

/// A channel tuned for one busy stream: large flow-control windows, no Nagle.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 * 1024 * 1024))
        .initial_connection_window_size(Some(16 * 1024 * 1024))
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// Sends every batch from `work` on one stream and records the acks; re-queues refused events
/// on `resend`. Returns when `work` is closed and every response has arrived.
pub async fn run(
    channel: Channel,
    write_key: &str,
    in_flight: usize,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    mut work: mpsc::Receiver<Batch>,
    resend: mpsc::UnboundedSender<Resend>,
) -> anyhow::Result<()> {
    let (requests, outgoing) = mpsc::channel::<pb::IngestRequest>(in_flight);
    let mut request = Request::new(ReceiverStream::new(outgoing));
    request.metadata_mut().insert(
        "x-write-key",
        MetadataValue::try_from(write_key).context("write key")?,
    );
    let slots = Arc::new(Semaphore::new(in_flight));
    let sender = {
        let slots = Arc::clone(&slots);
        let workload = Arc::clone(&workload);
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            while let Some(batch) = work.recv().await {
                let Ok(slot) = slots.acquire().await else {
                    return;
                };
                // Given back when the response for this request arrives.
                slot.forget();
                let events = batch
                    .seqs
                    .iter()
                    .map(|&s| workload.proto_event(s))
                    .collect();
                let at = batch.due.unwrap_or_else(|| recorder.now());
                recorder.sent(&batch.seqs, at);
                let message = pb::IngestRequest {
                    payload: Some(Payload::Batch(pb::EventBatch { events })),
                };
                if requests.send(message).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut client = IngestServiceClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    let mut inbound = client
        .ingest(request)
        .await
        .context("Ingest stream")?
        .into_inner();
    while let Some(response) = inbound.message().await.context("Ingest stream")? {
        let at = recorder.now();
        let mut again = Vec::new();
        let mut attempt = 0;
        for ack in response.acks {
            let Some(seq) = workload.seq_of(&ack.message_id) else {
                continue;
            };
            let answer = match pb::AckStatus::try_from(ack.status) {
                Ok(pb::AckStatus::Accepted) => Answer::Accepted,
                Ok(pb::AckStatus::Duplicate) => Answer::Duplicate,
                _ => Answer::Rejected { code: ack.code },
            };
            if let Next::Retry { attempt: a } = recorder.answer(seq, &answer, at) {
                attempt = attempt.max(a);
                again.push(seq);
            }
        }
        if !again.is_empty() {
            let _ = resend.send(Resend {
                seqs: again,
                not_before: Instant::now() + backoff(attempt),
            });
        }
        slots.add_permits(1);
    }
    slots.close();
    sender.await.context("gRPC sender")?;
    Ok(())
}
