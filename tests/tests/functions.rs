//! Destination functions end to end, on every backend, against real HTTP sinks: Segment's
//! `onTrack` example pasted as is delivers through a published journey; a `RetryError` is
//! retried with the same idempotency key; a `ValidationError`, the CPU, memory and response
//! limits, `require`, `process` and a blocked address dead-letter with their message and the
//! function's logs while the node goes on delivering; create and update check the code and
//! keep secrets write-only; `TestFunction` and `SendTestEvent` report what a run did.

// Test code: a failed unwrap is a failed test with its message, and a scenario reads best as
// one function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::collections::HashMap;
use std::time::Duration;

use journeys_control_plane::convert::json::json_to_struct;
use journeys_proto::v1 as pb;
use journeys_testkit::sink::Reply;
use journeys_testkit::{Sink, eventually};
use journeys_tests::ingest::{identify, send_accepted, track};
use journeys_tests::{Stack, StackClients, StackOptions, on_each_backend};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

/// The example of the issue, pasted as is.
const SEGMENT_EXAMPLE: &str = r"async function onTrack(event, settings) {
  const res = await fetch(settings.url, {
    method: 'POST',
    headers: { Authorization: `Bearer ${settings.apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: event.properties.email, step: event.properties.journey_metadata.step_key })
  })
  if (res.status >= 500) throw new RetryError(`upstream ${res.status}`)
  if (!res.ok) throw new ValidationError(`rejected ${res.status}`)
}
";

fn function_destination(
    id: &str,
    code: &str,
    settings: &Value,
    secrets: &[(&str, &str)],
) -> pb::CreateDestinationRequest {
    pb::CreateDestinationRequest {
        destination: Some(pb::Destination {
            id: id.to_owned(),
            name: format!("Function {id}"),
            function: Some(pb::FunctionSettings {
                code: code.to_owned(),
                settings: Some(json_to_struct(settings)),
                secrets: secrets
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                timeout: None,
            }),
            ..Default::default()
        }),
    }
}

/// A journey entered by `event` (one instance per value of `key`) whose one step sends to
/// `destination` with the profile's `email` trait.
fn journey(id: &str, event: &str, key: &str, destination: &str) -> Value {
    json!({"journey": {
        "id": id,
        "name": format!("Journey {id}"),
        "entry": {"event": event},
        "entry_rule": "REENTER_EVERY_TIME",
        "unique_identifier": key,
        "start_step": "notify",
        "steps": [{"key": "notify", "name": "Notify", "send": {
            "destination_id": destination,
            "traits": ["email"]
        }}]
    }})
}

async fn dead_letters_at_least(
    c: &StackClients,
    destination: &str,
    n: usize,
) -> Vec<pb::DeadLetter> {
    eventually(
        &format!("{n} dead letters of {destination}"),
        Duration::from_secs(60),
        || {
            let mut c = c.clone();
            async move {
                let letters = c.dead_letters(destination).await?;
                Ok::<_, anyhow::Error>((letters.len() >= n).then_some(letters))
            }
        },
    )
    .await
}

/// `GET /metrics` of the stack's HTTP port.
async fn metrics(stack: &Stack) -> anyhow::Result<String> {
    let addr = stack.http_base().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nhost: journeys\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// The value of the series line starting with `prefix` (0 when absent).
fn series(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn the_segment_example_delivers_through_a_journey_and_retry_error_is_retried()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        sink.script([503, 200]);
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        let created = c
            .destinations
            .create_destination(function_destination(
                "notify",
                SEGMENT_EXAMPLE,
                &json!({"url": sink.url_at("/notify")}),
                &[("apiKey", "k-123")],
            ))
            .await?
            .into_inner();
        let function = created.function.as_ref().unwrap();
        assert_eq!(function.code, SEGMENT_EXAMPLE);
        assert_eq!(
            function.secrets,
            HashMap::from([("apiKey".to_owned(), "********".to_owned())]),
            "secrets are write-only"
        );
        assert!(created.webhook.is_none());
        c.register_events(&["signed_up"]).await?;
        c.publish(&journey("welcome", "signed_up", "plan", "notify"))
            .await?;

        send_accepted(
            &mut c.ingest,
            &key,
            vec![
                identify("u1", "i-1", &json!({"email": "a@example.com"})),
                track("u1", "signed_up", "s-1", &json!({"plan": "pro"})),
            ],
        )
        .await?;
        // The first fetch gets a 503: RetryError, retried after the backoff (1 s base).
        sink.wait_for(2, Duration::from_secs(30)).await;
        let got = sink.settle(Duration::from_millis(1500)).await;
        assert_eq!(
            got.iter().map(|r| r.answered).collect::<Vec<_>>(),
            [503, 200],
            "retried until delivered, then no more"
        );
        let step_key = got[0].body["step"].as_str().unwrap().to_owned();
        assert!(!step_key.is_empty(), "{:?}", got[0].body);
        for request in &got {
            assert_eq!(request.path, "/notify");
            assert_eq!(request.header("authorization"), Some("Bearer k-123"));
            assert_eq!(
                request.body,
                json!({"email": "a@example.com", "step": step_key})
            );
            assert!(request.idempotency_key().starts_with("jm_"));
            assert_eq!(request.idempotency_key(), got[0].idempotency_key());
        }
        assert!(c.dead_letters("notify").await?.is_empty());
        let stats = c.stats("welcome").await?;
        let send = stats.sends.iter().find(|s| s.step_key == "notify").unwrap();
        assert_eq!((send.sent, send.failed, send.dead_lettered), (1, 1, 0));

        let stats = c
            .destinations
            .get_function_stats(pb::GetFunctionStatsRequest {
                destination_id: "notify".to_owned(),
            })
            .await?
            .into_inner();
        assert!(stats.invocations >= 2, "{stats:?}");
        assert!(stats.errors["RetryError"] >= 1, "{stats:?}");
        assert!(!stats.errors.contains_key("ok"), "{stats:?}");
        assert!(stats.p50.is_some() && stats.p99.is_some(), "{stats:?}");
        let text = metrics(&stack).await?;
        assert!(
            series(
                &text,
                r#"journeys_function_invocations_total{destination="notify",outcome="ok"}"#
            ) >= 1.0
        );
        assert!(
            series(
                &text,
                r#"journeys_function_invocations_total{destination="notify",outcome="RetryError"}"#
            ) >= 1.0
        );
        assert!(
            series(
                &text,
                r#"journeys_function_duration_seconds_count{destination="notify"}"#
            ) >= 2.0
        );
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}

/// Throws, loops, allocates, reads a huge response, asks for modules or the process, or
/// fetches a blocked address, by the entry event's `mode`; else posts to `settings.url`.
const GUARDED: &str = r"
async function onTrack(event, settings) {
  const mode = event.properties.journey_context.probe.mode
  console.log('mode', mode)
  if (mode === 'invalid') throw new ValidationError('email is missing')
  if (mode === 'loop') { while (true) {} }
  if (mode === 'alloc') { return new Uint8Array(1024 * 1024 * 1024).length }
  if (mode === 'big') { await fetch(settings.big) }
  if (mode === 'fs') { return require('fs').readFileSync('/etc/passwd') }
  if (mode === 'exit') { process.exit(1) }
  if (mode === 'blocked') { await fetch('http://169.254.169.254/latest/meta-data/') }
  const res = await fetch(settings.url, { method: 'POST', body: JSON.stringify({ mode }) })
  if (!res.ok) throw new RetryError(`upstream ${res.status}`)
}
";

#[tokio::test]
async fn errors_and_limits_dead_letter_with_their_message_and_the_node_keeps_delivering()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        let big = Sink::start().await;
        big.answer_by_default(Reply::status(200).body("x".repeat(10 * 1024 * 1024)));
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;
        let key = c.create_source("app").await?;
        c.destinations
            .create_destination(function_destination(
                "guarded",
                GUARDED,
                &json!({"url": sink.url_at("/ok"), "big": big.url()}),
                &[],
            ))
            .await?;
        c.register_events(&["probe"]).await?;
        c.publish(&journey("probes", "probe", "mode", "guarded"))
            .await?;

        let expected = [
            ("invalid", "ValidationError: email is missing"),
            ("loop", "CpuLimitError: the function used more than its CPU time limit"),
            ("alloc", "MemoryLimitError: the function ran out of memory"),
            (
                "big",
                "TypeError: fetch http://127.0.0.1",
            ),
            ("fs", "require(\"fs\") is not available in destination functions"),
            ("exit", "ReferenceError: process is not defined"),
            ("blocked", "destination address refused: 169.254.169.254"),
        ];
        let events = expected
            .iter()
            .enumerate()
            .map(|(i, (mode, _))| track("u1", "probe", &format!("p-{i}"), &json!({"mode": mode})))
            .collect();
        send_accepted(&mut c.ingest, &key, events).await?;
        let letters = dead_letters_at_least(&c, "guarded", expected.len()).await;
        assert_eq!(letters.len(), expected.len(), "{letters:?}");
        for (mode, error) in expected {
            let letter = letters
                .iter()
                .find(|l| {
                    journeys_control_plane::convert::json::opt_struct_to_json(l.payload.as_ref())
                        ["properties"]["journey_context"]["probe"]["mode"]
                        == mode
                })
                .unwrap_or_else(|| panic!("no dead letter for {mode}: {letters:?}"));
            assert_eq!(letter.attempts, 1, "{mode}: final at once");
            assert!(
                letter.last_error.contains(error),
                "{mode}: {}",
                letter.last_error
            );
            assert!(
                letter.last_error.contains(&format!("logs:\nlog: mode {mode}")),
                "{mode}: the function's logs are kept with the dead letter: {}",
                letter.last_error
            );
        }
        let big_letter = letters
            .iter()
            .find(|l| l.last_error.contains(&big.url()))
            .unwrap();
        assert!(
            big_letter
                .last_error
                .contains("response body is larger than the limit of 1048576 bytes"),
            "{}",
            big_letter.last_error
        );
        assert_eq!(sink.count(), 0, "no failing mode got through to the sink");

        // The node is healthy: the next event is delivered.
        send_accepted(
            &mut c.ingest,
            &key,
            vec![track("u1", "probe", "p-ok", &json!({"mode": "ok"}))],
        )
        .await?;
        let got = sink.wait_for(1, Duration::from_secs(30)).await;
        assert_eq!(got[0].body, json!({"mode": "ok"}));
        assert_eq!(c.dead_letters("guarded").await?.len(), expected.len());

        // The sink answers before the invocation ends and is counted: wait for the count.
        let running = &stack;
        let text = eventually("the ok invocation counted", Duration::from_secs(10), || async move {
            let text = metrics(running).await?;
            let counted = series(
                &text,
                r#"journeys_function_invocations_total{destination="guarded",outcome="ok"}"#,
            ) >= 1.0;
            Ok::<_, anyhow::Error>(counted.then_some(text))
        })
        .await;
        for outcome in ["ValidationError", "CpuLimitError", "MemoryLimitError", "TypeError"] {
            assert!(
                series(
                    &text,
                    &format!(
                        r#"journeys_function_invocations_total{{destination="guarded",outcome="{outcome}"}}"#
                    )
                ) >= 1.0,
                "{outcome} counted"
            );
        }
        stack.stop().await?;
        sink.stop().await;
        big.stop().await;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn code_is_checked_secrets_stay_write_only_and_test_runs_report_what_happened()
-> anyhow::Result<()> {
    on_each_backend(|url| async move {
        let sink = Sink::start().await;
        sink.answer_by_default(Reply::status(202).body("{\"queued\":true}"));
        let stack = Stack::start(&url, StackOptions::default()).await?;
        let mut c = stack.clients().await?;

        // Bad code is refused with the field and the reason; nothing is stored.
        for (code, why) in [
            ("async function onTrack(e) {\n  return e.\n}", "SyntaxError"),
            ("function track() {}", "defines no handler"),
            ("", "required"),
            ("while (true) {}", "CpuLimitError"),
        ] {
            let err = c
                .destinations
                .create_destination(function_destination("f", code, &json!({}), &[]))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{code}");
            assert!(
                err.message().contains("destination.function.code") && err.message().contains(why),
                "{code}: {}",
                err.message()
            );
        }
        let mut both = function_destination("f", SEGMENT_EXAMPLE, &json!({}), &[]);
        both.destination.as_mut().unwrap().webhook = Some(pb::WebhookSettings {
            url: sink.url(),
            ..Default::default()
        });
        let err = c.destinations.create_destination(both).await.unwrap_err();
        assert!(err.message().contains("not both"), "{}", err.message());
        let listed = c
            .destinations
            .list_destinations(pb::ListDestinationsRequest::default())
            .await?
            .into_inner();
        assert!(listed.destinations.is_empty(), "{listed:?}");

        // Create, then update with the mask: the stored secret is kept and used.
        let code = r"
            async function onTrack(event, settings) {
              console.log('sending', event.userId)
              const res = await fetch(settings.url, { method: 'PUT', headers: { 'x-key': settings.key } })
              return { status: res.status, body: await res.json() }
            }";
        let created = c
            .destinations
            .create_destination(function_destination(
                "fn",
                code,
                &json!({"url": sink.url_at("/t")}),
                &[("key", "s3cret")],
            ))
            .await?
            .into_inner();
        let mut update = created.clone();
        update.name = "Renamed".to_owned();
        let updated = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(update),
            })
            .await?
            .into_inner();
        assert_eq!(updated.name, "Renamed");
        assert_eq!(updated.function.as_ref().unwrap().secrets["key"], "********");
        let mut to_webhook = updated.clone();
        to_webhook.function = None;
        to_webhook.webhook = Some(pb::WebhookSettings {
            url: sink.url(),
            ..Default::default()
        });
        let err = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(to_webhook),
            })
            .await
            .unwrap_err();
        assert!(
            err.message().contains("kind is fixed"),
            "{}",
            err.message()
        );
        let mut bare = updated.clone();
        bare.function = None;
        let err = c
            .destinations
            .update_destination(pb::UpdateDestinationRequest {
                destination: Some(bare),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("destination.function: required"),
            "{}",
            err.message()
        );
        let listed = c
            .destinations
            .list_destinations(pb::ListDestinationsRequest::default())
            .await?
            .into_inner();
        assert_eq!(listed.destinations.len(), 1);
        assert_eq!(listed.destinations[0].function.as_ref().unwrap().secrets["key"], "********");

        // TestFunction on the stored function: result, logs and fetches.
        let tested = c
            .destinations
            .test_function(pb::TestFunctionRequest {
                destination_id: "fn".to_owned(),
                payload: Some(json_to_struct(&json!({"type": "track", "userId": "u7"}))),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(tested.error.is_none(), "{tested:?}");
        assert_eq!(
            journeys_control_plane::convert::json::value_to_json(
                tested.result.as_ref().unwrap(),
                "result"
            )
            .unwrap(),
            json!({"status": 202, "body": {"queued": true}})
        );
        assert_eq!(tested.logs, ["log: sending u7"]);
        assert_eq!(tested.fetches.len(), 1);
        assert_eq!(
            (tested.fetches[0].method.as_str(), tested.fetches[0].status),
            ("PUT", 202)
        );
        assert_eq!(sink.requests()[0].header("x-key"), Some("s3cret"));

        // TestFunction on unsaved code: the thrown error with its name.
        let tested = c
            .destinations
            .test_function(pb::TestFunctionRequest {
                code: "async function onIdentify() { throw new InvalidEventPayload('no traits') }"
                    .to_owned(),
                payload: Some(json_to_struct(&json!({"type": "identify", "userId": "u7"}))),
                ..Default::default()
            })
            .await?
            .into_inner();
        let error = tested.error.unwrap();
        assert_eq!(
            (error.r#type.as_str(), error.message.as_str(), error.retryable),
            ("InvalidEventPayload", "no traits", false)
        );
        let err = c
            .destinations
            .test_function(pb::TestFunctionRequest {
                code: SEGMENT_EXAMPLE.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(err.message().contains("payload"), "{}", err.message());

        // SendTestEvent of a journey step that sends to the function runs it once.
        c.register_events(&["signed_up"]).await?;
        c.journeys
            .create_journey(journeys_tests::journey_request_from_json(&journey(
                "draft", "signed_up", "plan", "fn",
            ))?)
            .await?;
        let sent = c
            .journeys
            .send_test_event(pb::SendTestEventRequest {
                journey_id: "draft".to_owned(),
                step_key: "notify".to_owned(),
                sample_event: Some(track("u9", "signed_up", "t-1", &json!({"plan": "pro"}))),
                ..Default::default()
            })
            .await?
            .into_inner();
        let function = sent.function.unwrap();
        assert!(function.error.is_none(), "{function:?}");
        assert_eq!(function.logs, ["log: sending u9"]);
        assert_eq!(sent.body, r#"{"body":{"queued":true},"status":202}"#);
        assert_eq!(sink.count(), 2);

        // No published journey uses it: it can be deleted.
        c.destinations
            .delete_destination(pb::DeleteDestinationRequest { id: "fn".to_owned() })
            .await?;
        stack.stop().await?;
        sink.stop().await;
        Ok(())
    })
    .await
}
