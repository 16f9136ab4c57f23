//! The Journeys scheduler: durable timers (delays and hold-until timeouts) fired on time by any
//! number of replicas, exactly once each, and the housekeeping jobs that keep the store bounded.
//!
//! - [`TimerLoop`] claims timers due within a short horizon (leased, `SKIP LOCKED` on
//!   MySQL/MariaDB), keeps them in memory ordered by due time and fires each at its due time
//!   through the engine, which commits the transition and deletes the timer in one
//!   transaction. Hold-until timeouts also wait for the fairness watermark
//!   ([`WatermarkSource`]; across processes [`StoreWatermark`], the data-plane replicas'
//!   heartbeats in the store).
//! - [`Housekeeping`] purges expired dedupe keys and finished instances past retention, and
//!   ends instances past their maximum lifetime, on a tokio-cron-scheduler schedule.
//! - `journeys.v1.SchedulerService` reports the queue and the lateness of fired timers.
//!
//! [`Scheduler`] starts and stops these pieces together over an engine it is given; the
//! composition root (`journeys::node`) runs it, as the `journeys-scheduler` process (with an
//! outbox dispatcher so that sends produced by timers go out at once) or beside the other roles
//! on the engine the data plane uses.

mod api;
mod config;
mod housekeeping;
mod lateness;
mod queue;
mod scheduler;
mod timer_loop;
mod watermark;

pub use config::{
    DEFAULT_HOUSEKEEPING_SCHEDULE, DEFAULT_INSTANCE_RETENTION, HousekeepingConfig, SchedulerConfig,
};
pub use housekeeping::{ExpireError, Housekeeping, HousekeepingReport};
pub use lateness::LatenessHistogram;
pub use scheduler::Scheduler;
pub use timer_loop::{TimerLoop, TimerLoopStats};
/// Why [`Scheduler::start`] failed: the housekeeping schedule or the job scheduler.
pub use tokio_cron_scheduler::JobSchedulerError;
pub use watermark::{
    FnWatermark, StoreWatermark, WATERMARK_LEASE, WATERMARK_REFRESH, WallClock, WatermarkSource,
};

/// Fully qualified names of the services the scheduler serves.
pub const SERVICE_NAMES: &[&str] = &["journeys.v1.SchedulerService"];
