//! Delivery of queued sends: the outbox dispatcher, the webhook client and the engine of
//! destination functions ([`function`]).
//!
//! The data plane and the scheduler commit outbox rows in the same transaction as the
//! transition that made them, then call [`Waker::wake`]. The [`Dispatcher`] claims due rows
//! with a lease, sends each as a JSON request (configured headers, `Idempotency-Key`,
//! `Journeys-Signature` when the destination has a secret, `traceparent`), and marks it sent,
//! schedules a retry ([`RetryPolicy`]: exponential backoff with full jitter, `Retry-After`
//! honoured) or dead-letters it (other 4xx at once; anything after the retry budget).
//!
//! ```no_run
//! # async fn demo(store: journeys_store::Store) {
//! use journeys_delivery::{DeliveryConfig, Dispatcher};
//!
//! let dispatcher = Dispatcher::new(store, DeliveryConfig::default());
//! let waker = dispatcher.waker(); // handed to whoever commits outbox rows
//! let task = tokio::spawn(dispatcher.run(std::future::pending()));
//! waker.wake();
//! # task.abort();
//! # }
//! ```

mod address;
mod client;
mod config;
mod destination;
mod dispatcher;
mod error;
pub mod function;
mod marker;
pub mod retry;
pub mod signature;

pub use address::{AddressDenied, AddressPolicy, LOOPBACK_ALLOW_LIST, ResolveError};
pub use config::DeliveryConfig;
pub use destination::{CREDENTIALS_MASK, mask_url_credentials};
pub use dispatcher::{
    DeliveryOutcome, Dispatcher, MAX_RESPONSE_BODY, TestOutcome, Waker, describe_invocation,
};
pub use error::DeliveryError;
pub use retry::RetryPolicy;
