//! The operator limits of SPEC.md (every number it calls a default is a setting): their
//! defaults, and [`check`], which refuses values that make no sense before anything starts.
//!
//! The crates that apply a limit have their own defaults (`EngineConfig`, `RetryPolicy`,
//! validation's `Limits`, the scheduler's retention); the node's tests check that these
//! defaults turn into exactly those.

use std::fmt::Display;

use super::{Config, ConfigError, MAX_PARTITIONS};

/// Active instances of one profile, across journeys.
pub const DEFAULT_MAX_ACTIVE_INSTANCES_PER_PROFILE: usize = 25;
/// Events of one profile per second.
pub const DEFAULT_MAX_EVENTS_PER_PROFILE_PER_SEC: u32 = 25;
/// How long a failing send is retried: one day.
pub const DEFAULT_RETRY_BUDGET_SECS: u64 = 24 * 60 * 60;
/// Ceiling of the first retry's backoff: one second.
pub const DEFAULT_RETRY_BACKOFF_BASE_MS: u64 = 1_000;
/// Largest backoff ceiling: ten minutes.
pub const DEFAULT_RETRY_BACKOFF_MAX_SECS: u64 = 10 * 60;
/// Longest `Retry-After` honoured: one hour.
pub const DEFAULT_RETRY_AFTER_MAX_SECS: u64 = 60 * 60;
/// Sends in flight at once to one destination: three quarters of the dispatcher's 256, so that a
/// destination that hangs leaves a quarter to the others.
pub const DEFAULT_MAX_SENDS_IN_FLIGHT_PER_DESTINATION: usize = 192;
/// The dispatcher's sends in flight across destinations (256): the most one destination may have.
pub const MAX_SENDS_IN_FLIGHT: usize = 256;
/// Threads running destination functions: 0 means four per core.
pub const DEFAULT_FUNCTION_WORKERS: usize = 0;
/// CPU time of one function invocation: one second.
pub const DEFAULT_FUNCTION_CPU_MS: u64 = 1000;
/// Memory of one function engine: 64 MiB.
pub const DEFAULT_FUNCTION_MEMORY_MB: usize = 64;
/// Event names the catalog records from events.
pub const DEFAULT_MAX_CATALOG_EVENTS: usize = 10_000;
/// Write keys kept resolved in memory (and as many unknown ones).
pub const DEFAULT_WRITE_KEY_CACHE_SIZE: usize = 10_000;
/// Profiles a partition owner keeps in memory.
pub const DEFAULT_PROFILE_CACHE_SIZE: usize = 100_000;
/// Return-to-start passes of one hold-until step per instance.
pub const DEFAULT_MAX_RETURN_TO_START_PASSES: u32 = 100;
/// Characters of a unique-identifier value (Segment's limit).
pub const DEFAULT_MAX_UNIQUE_VALUE_CHARS: usize = 500;
/// Shortest delay: one minute.
pub const DEFAULT_MIN_DELAY_SECS: u64 = 60;
/// Longest delay: 182 days.
pub const DEFAULT_MAX_DELAY_SECS: u64 = 182 * DAY_SECS;
/// Shortest maximum hold: five minutes.
pub const DEFAULT_MIN_HOLD_SECS: u64 = 5 * 60;
/// Longest maximum hold: 182 days.
pub const DEFAULT_MAX_HOLD_SECS: u64 = 182 * DAY_SECS;
/// Days an instance lives at most.
pub const DEFAULT_MAX_INSTANCE_LIFETIME_DAYS: u64 = 365;
/// Days a finished instance is kept.
pub const DEFAULT_INSTANCE_RETENTION_DAYS: u64 = 90;

const DAY_SECS: u64 = 24 * 60 * 60;

/// Ten years: past it a lifetime, retention or window is a typo, and durations built from
/// it stay far from any overflow.
const MAX_DAYS: u64 = 3_650;

