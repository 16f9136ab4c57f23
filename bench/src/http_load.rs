//! `--transport http`: Segment-compatible `POST /v1/batch` with the write key as Basic user
//! name, from `--connections` workers that each keep one request outstanding on their own
//! keep-alive connection. A `200` acknowledges the whole batch; `429` / `503` send it again
//! after `Retry-After` (at most [`MAX_RETRY_AFTER`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::record::{Answer, Next, Recorder};
use crate::workload::{Batch, Resend, Workload, backoff};

/// Longest pause honoured from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Largest request body the data plane takes (SPEC.md section 8).
const MAX_BODY_BYTES: usize = 500 * 1024;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Runs `connections` workers until `work` is closed and drained.
#[allow(
    clippy::too_many_arguments,
    reason = "the run's shared parts, passed once"
)]
pub async fn run(
    addr: SocketAddr,
    write_key: &str,
    connections: usize,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    work: mpsc::Receiver<Batch>,
    resend: mpsc::UnboundedSender<Resend>,
) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector);
    let uri: http::Uri = format!("http://{addr}/v1/batch").parse()?;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    );
    let work = Arc::new(Mutex::new(work));
    let mut workers: tokio::task::JoinSet<anyhow::Result<()>> = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let worker = Worker {
            client: client.clone(),
            uri: uri.clone(),
            auth: auth.clone(),
            workload: Arc::clone(&workload),
            recorder: Arc::clone(&recorder),
            resend: resend.clone(),
        };
        let work = Arc::clone(&work);
        workers.spawn(async move {
            loop {
                let Some(batch) = work.lock().await.recv().await else {
                    return Ok(());
                };
                worker.post(batch).await?;
            }
        });
    }
    drop(resend);
    while let Some(done) = workers.join_next().await {
        done.context("HTTP worker")??;
    }
    Ok(())
}

struct Worker {
    client: HttpClient,
    uri: http::Uri,
    auth: String,
    workload: Arc<Workload>,
    recorder: Arc<Recorder>,
    resend: mpsc::UnboundedSender<Resend>,
}

impl Worker {
    async fn post(&self, batch: Batch) -> anyhow::Result<()> {
        let events: Vec<Value> = batch
            .seqs
            .iter()
            .map(|&s| self.workload.json_event(s))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "batch": events }))?;
        anyhow::ensure!(
            body.len() <= MAX_BODY_BYTES,
            "a batch of {} events is {} bytes, over the 500 KB request limit; use a smaller --batch",
            batch.seqs.len(),
            body.len()
        );
        let request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, self.auth.as_str())
            .body(Full::new(Bytes::from(body)))?;
        let at = batch.due.unwrap_or_else(|| self.recorder.now());
        self.recorder.sent(&batch.seqs, at);
        let (code, retry_after) = match self.client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                // Read to the end so the connection goes back to the pool.
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(http_body_util::Collected::to_bytes)
                    .unwrap_or_default();
                if status == StatusCode::OK {
                    let now = self.recorder.now();
                    for &seq in &batch.seqs {
                        self.recorder.answer(seq, &Answer::Accepted, now);
                    }
                    return Ok(());
                }
                (refusal_code(status, &body), retry_after)
            }
            // No answer at all: the events may or may not be stored; a resend is deduplicated.
            Err(_) => ("unavailable".to_owned(), None),
        };
        let now = self.recorder.now();
        let answer = Answer::Rejected { code };
        let mut attempt = 0;
        let again: Vec<u64> = batch
            .seqs
            .iter()
            .copied()
            .filter(|&seq| match self.recorder.answer(seq, &answer, now) {
                Next::Retry { attempt: a } => {
                    attempt = attempt.max(a);
                    true
                }
                Next::Done => false,
            })
            .collect();
        if !again.is_empty() {
            // The server's Retry-After when it gave one (capped), else the client's backoff.
            let pause = retry_after.unwrap_or_else(|| backoff(attempt));
            let _ = self.resend.send(Resend {
                seqs: again,
                not_before: Instant::now() + pause,
            });
        }
        Ok(())
    }
}

/// The ack-style code of a refused request: `rate_limited` for 429, `unavailable` for 503,
/// otherwise the error body's `code` (or `http_<status>`).
fn refusal_code(status: StatusCode, body: &[u8]) -> String {
    match status {
        StatusCode::TOO_MANY_REQUESTS => "rate_limited".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => "unavailable".to_owned(),
        _ => serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            .map_or_else(
                || format!("http_{}", status.as_u16()),
                |code| format!("http_{}_{code}", status.as_u16()),
            ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_retryable_codes_or_keep_the_server_code() {
        assert_eq!(
            refusal_code(StatusCode::TOO_MANY_REQUESTS, b""),
            "rate_limited"
        );
        assert_eq!(
            refusal_code(StatusCode::SERVICE_UNAVAILABLE, b""),
            "unavailable"
        );
        assert_eq!(
            refusal_code(StatusCode::BAD_REQUEST, br#"{"code":"too_large"}"#),
            "http_400_too_large"
        );
        assert_eq!(refusal_code(StatusCode::UNAUTHORIZED, b""), "http_401");
    }
}
