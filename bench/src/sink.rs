//! The webhook sink: a bare hyper HTTP/1.1 server on 127.0.0.1:0 that answers every request
//! `200` at once and records, per event, when its webhook arrived and with which
//! `Idempotency-Key` (so repeats are counted).
//!
//! The forwarding journey's mapping puts the event's `seq` in the body; that, not the
//! webhook's own `messageId` (derived from the instance), ties a webhook to its event.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::record::{Recorder, fingerprint};
use crate::workload::Workload;

/// The part of a delivered body the sink reads.
#[derive(Deserialize)]
struct Delivery {
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    seq: Option<String>,
}

/// A running sink; stops when dropped.
pub struct Sink {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    pub async fn start(workload: Arc<Workload>, recorder: Arc<Recorder>) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let workload = Arc::clone(&workload);
                let recorder = Arc::clone(&recorder);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let workload = Arc::clone(&workload);
                        let recorder = Arc::clone(&recorder);
                        async move { Ok::<_, Infallible>(receive(request, &workload, &recorder).await) }
                    });
                    // A dispatcher closing its pooled connection is not an error worth a word.
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Sink { addr, task })
    }

    /// The URL to configure as the webhook destination.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

async fn receive(
    request: Request<Incoming>,
    workload: &Workload,
    recorder: &Recorder,
) -> Response<Full<Bytes>> {
    let key = request
        .headers()
        .get("idempotency-key")
        .map(|v| fingerprint(v.as_bytes()))
        .unwrap_or_default();
    let body = request
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    recorder.arrived(seq_of(&body, workload), key);
    Response::new(Full::new(Bytes::new()))
}

/// The event sequence number named by a delivered body, if it belongs to this run.
fn seq_of(body: &[u8], workload: &Workload) -> Option<u64> {
    let delivery: Delivery = serde_json::from_slice(body).ok()?;
    if delivery.run.as_deref() != Some(workload.run.as_str()) {
        return None;
    }
    delivery.seq?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sequence_number_of_this_run_only() {
        let w = Workload::new(crate::cli::WorkloadKind::Forwarding, 1, 1);
        let body = format!(r#"{{"run":"{}","seq":"42","userId":"u"}}"#, w.run);
        assert_eq!(seq_of(body.as_bytes(), &w), Some(42));
        assert_eq!(seq_of(br#"{"run":"other","seq":"42"}"#, &w), None);
        assert_eq!(seq_of(b"not json", &w), None);
    }
}
