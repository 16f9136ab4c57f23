//! The outbox dispatcher: claims due sends with a lease, in batches of up to `claim_batch`,
//! delivers them concurrently and records each outcome (sent, retry later, dead letter) through
//! the [`crate::marker`], which writes them in batches.
//!
//! It sleeps until the data plane wakes it after a commit, until the next retry comes due, or
//! for at most `max_idle_wait` (rows committed by other processes, expired leases). Delivery is
//! at least once: a dispatcher that dies between a send and its mark leaves the row claimed, and
//! the row is sent again with the same `Idempotency-Key` once the claim is free.
//!
//! **Claimant lease.** Each running dispatcher is a claimant: it names itself (a fresh id per
//! run) on its claims and keeps a lease of `claimant_ttl` in the store, renewed every third of
//! it. A claim is its dispatcher's while that lease runs (and the claim's own `lease` has not
//! passed); once the lease runs out — the process was killed or cut off from the store — any
//! other dispatcher takes the rows at once, so a dead process's queued sends go out within
//! seconds, not after the minutes-long claim lease. A dispatcher claims only while its own
//! lease runs, so rows are never claimed in a dead claimant's name. A clean shutdown records
//! every outcome it has, then frees the rows it still claims (sends cut off by the grace period)
//! and removes its lease, so others take those at once.
//!
//! Each attempt runs in a `webhook.deliver` span, child of the trace context stored with the row
//! (the transition that queued it), and the request carries that span's `traceparent`, so the
//! receiver's work joins the same trace. Outcomes and latencies go to
//! [`journeys_telemetry::metrics`] (`journeys_deliveries_total`,
//! `journeys_delivery_duration_seconds`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument as _;

use journeys_store::{OutboxMark, OutboxRecord, SendOf, Store};
use journeys_telemetry::{metrics, trace_context};

use crate::address::AddressPolicy;
use crate::client::{WebhookClient, WebhookRequest, WebhookResponse};
use crate::config::DeliveryConfig;
use crate::destination::{DestinationCache, FunctionDestination, Target, WebhookDestination};
use crate::error::DeliveryError;
use crate::function::{ErrorClass, FunctionRuntime, Invocation, InvocationReport};
use crate::marker::{self, MarkSender};
use crate::retry::{Decision, Failure, StatusClass, classify_status, parse_retry_after};

/// Response bytes kept for the caller of [`Dispatcher::deliver_once`] (and read, so that the
/// connection can go back to the pool, for outbox sends).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Response body characters quoted in a send's `last_error`.
const ERROR_EXCERPT_CHARS: usize = 512;
/// A function's last log lines kept in a send's `last_error` (and so with its dead letter).
const ERROR_LOG_LINES: usize = 20;
/// Longest `last_error` of a function invocation, logs included.
const ERROR_TEXT_CHARS: usize = 8 * 1024;
/// Pause after a failed claim, so that a store outage is not hammered.
const CLAIM_ERROR_PAUSE: Duration = Duration::from_millis(500);
/// How soon a claim is tried again after it passed over a free, due row that another
/// transaction held locked (`SKIP LOCKED`): about as long as a batch of marks takes to commit.
const SKIPPED_RECHECK: Duration = Duration::from_millis(10);
/// Claimant leases that ran out this long ago are removed when a dispatcher starts.
const CLAIMANT_PURGE_AFTER: Duration = Duration::from_secs(3600);

/// What a destination answered to a test delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// HTTP status.
    pub status: u16,
    /// Response body as text (invalid UTF-8 replaced), at most 64 KiB of it.
    pub body: String,
    /// Whether the body was longer than what is kept.
    pub truncated: bool,
    /// From sending the request to the end of the response.
    pub latency: Duration,
}

/// What a test send got: a webhook's response, or everything a function's run did.
#[derive(Debug, Clone, PartialEq)]
pub enum TestOutcome {
    Webhook(DeliveryOutcome),
    Function(InvocationReport),
}

/// Wakes the dispatcher: call [`Waker::wake`] right after committing outbox rows, so they are
/// delivered without waiting for a poll. Cheap to clone; wakes coalesce.
#[derive(Debug, Clone)]
pub struct Waker {
    notify: Arc<Notify>,
}

impl Waker {
    /// Makes the dispatcher look for due rows now (or as soon as its current round ends: a wake
    /// while it is busy is remembered, never lost).
    pub fn wake(&self) {
        self.notify.notify_one();
    }
}

