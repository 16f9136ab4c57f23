//! [`SchedulerConfig`]: how far ahead timers are claimed, how long claims last, batch sizes, and
//! the housekeeping schedule and retention, with production defaults.

use std::time::Duration;

use journeys_runtime::config::Config;
use journeys_store::PurgePace;

/// Finished instances are kept this long before housekeeping purges them (SPEC §7).
pub const DEFAULT_INSTANCE_RETENTION: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// Housekeeping runs at second 0 of every minute (`sec min hour dom month dow`), its jobs one
/// after another.
pub const DEFAULT_HOUSEKEEPING_SCHEDULE: &str = "0 * * * * *";

/// Settings of a [`crate::Scheduler`]. [`Default`] gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Timers due within this much of now are claimed and kept in memory, so each fires at its
    /// due time instead of on the next poll. Timers are created at least a second ahead (the
    /// shortest delay or hold allowed even with short durations), so one claim round every
    /// [`Self::claim_interval`] sees them well before they are due.
    pub horizon: Duration,
    /// How long a claim keeps other schedulers off a timer. At least twice the horizon, so
    /// that a live scheduler fires what it claimed before the claim lapses (under a backlog it
    /// holds only what it fires in half a lease); a crashed scheduler's timers are claimable
    /// again after it.
    pub lease: Duration,
    /// Time between claim rounds when the last round found fewer than a full batch (a full
    /// batch is followed at once by another round).
    pub claim_interval: Duration,
    /// Timers claimed per store round trip.
    pub claim_batch: u32,
    /// Most timers handed to the engine in one call. Timers due at the same moment are fired
    /// together, in calls of at most this many.
    pub fire_batch: usize,
    /// Engine calls in flight at once, so that one slow commit does not hold back timers due
    /// just after it.
    pub max_in_flight: usize,
    /// Claimed timers kept in memory at most; claiming pauses above it (a large backlog of
    /// overdue timers is pulled in as fast as it is fired, not all at once).
    pub max_held: usize,
    /// How often the watermark is read again while a due hold-until timeout waits for it.
    pub watermark_poll: Duration,
    /// Housekeeping.
    pub housekeeping: HousekeepingConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            horizon: Duration::from_secs(2),
            lease: Duration::from_secs(10),
            claim_interval: Duration::from_millis(250),
            claim_batch: 1000,
            fire_batch: 500,
            max_in_flight: 4,
            max_held: 50_000,
            watermark_poll: Duration::from_millis(10),
            housekeeping: HousekeepingConfig::default(),
        }
    }
}

impl SchedulerConfig {
    /// The defaults, with the dedupe window and the instance retention taken from the
    /// process configuration.
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let mut scheduler = Self::default();
        scheduler.housekeeping.dedupe_window = Duration::from_secs(config.dedupe_window_secs);
        scheduler.housekeeping.instance_retention =
            Duration::from_secs(config.instance_retention_days.saturating_mul(86_400));
        scheduler
    }

    /// The configuration with unusable zeros replaced by the smallest workable value and the
    /// lease kept above twice the horizon.
    pub(crate) fn normalized(mut self) -> Self {
        self.claim_batch = self.claim_batch.max(1);
        self.fire_batch = self.fire_batch.max(1);
        self.max_in_flight = self.max_in_flight.max(1);
        self.max_held = self.max_held.max(1);
        self.claim_interval = self.claim_interval.max(Duration::from_millis(1));
        self.watermark_poll = self.watermark_poll.max(Duration::from_millis(1));
        self.lease = self.lease.max(2 * self.horizon + Duration::from_secs(1));
        self.housekeeping.batch = self.housekeeping.batch.max(1);
        self
    }
}

/// Settings of the housekeeping jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HousekeepingConfig {
    /// Cron expression with seconds (`sec min hour day-of-month month day-of-week`, UTC) on
    /// which every job runs. Empty disables housekeeping (e.g. when another replica does it).
    pub schedule: String,
    /// Dedupe keys older than this are purged; the data plane's dedupe window.
    pub dedupe_window: Duration,
    /// Finished instances (with their timelines) are purged this long after they ended.
    pub instance_retention: Duration,
    /// Instances ended per store round trip by the max-lifetime job (each run goes on until
    /// none are left).
    pub batch: u32,
    /// How the purges delete: rows per transaction and the rest after each (by default 250
    /// rows, then a rest as long as the chunk took).
    pub purge: PurgePace,
}

impl Default for HousekeepingConfig {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_HOUSEKEEPING_SCHEDULE.to_owned(),
            dedupe_window: Duration::from_secs(
                journeys_runtime::config::DEFAULT_DEDUPE_WINDOW_SECS,
            ),
            instance_retention: DEFAULT_INSTANCE_RETENTION,
            batch: 500,
            purge: PurgePace::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use journeys_runtime::config::Service;

    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = SchedulerConfig::default();
        assert_eq!(
            config.housekeeping.instance_retention.as_secs(),
            90 * 86_400
        );
        assert_eq!(config.housekeeping.dedupe_window.as_secs(), 86_400);
        assert_eq!(config.housekeeping.schedule, "0 * * * * *");
        assert!(config.lease > config.horizon);
    }

    #[test]
    fn the_dedupe_window_and_retention_come_from_the_process_config() {
        let mut process = Config::defaults_for(Service::Scheduler);
        assert_eq!(
            SchedulerConfig::from_config(&process),
            SchedulerConfig::default()
        );
        process.dedupe_window_secs = 3600;
        process.instance_retention_days = 7;
        let config = SchedulerConfig::from_config(&process);
        assert_eq!(config.housekeeping.dedupe_window, Duration::from_secs(3600));
        assert_eq!(
            config.housekeeping.instance_retention,
            Duration::from_secs(7 * 86_400)
        );
        process.instance_retention_days = 0;
        let config = SchedulerConfig::from_config(&process);
        assert_eq!(config.housekeeping.instance_retention, Duration::ZERO);
    }

    #[test]
    fn normalizing_keeps_the_lease_past_the_horizon() {
        let config = SchedulerConfig {
            horizon: Duration::from_secs(5),
            lease: Duration::from_secs(1),
            fire_batch: 0,
            ..SchedulerConfig::default()
        }
        .normalized();
        assert!(config.lease > config.horizon);
        assert_eq!(config.fire_batch, 1);
    }
}
