//! The engine against a real HTTP sink: handlers, `fetch`, errors, and every limit, each
//! followed by a normal invocation on the same pool (the process stays healthy).

use std::time::Duration;

use journeys_testkit::sink::{Reply, Sink};
use serde_json::{Value, json};

use super::*;
use crate::address::AddressPolicy;

/// The example of the issue, pasted as is.
const SEGMENT_EXAMPLE: &str = r"
async function onTrack(event, settings) {
  const res = await fetch(settings.url, {
    method: 'POST',
    headers: { Authorization: `Bearer ${settings.apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ email: event.properties.email, step: event.properties.journey_metadata.step_key })
  })
  if (res.status >= 500) throw new RetryError(`upstream ${res.status}`)
  if (!res.ok) throw new ValidationError(`rejected ${res.status}`)
}
";

fn limits() -> FunctionLimits {
    FunctionLimits {
        workers: 1,
        cpu_time: Duration::from_millis(300),
        memory_bytes: 32 * 1024 * 1024,
        ..FunctionLimits::default()
    }
}

fn pool(policy: AddressPolicy) -> FunctionRuntime {
    FunctionRuntime::start(limits(), &WebhookClient::new(4, policy))
}

fn track() -> Value {
    json!({
        "type": "track",
        "event": "Checkout Reminder",
        "messageId": "m-1",
        "userId": "u1",
        "properties": {
            "email": "a@example.com",
            "journey_metadata": {"step_key": "remind"}
        }
    })
}

fn invocation(code: &str, settings: Value) -> Invocation {
    Invocation {
        code: FunctionCode::new(code),
        payload: track(),
        settings,
        message_id: "m-1".to_owned(),
        timeout: Duration::from_secs(5),
    }
}

async fn run(pool: &FunctionRuntime, code: &str) -> InvocationReport {
    pool.invoke(invocation(code, json!({}))).await
}

fn error_of(report: &InvocationReport) -> &FunctionError {
    match &report.result {
        Err(err) => err,
        Ok(value) => panic!("expected an error, got {value:?} ({report:?})"),
    }
}

/// A function that works, run after a limit was hit: the pool still serves.
async fn still_healthy(pool: &FunctionRuntime) {
    let report = run(pool, "function onTrack(e) { return {ok: e.userId} }").await;
    assert_eq!(report.result, Ok(Some(json!({"ok": "u1"}))), "{report:?}");
}

#[tokio::test]
async fn the_segment_example_posts_and_maps_statuses_to_error_names() {
    let sink = Sink::start().await;
    sink.script([200, 503, 400]);
    let pool = pool(AddressPolicy::allow_loopback());
    let settings = json!({"url": sink.url_at("/in"), "apiKey": "k-123"});

    let ok = pool
        .invoke(invocation(SEGMENT_EXAMPLE, settings.clone()))
        .await;
    assert_eq!(ok.result, Ok(None), "{ok:?}");
    let got = sink.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, http::Method::POST);
    assert_eq!(got[0].path, "/in");
    assert_eq!(got[0].header("authorization"), Some("Bearer k-123"));
    assert_eq!(got[0].idempotency_key(), "m-1");
    assert_eq!(
        got[0].body,
        json!({"email": "a@example.com", "step": "remind"})
    );
    assert_eq!(
        ok.fetches,
        [FetchRecord {
            method: "POST".to_owned(),
            url: sink.url_at("/in"),
            status: Some(200),
            error: None
        }]
    );

    let retry = pool
        .invoke(invocation(SEGMENT_EXAMPLE, settings.clone()))
        .await;
    let err = error_of(&retry);
    assert_eq!(
        (err.name.as_str(), err.message.as_str(), err.class),
        ("RetryError", "upstream 503", ErrorClass::Retry)
    );

    let rejected = pool.invoke(invocation(SEGMENT_EXAMPLE, settings)).await;
    let err = error_of(&rejected);
    assert_eq!(
        (err.name.as_str(), err.message.as_str(), err.class),
        ("ValidationError", "rejected 400", ErrorClass::Final)
    );
}

#[tokio::test]
async fn results_logs_and_handlers_by_event_type() {
    let pool = pool(AddressPolicy::default());
    let code = r"
        const onIdentify = async (event, settings) => ({ traits: event.traits, region: settings.region });
        function onTrack(event) { console.log('track', event.event, { n: 1 }); console.warn('careful'); return 7; }
    ";
    let report = run(&pool, code).await;
    assert_eq!(report.result, Ok(Some(json!(7))));
    assert_eq!(
        report.logs,
        ["log: track Checkout Reminder {\"n\":1}", "warn: careful"]
    );
    let mut identify = invocation(code, json!({"region": "eu"}));
    identify.payload = json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}});
    let report = pool.invoke(identify).await;
    assert_eq!(
        report.result,
        Ok(Some(json!({"traits": {"plan": "pro"}, "region": "eu"})))
    );
    let mut page = invocation(code, json!({}));
    page.payload = json!({"type": "page", "userId": "u1"});
    let err = error_of(&pool.invoke(page).await).clone();
    assert_eq!(
        (err.name.as_str(), err.class),
        ("EventNotSupported", ErrorClass::Final)
    );
    assert_eq!(err.message, "onPage is not defined");
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_by_the_cpu_limit() {
    let pool = pool(AddressPolicy::default());
    let report = run(&pool, "function onTrack() { while (true) {} }").await;
    let err = error_of(&report);
    assert_eq!(
        (err.name.as_str(), err.class),
        ("CpuLimitError", ErrorClass::Final)
    );
    assert!(err.message.contains("CPU time limit of 300 ms"), "{err}");
    // Also when the loop catches what it can.
    let report = run(
        &pool,
        "function onTrack() { for (;;) { try { while (true) {} } catch (e) {} } }",
    )
    .await;
    assert_eq!(error_of(&report).name, "CpuLimitError");
    still_healthy(&pool).await;
}

#[tokio::test]
async fn a_gigabyte_allocation_is_stopped_by_the_memory_limit() {
    let pool = pool(AddressPolicy::default());
    for code in [
        "function onTrack() { const a = new Uint8Array(1024 * 1024 * 1024); return a.length; }",
        "function onTrack() { const a = []; while (true) { a.push('x'.repeat(1024 * 1024) + a.length); } }",
    ] {
        let report = run(&pool, code).await;
        let err = error_of(&report);
        assert_eq!(
            (err.name.as_str(), err.class),
            ("MemoryLimitError", ErrorClass::Final),
            "{code}: {err}"
        );
        assert!(err.message.contains("32 MiB"), "{err}");
        still_healthy(&pool).await;
    }
}

#[tokio::test]
async fn a_ten_megabyte_response_fails_the_fetch_with_a_clear_error() {
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(200).body("x".repeat(10 * 1024 * 1024)));
    let pool = pool(AddressPolicy::allow_loopback());
    let code = "async function onTrack(e, s) { const r = await fetch(s.url); return (await r.text()).length }";
    let report = pool
        .invoke(invocation(code, json!({"url": sink.url()})))
        .await;
    let err = error_of(&report);
    assert_eq!(
        (err.name.as_str(), err.class),
        ("TypeError", ErrorClass::Final)
    );
    assert!(
        err.message
            .contains("response body is larger than the limit of 1048576 bytes"),
        "{err}"
    );
    assert_eq!(report.fetches[0].status, None);
    // The function may catch it and go on.
    let caught = "async function onTrack(e, s) { try { await fetch(s.url) } catch (err) { return err.message } }";
    let report = pool
        .invoke(invocation(caught, json!({"url": sink.url()})))
        .await;
    assert!(
        matches!(&report.result, Ok(Some(Value::String(m))) if m.contains("larger than the limit")),
        "{report:?}"
    );
    still_healthy(&pool).await;
}

#[tokio::test]
async fn modules_process_and_blocked_addresses_fail_inside_the_function() {
    let sink = Sink::start().await;
    // The production policy: loopback is refused.
    let pool = pool(AddressPolicy::default());
    let report = run(
        &pool,
        "function onTrack() { return require('fs').readFileSync('/etc/passwd') }",
    )
    .await;
    let err = error_of(&report);
    assert_eq!(err.name, "Error");
    assert!(
        err.message.contains("require(\"fs\") is not available"),
        "{err}"
    );

    let report = run(&pool, "function onTrack() { process.exit(1) }").await;
    let err = error_of(&report);
    assert_eq!(
        (err.name.as_str(), err.message.as_str()),
        ("ReferenceError", "process is not defined")
    );

    for url in [
        sink.url(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://localhost:9/".to_owned(),
    ] {
        let code =
            "async function onTrack(e, s) { await fetch(s.url, {method: 'POST', body: 'x'}) }";
        let report = pool.invoke(invocation(code, json!({"url": url}))).await;
        let err = error_of(&report);
        assert_eq!(err.name, "TypeError", "{url}: {err}");
        assert!(err.message.contains("address refused"), "{url}: {err}");
        assert_eq!(report.fetches.len(), 1);
    }
    assert_eq!(sink.count(), 0, "nothing reached the blocked sink");
    still_healthy(&pool).await;
}

#[tokio::test]
async fn a_slow_fetch_times_out_and_is_retryable() {
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(200).delay(Duration::from_secs(30)));
    let pool = pool(AddressPolicy::allow_loopback());
    let mut slow = invocation(
        "async function onTrack(e, s) { await fetch(s.url) }",
        json!({"url": sink.url()}),
    );
    slow.timeout = Duration::from_millis(200);
    let report = pool.invoke(slow).await;
    let err = error_of(&report);
    assert_eq!(
        (err.name.as_str(), err.class),
        ("TimeoutError", ErrorClass::Retry)
    );
    still_healthy(&pool).await;
}

#[tokio::test]
async fn the_check_reports_compile_errors_and_missing_handlers() {
    let pool = pool(AddressPolicy::default());
    assert_eq!(
        pool.check(SEGMENT_EXAMPLE).await,
        Ok(vec!["onTrack".to_owned()])
    );
    let err = pool
        .check("async function onTrack(event) {\n  return event.\n}")
        .await
        .unwrap_err();
    assert_eq!(err.name, "SyntaxError");
    assert!(err.message.contains("function.js:3"), "{err}");
    let err = pool.check("function track() {}").await.unwrap_err();
    assert!(err.message.contains("defines no handler"), "{err}");
    let err = pool.check("while (true) {}").await.unwrap_err();
    assert_eq!(err.name, "CpuLimitError");
    still_healthy(&pool).await;
}

#[test]
fn handlers_follow_the_event_type() {
    assert_eq!(handler_for(&json!({"type": "identify"})), "onIdentify");
    assert_eq!(handler_for(&json!({"type": "Page"})), "onPage");
    assert_eq!(handler_for(&json!({"event": "x"})), "onTrack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_whose_fetches_hang_leaves_workers_to_the_others() {
    let slow = Sink::start().await;
    slow.answer_by_default(Reply::status(200).delay(Duration::from_secs(3)));
    let limits = FunctionLimits {
        workers: 4,
        ..limits()
    };
    assert_eq!(limits.share(), 3, "all but a quarter of the workers");
    let pool = FunctionRuntime::start(
        limits,
        &WebhookClient::new(16, AddressPolicy::allow_loopback()),
    );
    let hanging = "async function onTrack(e, s) { await fetch(s.url) }";
    let settings = json!({"url": slow.url()});
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            let call = invocation(hanging, settings.clone());
            tokio::spawn(async move { pool.invoke(call).await })
        })
        .collect();
    // Its share of the workers is busy waiting for the slow sink.
    slow.wait_for(3, Duration::from_secs(10)).await;

    // Another function still finds a worker while every hanging call is still waiting.
    still_healthy(&pool).await;
    assert!(
        calls.iter().all(|call| !call.is_finished()),
        "the other function ran before any hanging call ended"
    );
    for call in calls {
        let report = call.await.expect("joined");
        assert!(report.result.is_ok(), "{report:?}");
    }
    assert_eq!(
        slow.peak_concurrency(),
        3,
        "never more than its share at once"
    );
    slow.stop().await;
}