/// Delivers outbox rows to webhook destinations. Cheap to clone: clones share the connection
/// pool, the destination cache and the wake-up signal. Run one [`Dispatcher::run`] per process;
/// any number of processes may run against one store (claims are leased).
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: DeliveryConfig,
    client: WebhookClient,
    /// Started on first use, on the Tokio runtime that first needs it.
    functions: OnceLock<FunctionRuntime>,
    destinations: DestinationCache,
    notify: Arc<Notify>,
    claimant: Claimant,
    /// Sends in flight per destination id (only those with any).
    busy: Mutex<HashMap<String, usize>>,
}

impl Inner {
    fn busy(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The destinations with their whole share in flight.
    fn saturated(&self) -> Vec<String> {
        let cap = self.config.max_in_flight_per_destination.max(1);
        self.busy()
            .iter()
            .filter(|(_, n)| **n >= cap)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// One send in flight to a destination, counted in its share until dropped (the delivery ended
/// or was cut off). A destination that had its whole share in flight and drops to three
/// quarters of it wakes the dispatcher to claim its waiting rows, in a batch rather than one
/// per finished send.
struct Slot {
    inner: Arc<Inner>,
    destination: String,
}

impl Slot {
    /// Takes a slot of `destination`'s share; `None` when the share is in flight already.
    fn take(inner: &Arc<Inner>, destination: &str) -> Option<Slot> {
        let cap = inner.config.max_in_flight_per_destination.max(1);
        let mut busy = inner.busy();
        let n = busy.entry(destination.to_owned()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            inner: Arc::clone(inner),
            destination: destination.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let cap = self.inner.config.max_in_flight_per_destination.max(1);
        let mut busy = self.inner.busy();
        let Some(n) = busy.get_mut(&self.destination) else {
            return;
        };
        *n = n.saturating_sub(1);
        let left = *n;
        if left == 0 {
            busy.remove(&self.destination);
        }
        drop(busy);
        if left + (cap / 4).max(1) == cap {
            self.inner.notify.notify_one();
        }
    }
}

/// This dispatcher as a claimant: its id on claims and how long its lease is known to run.
#[derive(Debug)]
struct Claimant {
    /// Fresh for every dispatcher: a restarted process never passes for its dead predecessor.
    id: String,
    /// The start of the last successful renewal plus `claimant_ttl`, on this host's monotonic
    /// clock: never later than the lease in the store, which counts from when the renewal
    /// arrived.
    valid_until: Mutex<Option<Instant>>,
}

impl Claimant {
    /// The id to claim under, while the lease runs.
    fn leased(&self) -> Option<&str> {
        let valid_until = *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        valid_until
            .is_some_and(|until| until > Instant::now())
            .then_some(self.id.as_str())
    }

    fn set_valid_until(&self, until: Option<Instant>) {
        *self
            .valid_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }
}

/// Aborts the task when dropped: a dispatcher's run dropped mid-way (its task aborted) stops
/// renewing its claimant lease with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Dispatcher {
    /// A dispatcher over `store`'s outbox.
    #[must_use]
    pub fn new(store: Store, config: DeliveryConfig) -> Self {
        if config.lease <= config.max_timeout {
            tracing::warn!(
                lease_ms = config.lease.as_millis(),
                max_timeout_ms = config.max_timeout.as_millis(),
                "delivery lease not longer than the request timeout: a slow send may be \
                 claimed and sent again while still in flight"
            );
        }
        let client = WebhookClient::new(config.max_in_flight.max(1), config.address_policy.clone());
        let destinations = DestinationCache::new(
            config.destination_cache_ttl,
            config.default_timeout,
            config.max_timeout,
        );
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                client,
                functions: OnceLock::new(),
                destinations,
                notify: Arc::new(Notify::new()),
                claimant: Claimant {
                    id: journeys_store::new_id(),
                    valid_until: Mutex::new(None),
                },
                busy: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The address policy sends go out under (the control plane checks new destinations
    /// against it too).
    #[must_use]
    pub fn address_policy(&self) -> &AddressPolicy {
        self.inner.client.policy()
    }

    /// The engine pool that runs destination functions (started on first use; call inside a
    /// Tokio runtime). The control plane checks new code with it.
    #[must_use]
    pub fn functions(&self) -> &FunctionRuntime {
        self.inner.functions.get_or_init(|| {
            FunctionRuntime::start(self.inner.config.functions.clone(), &self.inner.client)
        })
    }

    /// Runs function `function` once on `payload`, and records the invocation's metrics.
    async fn invoke(
        &self,
        function: &FunctionDestination,
        payload: &Value,
        message_id: &str,
    ) -> InvocationReport {
        let report = self
            .functions()
            .invoke(Invocation {
                code: function.code.clone(),
                payload: payload.clone(),
                settings: function.settings.clone(),
                message_id: message_id.to_owned(),
                timeout: function.timeout,
            })
            .await;
        let m = metrics::metrics();
        let outcome = match &report.result {
            Ok(_) => "ok",
            Err(err) => err.name.as_str(),
        };
        m.function_invocations.add(&[&function.id, outcome], 1);
        m.function_duration
            .observe(&[&function.id], report.duration);
        report
    }

    /// A handle that wakes [`Dispatcher::run`].
    #[must_use]
    pub fn waker(&self) -> Waker {
        Waker {
            notify: Arc::clone(&self.inner.notify),
        }
    }

    /// Delivers due rows until `shutdown` completes, then waits up to `shutdown_grace` for the
    /// requests in flight and as long again for their outcomes to be recorded. Rows cut off by
    /// the end of the grace period are freed for other dispatchers at once (delivered again,
    /// same `Idempotency-Key`). Dropping the future instead (an aborted task, a killed process)
    /// leaves them to other dispatchers once the claimant lease runs out.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let config = &self.inner.config;
        self.purge_claimants().await;
        self.renew_claimant().await;
        let keeper = AbortOnDrop(tokio::spawn(self.clone().keep_claimant_lease()));
        let (marks, marker) = marker::start(
            self.inner.store.clone(),
            Arc::clone(&self.inner.notify),
            config.mark_batch,
            config.mark_delay,
        );
        let mut in_flight: JoinSet<()> = JoinSet::new();
        self.deliver_until(shutdown, &marks, &mut in_flight).await;
        tracing::info!(in_flight = in_flight.len(), "delivery dispatcher stopping");
        self.drain(&mut in_flight).await;
        // The marker ends once it has written what the last senders gave it.
        drop(marks);
        self.finish_marks(marker).await;
        drop(keeper);
        self.retire_claimant().await;
    }

    /// Renews the claimant lease every third of `claimant_ttl`, for as long as it runs.
    async fn keep_claimant_lease(self) {
        let every = self.inner.config.claimant_ttl / 3;
        loop {
            tokio::time::sleep(every).await;
            self.renew_claimant().await;
        }
    }

    /// One renewal of the claimant lease; on failure the dispatcher stops claiming once the
    /// last renewal's lease runs out.
    async fn renew_claimant(&self) {
        let inner = &self.inner;
        let started = Instant::now();
        match inner
            .store
            .outbox()
            .lease_claimant(
                &inner.claimant.id,
                &inner.config.node_id,
                inner.config.claimant_ttl,
            )
            .await
        {
            Ok(()) => inner
                .claimant
                .set_valid_until(Some(started + inner.config.claimant_ttl)),
            Err(err) => tracing::warn!(
                error = %err,
                claimant = %inner.claimant.id,
                "could not renew the delivery claimant lease; no new claims once it runs out"
            ),
        }
    }

    /// Removes the leases of claimants dead for an hour (killed processes); their claims are
    /// free already.
    async fn purge_claimants(&self) {
        if let Err(err) = self
            .inner
            .store
            .outbox()
            .purge_claimants(CLAIMANT_PURGE_AFTER)
            .await
        {
            tracing::warn!(error = %err, "could not remove old delivery claimants");
        }
    }

    /// Frees what this dispatcher still claims and removes its lease (a clean stop).
    async fn retire_claimant(&self) {
        let inner = &self.inner;
        inner.claimant.set_valid_until(None);
        match inner
            .store
            .outbox()
            .retire_claimant(&inner.claimant.id)
            .await
        {
            Ok(0) => {}
            Ok(freed) => tracing::info!(freed, "freed unsent claimed rows for other dispatchers"),
            Err(err) => tracing::warn!(
                error = %err,
                "could not free claimed rows; others take them when the claimant lease runs out"
            ),
        }
    }

    /// The dispatch loop: claims and starts deliveries until `shutdown` completes.
    async fn deliver_until(
        &self,
        shutdown: impl Future<Output = ()>,
        marks: &MarkSender,
        in_flight: &mut JoinSet<()>,
    ) {
        let config = &self.inner.config;
        let max_in_flight = config.max_in_flight.max(1);
        // Under load, claim in batches instead of one row per finished delivery: each claim is
        // a store transaction.
        let min_claim = (max_in_flight / 4).max(1);
        let mut shutdown = pin!(shutdown);
        tracing::info!(max_in_flight, "delivery dispatcher started");
        loop {
            while let Some(joined) = in_flight.try_join_next() {
                log_join(joined);
            }
            let free = max_in_flight.saturating_sub(in_flight.len());
            let full = free < min_claim;
            let wake_at = if full {
                // Only finished deliveries (or shutdown) let us continue.
                None
            } else {
                let limit = u32::try_from(free)
                    .unwrap_or(u32::MAX)
                    .min(config.claim_batch.max(1));
                Some(self.claim_and_spawn(limit, marks, in_flight).await)
            };
            let sleep = tokio::time::sleep_until(wake_at.unwrap_or_else(far_future));
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(joined) = in_flight.join_next(), if full => log_join(joined),
                () = self.inner.notify.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Waits up to `shutdown_grace` for the deliveries in flight, then cuts off the rest.
    async fn drain(&self, in_flight: &mut JoinSet<()>) {
        let drain = async {
            while let Some(joined) = in_flight.join_next().await {
                log_join(joined);
            }
        };
        if tokio::time::timeout(self.inner.config.shutdown_grace, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                abandoned = in_flight.len(),
                "deliveries still in flight after the shutdown grace period; they will be \
                 sent again by another dispatcher"
            );
            in_flight.abort_all();
            // Cancelled tasks drop their mark senders as they end.
            while in_flight.join_next().await.is_some() {}
        }
    }

    /// Waits up to `shutdown_grace` for the marker to record the outcomes it still holds.
    async fn finish_marks(&self, mut marker: tokio::task::JoinHandle<()>) {
        match tokio::time::timeout(self.inner.config.shutdown_grace, &mut marker).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(error = %err, "delivery marker failed; unrecorded rows are sent \
                    again after their lease");
            }
            Err(_elapsed) => {
                tracing::warn!(
                    "delivery outcomes still unrecorded after the shutdown grace period; their \
                     rows are sent again after their lease"
                );
                marker.abort();
            }
        }
    }

    /// Claims up to `limit` due rows, starts their deliveries, and says when to look again.
    async fn claim_and_spawn(
        &self,
        limit: u32,
        marks: &MarkSender,
        in_flight: &mut JoinSet<()>,
    ) -> Instant {
        let config = &self.inner.config;
        let outbox = self.inner.store.outbox();
        let Some(claimant) = self.inner.claimant.leased() else {
            // Claims in the name of a lapsed claimant would be free for others at once.
            tracing::debug!("no claimant lease; not claiming");
            return Instant::now() + CLAIM_ERROR_PAUSE;
        };
        let now = Utc::now();
        let saturated = self.inner.saturated();
        let rows = match outbox
            .claim_due_by(
                now,
                limit,
                now + to_chrono(config.lease),
                claimant,
                &saturated,
            )
            .await
        {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = %err, "could not claim outbox rows");
                return Instant::now() + CLAIM_ERROR_PAUSE;
            }
        };
        let claimed = rows.len();
        let mut over_share = Vec::new();
        for row in rows {
            let Some(slot) = Slot::take(&self.inner, &row.destination_id) else {
                over_share.push(row.id);
                continue;
            };
            let this = self.clone();
            let marks = marks.clone();
            in_flight.spawn(async move {
                this.deliver_row(row, marks).await;
                drop(slot);
            });
        }
        if claimed > 0 {
            tracing::debug!(
                claimed,
                over_share = over_share.len(),
                "claimed outbox rows"
            );
        }
        if !over_share.is_empty() {
            // Rows past their destination's share go back at once; the next claim leaves that
            // destination out and finds other destinations' due rows.
            if let Err(err) = outbox.unclaim(&over_share, claimant).await {
                tracing::warn!(error = %err, "could not give back claimed rows; they are claimed again after their lease");
            }
            return Instant::now();
        }
        if u32::try_from(claimed).is_ok_and(|n| n >= limit) {
            // A full batch: more rows are probably due.
            return Instant::now();
        }
        let idle = Instant::now() + config.max_idle_wait;
        match outbox.next_claimable_at(now, &saturated).await {
            // Due after the claim looked: sleep until then.
            Ok(Some(due)) if due > now => {
                let wait = (due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                idle.min(Instant::now() + wait)
            }
            // Free and due, yet the claim passed over it: a write in progress (a mark, a
            // purge) held its lock. Look again once that write has ended.
            Ok(Some(_)) => Instant::now() + SKIPPED_RECHECK,
            // Nothing free: the rest is claimed (in flight here or elsewhere). A delivery ends
            // in a mark or a retry (which wakes us); a lapsed claim is found by the idle poll.
            Ok(None) => idle,
            Err(err) => {
                tracing::warn!(error = %err, "could not read the next claimable outbox row");
                idle
            }
        }
    }

    /// Delivers one claimed row and hands its outcome to the marker, in a span continuing the
    /// row's trace.
    async fn deliver_row(self, row: OutboxRecord, marks: MarkSender) {
        let span = tracing::info_span!(
            "webhook.deliver",
            otel.kind = "client",
            outbox_id = %row.id,
            destination_id = %row.destination_id,
            attempt = row.attempts.saturating_add(1),
            http.status_code = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        if let Some(parent) = &row.traceparent {
            trace_context::set_parent_traceparent(&span, parent);
        }
        self.deliver_row_in_span(row, &marks).instrument(span).await;
    }

    async fn deliver_row_in_span(self, row: OutboxRecord, marks: &MarkSender) {
        let inner = &self.inner;
        let destination = match inner
            .destinations
            .get(&inner.store, &row.destination_id)
            .await
        {
            Ok(destination) => destination,
            Err(DeliveryError::Store(err)) => {
                // Not the send's fault: leave the row leased; it is tried again after the lease.
                tracing::warn!(outbox_id = %row.id, error = %err, "could not read destination");
                return;
            }
            Err(err) => {
                dead_letter(&row, row.attempts, err.to_string(), marks).await;
                return;
            }
        };
        let attempts = row.attempts.saturating_add(1);
        let failed = match &*destination {
            Target::Webhook(webhook) => self.deliver_webhook(webhook, &row, attempts, marks).await,
            Target::Function(function) => {
                self.deliver_function(function, &row, attempts, marks).await
            }
        };
        let Some((failure, error)) = failed else {
            return;
        };
        let now = Utc::now();
        let decision = inner.config.retry.decide(
            failure,
            u32::try_from(attempts).unwrap_or(u32::MAX),
            budget_start(&row, now),
            now,
            &mut rand::rng(),
        );
        match decision {
            Decision::RetryAt(at) => schedule_retry(&row, attempts, at, error, marks).await,
            Decision::DeadLetter => dead_letter(&row, attempts, error, marks).await,
        }
    }

    /// One attempt to a webhook: `None` once delivered (and marked), else why it failed.
    async fn deliver_webhook(
        &self,
        destination: &WebhookDestination,
        row: &OutboxRecord,
        attempts: i32,
        marks: &MarkSender,
    ) -> Option<(Failure, String)> {
        let sent = self.attempt(destination, row).await;
        let now = Utc::now();
        Some(match sent {
            Ok(response) => match classify_status(response.status.as_u16()) {
                StatusClass::Delivered => {
                    tracing::debug!(
                        status = response.status.as_u16(),
                        latency_ms = response.latency.as_secs_f64() * 1000.0,
                        "webhook answered"
                    );
                    mark_sent(row, attempts, marks).await;
                    return None;
                }
                StatusClass::Retryable => (
                    Failure::Transient {
                        retry_after: response
                            .retry_after
                            .as_deref()
                            .and_then(|v| parse_retry_after(v, now)),
                    },
                    describe(&response),
                ),
                StatusClass::Final => (Failure::Permanent, describe(&response)),
            },
            Err(err) if err.is_transient() => {
                (Failure::Transient { retry_after: None }, err.to_string())
            }
            Err(err) => (Failure::Permanent, err.to_string()),
        })
    }

    /// One invocation of a function: `None` once it returned (and the row is marked sent),
    /// else why it failed: a `RetryError` or a timeout is transient, anything else final.
    async fn deliver_function(
        &self,
        function: &FunctionDestination,
        row: &OutboxRecord,
        attempts: i32,
        marks: &MarkSender,
    ) -> Option<(Failure, String)> {
        let report = self.invoke(function, &row.payload, &row.message_id).await;
        let Err(err) = &report.result else {
            tracing::debug!(
                duration_ms = report.duration.as_secs_f64() * 1000.0,
                fetches = report.fetches.len(),
                "function returned"
            );
            mark_sent(row, attempts, marks).await;
            return None;
        };
        let failure = match err.class {
            ErrorClass::Retry => Failure::Transient { retry_after: None },
            ErrorClass::Final => Failure::Permanent,
        };
        Some((failure, describe_invocation(&report)))
    }

    /// Sends the row's request once and records its latency and status on the current span.
    async fn attempt(
        &self,
        destination: &WebhookDestination,
        row: &OutboxRecord,
    ) -> Result<WebhookResponse, DeliveryError> {
        let body = serde_json::to_vec(&row.payload).map_err(|err| {
            DeliveryError::InvalidRequest(format!("payload does not serialize: {err}"))
        })?;
        // This attempt's span when traced; else the stored context, passed on as it came.
        let traceparent = trace_context::current_traceparent().or_else(|| row.traceparent.clone());
        let sending = std::time::Instant::now();
        let sent = self
            .inner
            .client
            .send(WebhookRequest {
                destination,
                method: &row.method,
                path: &row.path,
                body: Bytes::from(body),
                message_id: &row.message_id,
                traceparent: traceparent.as_deref(),
                now: Utc::now(),
                body_limit: MAX_RESPONSE_BODY,
            })
            .await;
        metrics::metrics()
            .delivery_duration
            .observe(sending.elapsed());
        if let Ok(response) = &sent {
            tracing::Span::current().record("http.status_code", response.status.as_u16());
        }
        sent
    }

    /// Sends one request to `destination_id` right away, with no retries and no outbox row, and
    /// returns whatever the destination answered (any status). For "send test event".
    ///
    /// The destination is read fresh, so an edit just made is what gets tested.
    ///
    /// # Errors
    /// [`DeliveryError::UnknownDestination`], [`DeliveryError::InvalidDestination`],
    /// [`DeliveryError::InvalidRequest`] (bad method or path), [`DeliveryError::Timeout`],
    /// [`DeliveryError::Transport`], [`DeliveryError::AddressDenied`] (nothing was sent),
    /// [`DeliveryError::Store`].
    pub async fn deliver_once(
        &self,
        destination_id: &str,
        method: &str,
        path: &str,
        payload: &Value,
        message_id: &str,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        match self
            .send_test(destination_id, method, path, payload, message_id)
            .await?
        {
            TestOutcome::Webhook(outcome) => Ok(outcome),
            TestOutcome::Function(_) => Err(DeliveryError::InvalidRequest(format!(
                "destination {destination_id} is a function, not a webhook"
            ))),
        }
    }

    /// Delivers `payload` to `destination_id` once, with no retries and no outbox row: a
    /// webhook gets one request (any status is an answer), a function one invocation (its
    /// result, error, logs and fetches). For "send test event".
    ///
    /// The destination is read fresh, so an edit just made is what gets tested.
    ///
    /// # Errors
    /// As [`Dispatcher::deliver_once`]; a function's own failure is part of its report.
    pub async fn send_test(
        &self,
        destination_id: &str,
        method: &str,
        path: &str,
        payload: &Value,
        message_id: &str,
    ) -> Result<TestOutcome, DeliveryError> {
        let inner = &self.inner;
        let destination = inner
            .destinations
            .refresh(&inner.store, destination_id)
            .await?;
        let destination = match &*destination {
            Target::Webhook(webhook) => webhook,
            Target::Function(function) => {
                return Ok(TestOutcome::Function(
                    self.invoke(function, payload, message_id).await,
                ));
            }
        };
        let body = serde_json::to_vec(payload)
            .map_err(|e| DeliveryError::InvalidRequest(format!("payload: {e}")))?;
        let response = inner
            .client
            .send(WebhookRequest {
                destination,
                method,
                path,
                body: Bytes::from(body),
                message_id,
                traceparent: None,
                now: Utc::now(),
                body_limit: MAX_RESPONSE_BODY + 1,
            })
            .await?;
        let truncated = response.body.len() > MAX_RESPONSE_BODY;
        let kept = &response.body[..response.body.len().min(MAX_RESPONSE_BODY)];
        Ok(TestOutcome::Webhook(DeliveryOutcome {
            status: response.status.as_u16(),
            body: String::from_utf8_lossy(kept).into_owned(),
            truncated,
            latency: response.latency,
        }))
    }
}

async fn schedule_retry(
    row: &OutboxRecord,
    attempts: i32,
    at: DateTime<Utc>,
    error: String,
    marks: &MarkSender,
) {
    metrics::metrics().deliveries.add(&["retry"], 1);
    tracing::Span::current().record("outcome", "retry");
    tracing::info!(
        outbox_id = %row.id,
        destination_id = %row.destination_id,
        message_id = %row.message_id,
        attempts,
        retry_at = %at,
        error = %error,
        "delivery failed; will retry"
    );
    marks
        .send(OutboxMark::Retry {
            id: row.id.clone(),
            send: Some(SendOf::of(row)),
            attempts,
            next_attempt_at: at,
            last_error: error,
        })
        .await;
}

async fn mark_sent(row: &OutboxRecord, attempts: i32, marks: &MarkSender) {
    metrics::metrics().deliveries.add(&["sent"], 1);
    tracing::Span::current().record("outcome", "sent");
    tracing::debug!(
        outbox_id = %row.id,
        destination_id = %row.destination_id,
        message_id = %row.message_id,
        attempts,
        "delivered"
    );
    marks
        .send(OutboxMark::Sent {
            id: row.id.clone(),
            send: Some(SendOf::of(row)),
        })
        .await;
}

async fn dead_letter(row: &OutboxRecord, attempts: i32, error: String, marks: &MarkSender) {
    metrics::metrics().deliveries.add(&["dead"], 1);
    tracing::Span::current().record("outcome", "dead");
    tracing::warn!(
        outbox_id = %row.id,
        destination_id = %row.destination_id,
        message_id = %row.message_id,
        attempts,
        error,
        "delivery dead-lettered"
    );
    marks
        .send(OutboxMark::Dead {
            id: row.id.clone(),
            send: Some(SendOf::of(row)),
            attempts,
            last_error: error,
        })
        .await;
}

/// When the retry budget of `row` started. A new row is claimed right after its commit, so its
/// creation stands for its first attempt. A row with no attempts recorded is on its first
/// attempt now: that also covers a replayed dead letter (replay resets the attempts), whose first
/// failure is retried however old the row is. The outbox keeps no first-attempt time, so from
/// the second failure on a replayed row is measured from its creation again.
fn budget_start(row: &OutboxRecord, now: DateTime<Utc>) -> DateTime<Utc> {
    if row.attempts == 0 {
        now
    } else {
        row.created_at
    }
}

/// `HTTP 503: <body excerpt>`, for `last_error`.
fn describe(response: &WebhookResponse) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let excerpt: String = text.trim().chars().take(ERROR_EXCERPT_CHARS).collect();
    if excerpt.is_empty() {
        format!("HTTP {}", response.status.as_u16())
    } else {
        format!("HTTP {}: {excerpt}", response.status.as_u16())
    }
}

/// A failed invocation for `last_error`: the error, the fetches made and the last log lines,
/// at most [`ERROR_TEXT_CHARS`] characters.
#[must_use]
pub fn describe_invocation(report: &InvocationReport) -> String {
    use std::fmt::Write as _;
    let mut text = match &report.result {
        Ok(_) => "returned".to_owned(),
        Err(err) => err.to_string(),
    };
    for fetch in &report.fetches {
        let _ = match (&fetch.status, &fetch.error) {
            (Some(status), _) => write!(text, "\nfetch {} {} -> {status}", fetch.method, fetch.url),
            (None, Some(error)) => {
                write!(text, "\nfetch {} {} -> {error}", fetch.method, fetch.url)
            }
            (None, None) => write!(text, "\nfetch {} {} -> no answer", fetch.method, fetch.url),
        };
    }
    let skip = report.logs.len().saturating_sub(ERROR_LOG_LINES);
    if !report.logs.is_empty() {
        text.push_str("\nlogs:");
        if skip > 0 {
            let _ = write!(text, "\n({skip} earlier lines not shown)");
        }
        for line in &report.logs[skip..] {
            text.push('\n');
            text.push_str(line);
        }
    }
    if text.chars().count() > ERROR_TEXT_CHARS {
        text = text.chars().take(ERROR_TEXT_CHARS).collect();
        text.push('…');
    }
    text
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(error = %err, "delivery task panicked; the row is retried after its lease");
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(24 * 60 * 60)
}

fn to_chrono(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}