pub(super) fn default_max_active_instances_per_profile() -> usize {
    DEFAULT_MAX_ACTIVE_INSTANCES_PER_PROFILE
}
pub(super) fn default_max_events_per_profile_per_sec() -> u32 {
    DEFAULT_MAX_EVENTS_PER_PROFILE_PER_SEC
}
pub(super) fn default_retry_budget_secs() -> u64 {
    DEFAULT_RETRY_BUDGET_SECS
}
pub(super) fn default_retry_backoff_base_ms() -> u64 {
    DEFAULT_RETRY_BACKOFF_BASE_MS
}
pub(super) fn default_retry_backoff_max_secs() -> u64 {
    DEFAULT_RETRY_BACKOFF_MAX_SECS
}
pub(super) fn default_retry_after_max_secs() -> u64 {
    DEFAULT_RETRY_AFTER_MAX_SECS
}
pub(super) fn default_max_sends_in_flight_per_destination() -> usize {
    DEFAULT_MAX_SENDS_IN_FLIGHT_PER_DESTINATION
}
pub(super) fn default_function_workers() -> usize {
    DEFAULT_FUNCTION_WORKERS
}
pub(super) fn default_function_cpu_ms() -> u64 {
    DEFAULT_FUNCTION_CPU_MS
}
pub(super) fn default_function_memory_mb() -> usize {
    DEFAULT_FUNCTION_MEMORY_MB
}
pub(super) fn default_max_catalog_events() -> usize {
    DEFAULT_MAX_CATALOG_EVENTS
}
pub(super) fn default_write_key_cache_size() -> usize {
    DEFAULT_WRITE_KEY_CACHE_SIZE
}
pub(super) fn default_profile_cache_size() -> usize {
    DEFAULT_PROFILE_CACHE_SIZE
}
pub(super) fn default_max_return_to_start_passes() -> u32 {
    DEFAULT_MAX_RETURN_TO_START_PASSES
}
pub(super) fn default_max_unique_value_chars() -> usize {
    DEFAULT_MAX_UNIQUE_VALUE_CHARS
}
pub(super) fn default_min_delay_secs() -> u64 {
    DEFAULT_MIN_DELAY_SECS
}
pub(super) fn default_max_delay_secs() -> u64 {
    DEFAULT_MAX_DELAY_SECS
}
pub(super) fn default_min_hold_secs() -> u64 {
    DEFAULT_MIN_HOLD_SECS
}
pub(super) fn default_max_hold_secs() -> u64 {
    DEFAULT_MAX_HOLD_SECS
}
pub(super) fn default_max_instance_lifetime_days() -> u64 {
    DEFAULT_MAX_INSTANCE_LIFETIME_DAYS
}
pub(super) fn default_instance_retention_days() -> u64 {
    DEFAULT_INSTANCE_RETENTION_DAYS
}

