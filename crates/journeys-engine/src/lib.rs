//! The evaluator runtime shared by the data plane and the scheduler.
//!
//! Ingestion front ends (gRPC stream, unary calls, the Segment-compatible HTTP API) hand
//! validated events to an [`EventSink`]; the engine applies them per profile, in order, in
//! micro-batched transactions, and acknowledges each event only after its effects committed.
//! The scheduler fires due timers through [`Engine::apply_timers`], which uses the same lanes
//! and the same transaction shape, so an event and a timer of one instance never both apply.
//!
//! What an event, a timer or an operator exit does to a profile is decided by the core's
//! [`journeys_core::profile::apply`] (the function `SimulateJourney` runs too); the engine
//! does the I/O around it and turns its effects into rows.
//!
//! An engine with [`EngineConfig::owner`] set is a partition owner (SCALE-OUT.md §1–2): it
//! applies only the profile partitions it holds (others are answered `unavailable`), opens
//! every commit with the epoch fence, and keeps its profiles in memory between batches, so a
//! warm event needs no store read. One process running every role owns every partition.
//!
//! Decisions where SPEC.md is silent (details in the modules):
//! - The per-profile instance limit counts instances that stay active after their entry
//!   transition; an event that would start an instance past it is rejected whole with code
//!   [`TOO_MANY_INSTANCES`] (nothing of it is stored, so it can be sent again once instances
//!   have ended), and the refused entry is logged and counted (`too_many_instances`). See
//!   [`journeys_core::profile`].
//! - Rate-limited and otherwise rejected events are not stored (no dedupe key), so a client
//!   may resend them; duplicates do not use up the rate limit.
//! - Beyond [`EngineConfig::max_in_flight_events`] submitted-but-uncommitted events, new
//!   events are rejected with `overloaded` rather than queued without bound.
//! - Catalog `last_seen` and dedupe `seen_at` are the processing time, not the client's
//!   `timestamp`.
//! - Timer rows are keyed by a UUID-shaped hash of the core's deterministic timer id (the
//!   store's id column holds 36 characters).
//!
//! ```no_run
//! # async fn demo(store: journeys_store::Store, events: Vec<journeys_core::model::Event>) {
//! use journeys_engine::{Engine, EngineConfig};
//!
//! let engine = Engine::start(store, EngineConfig::default(), None);
//! let acks = engine.submit(events).await;
//! # let _ = acks;
//! engine.shutdown().await;
//! # }
//! ```

mod ack;
mod cache;
mod catalog;
mod changes;
mod config;
#[cfg(test)]
mod conflict_tests;
mod engine;
mod error;
mod job;
mod lane;
mod links;
mod log;
mod owner_cache;
mod ownership;
mod plan;
mod profile;
mod rate_limit;
mod stats;
mod watermark;

pub use ack::{
    Ack, AckStatus, EventSink, INTERNAL, OVERLOADED, RATE_LIMITED, TOO_MANY_INSTANCES,
    TRAITS_LIMIT, UNAVAILABLE,
};
pub use config::{Clock, DEFAULT_MAX_INSTANCE_LIFETIME, EngineConfig};
pub use engine::Engine;
pub use error::EngineError;
pub use job::{TerminateOutcome, TimerOutcome, TimerStatus};
/// The per-instance limits of the rules, re-exported for whoever configures an engine.
pub use journeys_core::machine::InstanceLimits;
/// The limits of a profile's traits, re-exported for whoever configures an engine.
pub use journeys_core::profile::traits::TraitLimits;
/// The partition log on NATS JetStream, re-exported for whoever starts a logged engine.
pub use journeys_log::{LogConfig, LogError, PartitionLog};
pub use lane::OnCommit;
pub use log::{FrontConfig, LogFront};
pub use ownership::{LIVE_WINDOW, OwnerConfig, default_node_id};
pub use stats::EngineStats;
