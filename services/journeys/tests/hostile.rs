//! The hostile-input suite (issue 15), on every backend: well over 150 bad, oversize, malformed
//! or malicious inputs against `journeys dev` running in this process — the Segment-compatible
//! HTTP API and the HTTP port's other routes, `IngestService` (stream and unary) and every
//! control-plane service. Each case declares its input and the status (HTTP code, gRPC code or
//! ack status) and a message substring naming the field or reason it expects; after each case
//! the server must still answer (`/health`, a gRPC call, and an event that is acknowledged).
//! At the end every acknowledged event must be present: each probe event's journey send
//! reached the sink, the catalog counts them, and every profile an accepted case wrote exists.
//!
//! Cases that hold a socket open for the server's timeouts (slow headers, idle sockets, a body
//! that never finishes) run beside the others from the start.

// Test code: a failed unwrap is a failed test with its message, and tables read best long.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

mod hostile_cases;

use hostile_cases::run_suite;
use journeys_tests::on_each_backend;

/// The suite must run at least this many cases.
const MIN_CASES: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_precise_errors_the_server_keeps_answering_and_nothing_acked_is_lost()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let ran = run_suite(&url).await?;
        anyhow::ensure!(
            ran >= MIN_CASES,
            "only {ran} hostile cases ran; the suite promises at least {MIN_CASES}"
        );
        eprintln!("{ran} hostile cases passed");
        Ok(())
    })
    .await
}
