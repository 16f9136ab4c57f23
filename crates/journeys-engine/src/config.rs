//! Tuning of the evaluator runtime: lanes, micro-batches, dedupe window, per-profile limits and
//! how often the published-journey cache looks for changes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Instances live at most this long unless configured (SPEC.md section 7): 365 days.
pub const DEFAULT_MAX_INSTANCE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How the engine runs. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Independent evaluation lanes. A profile always maps to the same lane, so its events
    /// apply in order; different lanes commit concurrently.
    pub lanes: usize,
    /// A lane commits once it has collected this many events (or timers) ...
    pub max_batch_events: usize,
    /// ... or once the first item of the batch waited this long, whichever comes first.
    pub max_batch_delay: Duration,
    /// A `messageId` seen within this window is acknowledged `DUPLICATE` and ignored.
    pub dedupe_window: Duration,
    /// An event that would start an instance while its profile has this many active (across
    /// journeys) is rejected with `too_many_instances`, and the refused entries are counted.
    pub max_active_instances_per_profile: usize,
    /// Return-to-start passes and unique-identifier length the rules apply.
    pub instance_limits: journeys_core::machine::InstanceLimits,
    /// How long an instance lives at most: its `expires_at` (stamped whenever it is written)
    /// is its entry time plus this, after which housekeeping ends it.
    pub max_instance_lifetime: Duration,
    /// Events of one profile beyond this rate are rejected with `rate_limited` (a token bucket
    /// that holds one second's worth). `0` disables the limit.
    pub max_events_per_profile_per_sec: u32,
    /// Most event names the event catalog records from events: a new name past it is not
    /// recorded (its events are still applied). See `crate::catalog`.
    pub max_catalog_events: usize,
    /// How far one profile's traits may grow: an identify that would add traits past the
    /// count, or bytes past the size, is rejected with `traits_limit` (and not stored).
    pub trait_limits: journeys_core::profile::traits::TraitLimits,
    /// How often the published-journey cache checks whether a journey was published or
    /// archived.
    pub refresh_interval: Duration,
    /// Events submitted but not yet committed above which new events are rejected with
    /// `overloaded` instead of queueing without bound.
    pub max_in_flight_events: usize,
    /// Profile partitions of the deployment (SCALE-OUT.md §1): a profile's lane is its
    /// partition modulo the lane count, so a lane's batch spans the partitions pinned to it.
    /// Every node over one store must use the same number.
    pub partitions: u32,
    /// `Some` when this engine is a partition owner: it applies only the partitions it holds,
    /// fences every commit with their epochs and keeps their profiles in memory. `None` (an
    /// engine beside processes that also write profiles, such as a stand-alone control plane
    /// or scheduler) reads every profile from the store and lets the store's version checks
    /// arbitrate.
    pub owner: Option<crate::ownership::OwnerConfig>,
    /// The time the lanes evaluate at: the system clock, or a virtual one (tests that replay
    /// events at chosen times, as `SimulateJourney` does).
    pub clock: Clock,
}

/// Where the engine reads "now" when it evaluates a batch.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>>);

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Self {
        Self(None)
    }

    /// A clock that reads `now` from a function (a virtual clock).
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(now)))
    }

    /// The current time by this clock.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Some(now) => now(),
            None => Utc::now(),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Clock(virtual)"
        } else {
            "Clock(system)"
        })
    }
}

/// Two clocks are equal when both are the system clock or both are the same function.
impl PartialEq for Clock {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Clock {}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lanes: 4,
            max_batch_events: 512,
            max_batch_delay: Duration::from_millis(2),
            dedupe_window: journeys_core::profile::DEDUPE_WINDOW,
            max_active_instances_per_profile: 25,
            instance_limits: journeys_core::machine::InstanceLimits::DEFAULT,
            max_instance_lifetime: DEFAULT_MAX_INSTANCE_LIFETIME,
            max_events_per_profile_per_sec: 25,
            max_catalog_events: 10_000,
            trait_limits: journeys_core::profile::traits::TraitLimits::DEFAULT,
            refresh_interval: Duration::from_millis(500),
            max_in_flight_events: 100_000,
            partitions: journeys_core::partition::DEFAULT_PARTITIONS,
            owner: None,
            clock: Clock::system(),
        }
    }
}

impl EngineConfig {
    /// The configuration with nonsensical zeros replaced by the smallest workable value.
    pub(crate) fn normalized(mut self) -> Self {
        self.lanes = self.lanes.max(1);
        self.max_batch_events = self.max_batch_events.max(1);
        if self.refresh_interval.is_zero() {
            self.refresh_interval = Duration::from_millis(1);
        }
        self.max_in_flight_events = self.max_in_flight_events.max(1);
        self.partitions = self
            .partitions
            .clamp(1, journeys_core::partition::MAX_PARTITIONS);
        self
    }
}
