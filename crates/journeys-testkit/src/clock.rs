//! Time under the test's control.
//!
//! - [`PausedClock`]: tokio's clock paused, for code that waits with `tokio::time` (sleeps,
//!   intervals, timeouts). Virtual time then moves only when the test advances it, or by
//!   itself to the next timer when every task is idle. Do not use it where a test waits on a
//!   real database or socket: an idle runtime would jump past that I/O's timeouts.
//! - [`ManualClock`]: a settable instant, for code that takes `now` (or a closure giving it)
//!   as an argument.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Tokio's clock, paused for this test. Requires a current-thread runtime
/// (`#[tokio::test]`, the default flavour).
#[derive(Debug)]
pub struct PausedClock {
    started: tokio::time::Instant,
}

impl PausedClock {
    /// Pauses tokio's clock.
    ///
    /// # Panics
    /// On a multi-thread runtime, or when the clock is paused already.
    #[must_use]
    pub fn pause() -> Self {
        tokio::time::pause();
        Self {
            started: tokio::time::Instant::now(),
        }
    }

    /// Moves virtual time forward by `by`, firing every timer due on the way, and lets the
    /// tasks they woke run.
    pub async fn advance(&self, by: Duration) {
        tokio::time::advance(by).await;
        tokio::task::yield_now().await;
    }

    /// Virtual time passed since [`PausedClock::pause`].
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for PausedClock {
    fn drop(&mut self) {
        tokio::time::resume();
    }
}

/// A settable instant shared between a test and the code under test: it reads the wall clock
/// until [`ManualClock::set`] freezes it, and again after [`ManualClock::follow_wall_clock`].
/// Cheap to clone; clones share the instant.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<Mutex<Option<DateTime<Utc>>>>);

impl ManualClock {
    /// A clock frozen at `at`.
    #[must_use]
    pub fn frozen_at(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(Some(at))))
    }

    /// The instant now: the frozen one, or the wall clock.
    #[must_use]
    pub fn now(&self) -> DateTime<Utc> {
        let frozen = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        frozen.unwrap_or_else(Utc::now)
    }

    /// Freezes the clock at `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// Lets the clock read the wall clock again.
    pub fn follow_wall_clock(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::{ManualClock, PausedClock, Utc};

    #[tokio::test]
    async fn a_paused_clock_fires_a_long_sleep_without_waiting_for_it() {
        let clock = PausedClock::pause();
        let wall = std::time::Instant::now();
        let sleeper = tokio::spawn(tokio::time::sleep(Duration::from_secs(3600)));
        clock.advance(Duration::from_secs(3600)).await;
        sleeper.await.expect("the sleep ends");
        assert!(clock.elapsed() >= Duration::from_secs(3600));
        assert!(wall.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn a_manual_clock_reads_what_was_set_until_released() {
        let clock = ManualClock::default();
        let shared = clock.clone();
        let frozen = Utc::now() - TimeDelta::hours(1);
        shared.set(frozen);
        assert_eq!(clock.now(), frozen, "clones share the instant");
        shared.follow_wall_clock();
        assert!(clock.now() > frozen + TimeDelta::minutes(59));
    }
}