/// Refuses a configuration whose numbers make no sense: a zero where something must be
/// allowed, a value past its range, or bounds that contradict each other (a minimum above its
/// maximum, a delay or hold longer than an instance may live). The error names the setting.
///
/// # Errors
/// [`ConfigError::Invalid`] for the first setting out of order.
pub(super) fn check(c: &Config) -> Result<(), ConfigError> {
    in_range("partitions", c.partitions, 1, MAX_PARTITIONS)?;
    check_nats(c)?;
    in_range(
        "dedupe_window_secs",
        c.dedupe_window_secs,
        1,
        365 * DAY_SECS,
    )?;
    in_range("max_profile_traits", c.max_profile_traits, 1, 1_000_000)?;
    in_range(
        "max_profile_traits_bytes",
        c.max_profile_traits_bytes,
        1,
        64 * 1024 * 1024,
    )?;
    in_range(
        "max_active_instances_per_profile",
        c.max_active_instances_per_profile,
        1,
        100_000,
    )?;
    // 0 is documented as "no limit".
    in_range(
        "max_events_per_profile_per_sec",
        c.max_events_per_profile_per_sec,
        0,
        1_000_000,
    )?;
    check_delivery(c)?;
    in_range("max_catalog_events", c.max_catalog_events, 1, 1_000_000)?;
    in_range(
        "write_key_cache_size",
        c.write_key_cache_size,
        1,
        10_000_000,
    )?;
    in_range("profile_cache_size", c.profile_cache_size, 0, 10_000_000)?;
    in_range(
        "max_return_to_start_passes",
        c.max_return_to_start_passes,
        1,
        10_000,
    )?;
    // Events are at most 32 KB, so a longer value could never arrive.
    in_range(
        "max_unique_value_chars",
        c.max_unique_value_chars,
        1,
        32_768,
    )?;
    in_range(
        "max_instance_lifetime_days",
        c.max_instance_lifetime_days,
        1,
        MAX_DAYS,
    )?;
    // 0 keeps nothing: finished instances and delivered sends go at the next housekeeping run.
    in_range(
        "instance_retention_days",
        c.instance_retention_days,
        0,
        MAX_DAYS,
    )?;
    let lifetime_secs = c.max_instance_lifetime_days * DAY_SECS;
    bounds("delay", c.min_delay_secs, c.max_delay_secs, lifetime_secs)?;
    bounds("hold", c.min_hold_secs, c.max_hold_secs, lifetime_secs)?;
    Ok(())
}

/// The delivery settings: retry budget, backoff and a destination's share.
fn check_delivery(c: &Config) -> Result<(), ConfigError> {
    in_range("retry_budget_secs", c.retry_budget_secs, 1, 30 * DAY_SECS)?;
    in_range(
        "retry_backoff_base_ms",
        c.retry_backoff_base_ms,
        1,
        DAY_SECS * 1_000,
    )?;
    in_range(
        "retry_backoff_max_secs",
        c.retry_backoff_max_secs,
        1,
        DAY_SECS,
    )?;
    if c.retry_backoff_base_ms > c.retry_backoff_max_secs.saturating_mul(1_000) {
        return Err(invalid(format!(
            "retry_backoff_base_ms: {} ms is more than retry_backoff_max_secs ({} s)",
            c.retry_backoff_base_ms, c.retry_backoff_max_secs
        )));
    }
    in_range("retry_after_max_secs", c.retry_after_max_secs, 1, DAY_SECS)?;
    in_range(
        "max_sends_in_flight_per_destination",
        c.max_sends_in_flight_per_destination,
        1,
        MAX_SENDS_IN_FLIGHT,
    )?;
    in_range("function_workers", c.function_workers, 0, 256)?;
    in_range("function_cpu_ms", c.function_cpu_ms, 1, 60_000)?;
    in_range("function_memory_mb", c.function_memory_mb, 1, 4096)?;
    Ok(())
}

/// `min_<what>_secs` and `max_<what>_secs`: at least a second, in order, and no longer than
/// an instance lives (a longer wait could never end).
fn bounds(what: &str, min: u64, max: u64, lifetime_secs: u64) -> Result<(), ConfigError> {
    let min_name = format!("min_{what}_secs");
    let max_name = format!("max_{what}_secs");
    in_range(&min_name, min, 1, lifetime_secs)?;
    in_range(&max_name, max, 1, lifetime_secs).map_err(|_| {
        invalid(format!(
            "{max_name}: {max} is out of range (1 to {lifetime_secs}, the instance lifetime of \
             max_instance_lifetime_days in seconds)"
        ))
    })?;
    if min > max {
        return Err(invalid(format!(
            "{min_name}: {min} is more than {max_name} ({max})"
        )));
    }
    Ok(())
}

