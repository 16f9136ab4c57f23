//! [`DeliveryConfig`]: knobs of the dispatcher and the webhook client, with production defaults.

use std::time::Duration;

use journeys_store::WebhookSettings;

use crate::address::AddressPolicy;
use crate::function::FunctionLimits;
use crate::retry::RetryPolicy;

/// Settings of a [`crate::Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// When failed sends are retried and when they are dead-lettered.
    pub retry: RetryPolicy,
    /// Requests in flight at once, across destinations. Bounds memory and sockets; rows of one
    /// destination may go in parallel (per-send ordering is not promised by webhooks anyway),
    /// up to `max_in_flight_per_destination`.
    pub max_in_flight: usize,
    /// Requests in flight at once to one destination: its share of `max_in_flight`, so that a
    /// destination that hangs or answers slowly holds at most this many slots and the others
    /// keep theirs. Its further due rows wait in the outbox (unclaimed) until its sends end.
    pub max_in_flight_per_destination: usize,
    /// Rows claimed per store round trip (never more than the free in-flight slots). A claim is
    /// a store transaction, so hundreds at once rather than a few.
    pub claim_batch: u32,
    /// Most delivery outcomes recorded in one store statement (one `UPDATE … WHERE id IN (…)`
    /// for the delivered rows). Also how far recording may fall behind before deliveries wait.
    pub mark_batch: usize,
    /// Longest an outcome waits for others before it is recorded. A delivered row stays leased
    /// until then: a crash in that window sends it again after the lease, as a crash between a
    /// send and its mark always did.
    pub mark_delay: Duration,
    /// How long a claim keeps other dispatchers off a row, however long its dispatcher lives.
    /// Must exceed `max_timeout` so that a live send is never claimed twice. A dispatcher that
    /// dies mid-send frees its rows sooner, when its claimant lease (`claimant_ttl`) runs out;
    /// they are then delivered again with the same `Idempotency-Key`.
    pub lease: Duration,
    /// The node this dispatcher runs on (`--node-id`): recorded with its claimant lease, so an
    /// operator can tell whose claims are whose.
    pub node_id: String,
    /// How long this dispatcher's claimant lease lasts without renewal (renewed every third of
    /// it while the dispatcher runs). Its claims are its own while the lease runs; a killed
    /// process's claimed rows go to other dispatchers this long after its last renewal (plus
    /// their poll, `max_idle_wait`), instead of after `lease`. The dispatcher claims nothing
    /// while it cannot renew.
    pub claimant_ttl: Duration,
    /// Longest sleep without a wake-up: bounds how late a row committed by another process (or
    /// a retry that came due) is picked up.
    pub max_idle_wait: Duration,
    /// How long destination settings are reused before being read again.
    pub destination_cache_ttl: Duration,
    /// Request timeout of destinations that set none ([`WebhookSettings::DEFAULT_TIMEOUT`]
    /// unless a test shortens it).
    pub default_timeout: Duration,
    /// Upper bound on a destination's own timeout ([`WebhookSettings::MAX_TIMEOUT`]).
    pub max_timeout: Duration,
    /// Longest wait at shutdown for requests in flight; rows still unsent after it are freed
    /// for other dispatchers (delivered again, same `Idempotency-Key`). The outcomes not yet
    /// recorded are first given as long again to be written.
    pub shutdown_grace: Duration,
    /// Which addresses webhooks may reach: global ones only unless the operator allows more
    /// (`journeys dev` and tests with local sinks allow loopback).
    pub address_policy: AddressPolicy,
    /// Limits of destination functions and the size of their engine pool.
    pub functions: FunctionLimits,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_in_flight: 256,
            max_in_flight_per_destination: 192,
            claim_batch: 256,
            mark_batch: 500,
            mark_delay: Duration::from_millis(10),
            lease: Duration::from_secs(120),
            node_id: "journeys".to_owned(),
            claimant_ttl: Duration::from_secs(5),
            max_idle_wait: Duration::from_secs(1),
            destination_cache_ttl: Duration::from_secs(5),
            default_timeout: WebhookSettings::DEFAULT_TIMEOUT,
            max_timeout: WebhookSettings::MAX_TIMEOUT,
            shutdown_grace: Duration::from_secs(10),
            address_policy: AddressPolicy::default(),
            functions: FunctionLimits::default(),
        }
    }
}
