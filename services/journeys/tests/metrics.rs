//! `GET /metrics` on the HTTP port of `journeys dev`, on every backend: after traffic that
//! exercises each counted outcome (accepted, duplicate and refused events; entries and a skipped
//! one; a hold match and an exit; a timer; deliveries sent, retried and dead-lettered), the
//! Prometheus text lists every series, and each one grew where that traffic happened.
//!
//! The registry is process-wide, so this binary holds one test and compares totals before and
//! after each backend's run.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::items_after_statements,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss
)]

use std::collections::BTreeMap;
use std::time::Duration;

use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{keyed, send_accepted, track};
use journeys_tests::{Stack, StackOptions, on_each_backend};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TIMEOUT: Duration = Duration::from_secs(30);

/// `GET /metrics` over a plain HTTP/1.1 connection: `(content type, body)`.
async fn scrape(addr: &str) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: journeys\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response: {text}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        })
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok((content_type, body.to_owned()))
}

/// Sample lines of the text format, `series{labels}` → value; fails on a malformed line.
fn samples(text: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("malformed sample: {line}"))?;
        samples.insert(series.to_owned(), value.parse()?);
    }
    Ok(samples)
}

fn journeys() -> Vec<serde_json::Value> {
    let forward = |id: &str, event: &str, destination: &str| {
        json!({"journey": {
            "id": id,
            "name": format!("Forward {event}"),
            "entry": {"event": event},
            "entry_rule": "ENTER_ONCE",
            "start_step": "forward",
            "steps": [{"key": "forward", "name": "Forward", "send": {
                "destination_id": destination,
                "mapping": {"user": {"@path": "$.userId"}}
            }}]
        }})
    };
    vec![
        forward("orders", "order_placed", "good"),
        forward("refunds", "refund_requested", "bad"),
        json!({"journey": {
            "id": "applications",
            "name": "Application follow-up",
            "entry": {"event": "application_started"},
            "entry_rule": "REENTER_EVERY_TIME",
            "unique_identifier": "application_id",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait for completion", "hold_until": {
                    "branches": [{"name": "completed", "event": "application_completed", "next": "done"}],
                    "max_duration": "3600s",
                    "timeout_next": ""
                }},
                {"key": "done", "name": "Completed", "end": {}}
            ],
            "exit_rules": [{"event": "application_withdrawn", "match_unique_identifier": true}]
        }}),
        json!({"journey": {
            "id": "welcome",
            "name": "Welcome after a second",
            "entry": {"event": "signed_up"},
            "entry_rule": "ENTER_ONCE",
            "start_step": "wait",
            "steps": [
                {"key": "wait", "name": "Wait", "delay": {"duration": "1s", "next": "hello"}},
                {"key": "hello", "name": "Hello", "send": {
                    "destination_id": "good",
                    "mapping": {"user": {"@path": "$.userId"}}
                }}
            ]
        }}),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_lists_every_series_and_counts_the_traffic() -> anyhow::Result<()> {
    on_each_backend(|url| async move {
        // `good` fails once, then accepts; `bad` refuses for good.
        let good = Sink::start().await;
        good.script([500]);
        let bad = Sink::start().await;
        bad.answer_by_default(400);
        let stack = Stack::start(
            &url,
            StackOptions {
                allow_short_durations: true,
                ..StackOptions::default()
            },
        )
        .await?;
        let http_addr = stack.http_base().trim_start_matches("http://").to_owned();
        let (_, before) = scrape(&http_addr).await?;
        let before = samples(&before)?;

        let mut c = stack.clients().await?;
        let key = c.create_source("metered").await?;
        c.webhook("good", &good.url(), None).await?;
        c.webhook("bad", &bad.url(), None).await?;
        c.register_events(&[
            "order_placed",
            "refund_requested",
            "application_started",
            "application_completed",
            "application_withdrawn",
            "signed_up",
        ])
        .await?;
        for journey in journeys() {
            c.publish(&journey).await?;
        }

        let app = |id: &str| json!({"application_id": id});
        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                track("u1", "order_placed", "o-1", &json!({})),
                // Entered once already: skipped.
                track("u1", "order_placed", "o-2", &json!({})),
                track("u1", "refund_requested", "r-1", &json!({})),
                track("u1", "application_started", "a-1", &app("A1")),
                track("u1", "application_completed", "a-2", &app("A1")),
                track("u1", "application_started", "a-3", &app("A2")),
                track("u1", "application_withdrawn", "a-4", &app("A2")),
                track("u2", "signed_up", "s-1", &json!({})),
            ],
        )
        .await?;
        // A duplicate, and an event refused at the edge (no user).
        let ack = c
            .ingest
            .track(keyed(track("u1", "order_placed", "o-1", &json!({})), &key)?)
            .await?
            .into_inner();
        assert_eq!(ack.status, journeys_proto::v1::AckStatus::Duplicate as i32);
        let refused = c
            .ingest
            .track(keyed(track("", "order_placed", "x-1", &json!({})), &key)?)
            .await;
        assert!(refused.is_err(), "{refused:?}");

        // The order (after one retry), the timer's welcome, and the dead-lettered refund.
        good.wait_for(3, TIMEOUT).await;
        bad.wait_for(1, TIMEOUT).await;

        let delta = |after: &BTreeMap<String, f64>, series: &str| {
            after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
        };
        // Series → how much it must have grown at least.
        let grown = [
            (r#"journeys_deliveries_total{outcome="sent"}"#, 2.0),
            (r#"journeys_events_total{outcome="accepted"}"#, 8.0),
        ]
        .into_iter()
        .chain(
            [
                r#"journeys_events_total{outcome="duplicate"}"#,
                r#"journeys_events_total{outcome="rejected",code="missing_user_id"}"#,
                "journeys_entries_total",
                r#"journeys_entries_skipped_total{reason="already_entered"}"#,
                "journeys_hold_matches_total",
                "journeys_exits_total",
                "journeys_sends_queued_total",
                r#"journeys_timers_fired_total{outcome="applied"}"#,
                "journeys_timer_lateness_seconds_count",
                r#"journeys_timer_lateness_seconds_bucket{le="+Inf"}"#,
                r#"journeys_deliveries_total{outcome="retry"}"#,
                r#"journeys_deliveries_total{outcome="dead"}"#,
                "journeys_delivery_duration_seconds_count",
                "journeys_engine_batch_duration_seconds_count",
                "journeys_engine_commit_duration_seconds_count",
            ]
            .map(|series| (series, 1.0)),
        )
        .collect::<Vec<_>>();
        // Deliveries are counted once their outcome is recorded, just after the request.
        let what =
            format!("every series to grow; before: {before:?}\nexpected growth of: {grown:?}");
        let (content_type, text) = eventually(&what, TIMEOUT, || {
            let http_addr = http_addr.clone();
            let (before, grown) = (&before, &grown);
            async move {
                let (content_type, text) = scrape(&http_addr).await?;
                let after = samples(&text)?;
                let all = grown.iter().all(|(series, least)| {
                    after.get(*series).copied().unwrap_or(0.0)
                        - before.get(*series).copied().unwrap_or(0.0)
                        >= *least
                });
                Ok::<_, anyhow::Error>(all.then_some((content_type, text)))
            }
        })
        .await;
        let after = samples(&text)?;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(
            delta(&after, r#"journeys_events_total{outcome="accepted"}"#),
            8.0
        );
        assert_eq!(
            delta(&after, r#"journeys_events_total{outcome="duplicate"}"#),
            1.0
        );
        assert_eq!(
            delta(&after, r#"journeys_deliveries_total{outcome="sent"}"#),
            2.0
        );
        assert_eq!(
            delta(&after, r#"journeys_deliveries_total{outcome="dead"}"#),
            1.0
        );
        assert_eq!(delta(&after, "journeys_hold_matches_total"), 1.0);
        assert_eq!(delta(&after, "journeys_exits_total"), 1.0);
        for name in [
            "journeys_events_total",
            "journeys_entries_total",
            "journeys_entries_skipped_total",
            "journeys_hold_matches_total",
            "journeys_exits_total",
            "journeys_timers_fired_total",
            "journeys_deliveries_total",
            "journeys_engine_conflicts_total",
            "journeys_engine_fenced_commits_total",
            "journeys_engine_lease_lapses_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} counter\n")),
                "{name}:\n{text}"
            );
        }
        for name in [
            "journeys_timer_lateness_seconds",
            "journeys_delivery_duration_seconds",
            "journeys_engine_batch_duration_seconds",
            "journeys_engine_commit_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{name}:\n{text}"
            );
            assert_eq!(
                after.get(&format!("{name}_count")),
                after.get(&format!("{name}_bucket{{le=\"+Inf\"}}")),
                "{name}: count is the +Inf bucket"
            );
        }

        stack.stop().await?;
        good.stop().await;
        bad.stop().await;
        Ok(())
    })
    .await
}
