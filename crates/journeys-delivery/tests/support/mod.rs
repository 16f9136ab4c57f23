//! Test support of the delivery tests: fast retries, destinations and outbox rows, and waiting
//! for a row to change. The webhook sink is the test kit's.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use journeys_delivery::{AddressPolicy, DeliveryConfig, RetryPolicy};
use journeys_store::{Changes, OutboxRecord, OutboxStatus, Store, StoreError};
use journeys_testkit::eventually;
use journeys_testkit::journeys::webhook_destination;

/// Millisecond backoff so that retry tests take milliseconds, not seconds.
pub fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        retry: RetryPolicy {
            base_delay: Duration::from_millis(5),
            factor: 2,
            max_delay: Duration::from_millis(50),
            budget: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(5),
        },
        // The test sinks listen on loopback.
        address_policy: AddressPolicy::allow_loopback(),
        ..DeliveryConfig::default()
    }
}

/// Stores a webhook destination pointing at `url` and returns its id.
pub async fn destination(store: &Store, url: &str, extra: Value) -> String {
    let mut settings = json!({"url": url, "headers": {}, "timeout_ms": 5000});
    if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            settings.insert(k.clone(), v.clone());
        }
    }
    webhook_destination(store, settings).await
}

/// A pending send to `destination_id`, due now, whose payload carries its `messageId`.
pub fn outbox_row(destination_id: &str) -> OutboxRecord {
    let now = Utc::now();
    let message_id = format!("msg-{}", journeys_store::new_id());
    OutboxRecord {
        id: journeys_store::new_id(),
        instance_id: journeys_store::new_id(),
        profile_id: "user-1".to_owned(),
        journey_id: journeys_store::new_id(),
        step_key: "welcome-abc123".to_owned(),
        destination_id: destination_id.to_owned(),
        message_id: message_id.clone(),
        method: "POST".to_owned(),
        path: "/track".to_owned(),
        payload: json!({
            "type": "track",
            "event": "Welcome",
            "userId": "user-1",
            "messageId": message_id,
            "properties": {"plan": "pro"}
        }),
        status: OutboxStatus::Pending,
        attempts: 0,
        next_attempt_at: now,
        last_error: None,
        traceparent: None,
        created_at: now,
        sent_at: None,
        dead_at: None,
    }
}

/// Commits `rows` the way the data plane does: through the runtime's one transaction.
pub async fn enqueue(store: &Store, rows: Vec<OutboxRecord>) {
    store
        .batches()
        .commit(&Changes {
            outbox_new: rows,
            ..Changes::default()
        })
        .await
        .expect("commit outbox rows");
}

/// Polls the row until `done` holds, failing the test after `within`.
pub async fn wait_row(
    store: &Store,
    id: &str,
    within: Duration,
    done: impl Fn(&OutboxRecord) -> bool,
) -> OutboxRecord {
    eventually(
        "the outbox row to reach the expected state",
        within,
        || async {
            let row = store.outbox().get(id).await?;
            Ok::<_, StoreError>(done(&row).then_some(row))
        },
    )
    .await
}

/// Runs a dispatcher until the returned sender is dropped or fired.
pub fn spawn(
    dispatcher: journeys_delivery::Dispatcher,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(dispatcher.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}