/// The NATS address must be one the client can dial, and the stream name one subject token.
fn check_nats(c: &Config) -> Result<(), ConfigError> {
    if let Some(url) = &c.nats_url {
        let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !scheme_ok {
            return Err(invalid(format!(
                "nats_url: '{url}' is not a NATS address (expected nats://host:port)"
            )));
        }
    }
    let stream = &c.nats_stream;
    if stream.is_empty()
        || stream
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ".*>/\\".contains(ch))
    {
        return Err(invalid(format!(
            "nats_stream: '{stream}' is not a stream name (one word: no spaces, '.', '*', '>', '/' or '\\')"
        )));
    }
    Ok(())
}

fn in_range<T: PartialOrd + Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(invalid(format!(
            "{name}: {value} is out of range ({min} to {max})"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> ConfigError {
    ConfigError::Invalid(message)
}

#[cfg(test)]
mod tests {
    use super::super::Service;
    use super::*;

    fn refused(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::defaults_for(Service::Dev);
        change(&mut config);
        match check(&config) {
            Err(ConfigError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn the_defaults_pass() {
        for service in [
            Service::ControlPlane,
            Service::DataPlane,
            Service::Scheduler,
            Service::Dev,
            Service::Node,
        ] {
            assert!(check(&Config::defaults_for(service)).is_ok(), "{service}");
        }
    }

    #[test]
    fn zeros_that_make_no_sense_name_their_setting() {
        assert_eq!(
            refused(|c| c.max_active_instances_per_profile = 0),
            "max_active_instances_per_profile: 0 is out of range (1 to 100000)"
        );
        assert_eq!(
            refused(|c| c.dedupe_window_secs = 0),
            "dedupe_window_secs: 0 is out of range (1 to 31536000)"
        );
        assert_eq!(
            refused(|c| c.max_return_to_start_passes = 0),
            "max_return_to_start_passes: 0 is out of range (1 to 10000)"
        );
        assert_eq!(
            refused(|c| c.max_unique_value_chars = 0),
            "max_unique_value_chars: 0 is out of range (1 to 32768)"
        );
        assert_eq!(
            refused(|c| c.retry_budget_secs = 0),
            "retry_budget_secs: 0 is out of range (1 to 2592000)"
        );
        assert_eq!(
            refused(|c| c.instance_retention_days = 3651),
            "instance_retention_days: 3651 is out of range (0 to 3650)"
        );
        assert_eq!(
            refused(|c| c.min_delay_secs = 0),
            "min_delay_secs: 0 is out of range (1 to 31536000)"
        );
        // Zero events per second is "no limit", as documented.
        let mut config = Config::defaults_for(Service::Dev);
        config.max_events_per_profile_per_sec = 0;
        assert!(check(&config).is_ok());
        // Zero days of retention keeps finished instances until the next housekeeping run.
        let mut config = Config::defaults_for(Service::Dev);
        config.instance_retention_days = 0;
        assert!(check(&config).is_ok());
    }

    #[test]
    fn absurd_values_and_contradictions_are_refused() {
        assert_eq!(
            refused(|c| c.max_instance_lifetime_days = 100_000),
            "max_instance_lifetime_days: 100000 is out of range (1 to 3650)"
        );
        assert_eq!(
            refused(|c| {
                c.min_hold_secs = 7_200;
                c.max_hold_secs = 3_600;
            }),
            "min_hold_secs: 7200 is more than max_hold_secs (3600)"
        );
        // A 182-day delay could never end in instances that live 30 days.
        assert_eq!(
            refused(|c| c.max_instance_lifetime_days = 30),
            "max_delay_secs: 15724800 is out of range (1 to 2592000, the instance lifetime of \
             max_instance_lifetime_days in seconds)"
        );
        assert_eq!(
            refused(|c| {
                c.retry_backoff_base_ms = 5_000;
                c.retry_backoff_max_secs = 2;
            }),
            "retry_backoff_base_ms: 5000 ms is more than retry_backoff_max_secs (2 s)"
        );
        assert_eq!(
            refused(|c| c.max_unique_value_chars = 1_000_000),
            "max_unique_value_chars: 1000000 is out of range (1 to 32768)"
        );
    }
}
