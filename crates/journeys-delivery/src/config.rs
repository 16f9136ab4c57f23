//! [`DeliveryConfig`]: knobs of the dispatcher and the webhook client, with production defaults.

use std::time::Duration;

use journeys_store::WebhookSettings;

use crate::retry::RetryPolicy;

/// Settings of a [`crate::Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// When failed sends are retried and when they are dead-lettered.
    pub retry: RetryPolicy,
    /// Requests in flight at once, across destinations. Bounds memory and sockets; rows of one
    /// destination may go in parallel (per-send ordering is not promised by webhooks anyway).
    pub max_in_flight: usize,
    /// Rows claimed per store round trip (never more than the free in-flight slots).
    pub claim_batch: u32,
    /// How long a claim keeps other dispatchers off a row. A dispatcher that dies mid-send loses
    /// its rows for this long, after which they are delivered again (same `Idempotency-Key`).
    /// Must exceed `max_timeout` so that a live send is never claimed twice.
    pub lease: Duration,
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
    /// Longest wait at shutdown for requests in flight; rows still unsent after it are
    /// delivered again once their lease expires.
    pub shutdown_grace: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            max_in_flight: 64,
            claim_batch: 64,
            lease: Duration::from_secs(120),
            max_idle_wait: Duration::from_secs(1),
            destination_cache_ttl: Duration::from_secs(5),
            default_timeout: WebhookSettings::DEFAULT_TIMEOUT,
            max_timeout: WebhookSettings::MAX_TIMEOUT,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
