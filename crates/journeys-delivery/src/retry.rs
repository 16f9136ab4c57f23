//! Retry policy: which failed attempts are tried again, and when.
//!
//! Pure: every decision is a function of its inputs (`now`, the attempt count, a random source),
//! so it is tested without a clock or a network.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

/// When failed sends are tried again and when they are given up.
///
/// Delays follow "full jitter" exponential backoff: attempt `n` (1-based) waits a uniformly random
/// time in `[0, min(max_delay, base_delay * factor^(n-1))]`, so that many sends failing together
/// (a destination outage) do not come back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Ceiling of the first retry's delay.
    pub base_delay: Duration,
    /// Growth of the ceiling per attempt.
    pub factor: u32,
    /// Largest backoff ceiling, however many attempts failed.
    pub max_delay: Duration,
    /// How long after the first attempt a send is still retried; after it the send is
    /// dead-lettered with its last error.
    pub budget: Duration,
    /// Longest `Retry-After` honoured: a server asking for more gets this.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_secs(1),
            factor: 2,
            max_delay: Duration::from_secs(10 * 60),
            budget: Duration::from_secs(24 * 60 * 60),
            max_retry_after: Duration::from_secs(60 * 60),
        }
    }
}

/// How an attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// May succeed later: a timeout, a connection error, 5xx, 408 or 429. `retry_after` is the
    /// server's own wish (`Retry-After`), when it gave one.
    Transient {
        /// Delay the destination asked for.
        retry_after: Option<Duration>,
    },
    /// Will fail the same way again: any other 4xx (or 3xx: redirects are not followed), or a
    /// request that cannot be built from the destination's settings.
    Permanent,
}

/// What an HTTP status means for a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: delivered.
    Delivered,
    /// 408, 429, 5xx: try again.
    Retryable,
    /// Anything else: give up at once.
    Final,
}

/// Classifies a destination's response status.
#[must_use]
pub fn classify_status(status: u16) -> StatusClass {
    match status {
        200..=299 => StatusClass::Delivered,
        408 | 429 | 500..=599 => StatusClass::Retryable,
        _ => StatusClass::Final,
    }
}

/// What to do with a send whose attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Give up: the failure is final or the retry budget is spent.
    DeadLetter,
}

impl RetryPolicy {
    /// The backoff ceiling after `attempts` failed attempts (at least 1).
    #[must_use]
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let exponent = attempts.saturating_sub(1);
        self.factor
            .checked_pow(exponent)
            .and_then(|growth| self.base_delay.checked_mul(growth))
            .map_or(self.max_delay, |delay| delay.min(self.max_delay))
    }

    /// A random delay in `[0, ceiling(attempts)]` (full jitter).
    pub fn backoff(&self, attempts: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = u64::try_from(self.ceiling(attempts).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }

    /// Decides the fate of a send after its `attempts`-th attempt failed with `failure`.
    ///
    /// Transient failures wait for the jittered backoff, or for the server's `Retry-After`
    /// (capped at `max_retry_after`) when that is longer. A retry never goes past the end of the
    /// budget: the last one is moved to the budget's end, and a failure at or after it is final.
    pub fn decide(
        &self,
        failure: Failure,
        attempts: u32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        rng: &mut impl Rng,
    ) -> Decision {
        let Failure::Transient { retry_after } = failure else {
            return Decision::DeadLetter;
        };
        let deadline = first_attempt_at + to_chrono(self.budget);
        if now >= deadline {
            return Decision::DeadLetter;
        }
        let mut delay = self.backoff(attempts, rng);
        if let Some(asked) = retry_after {
            delay = delay.max(asked.min(self.max_retry_after));
        }
        Decision::RetryAt((now + to_chrono(delay)).min(deadline))
    }
}

/// Reads a `Retry-After` value: delay seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`). A date in the past means no wait; garbage means the
/// header is ignored.
#[must_use]
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// `std` to `chrono` duration, saturating (a budget of centuries is "forever").
fn to_chrono(duration: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap()
    }

    fn transient() -> Failure {
        Failure::Transient { retry_after: None }
    }

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        for status in [200, 201, 204, 299] {
            assert_eq!(classify_status(status), StatusClass::Delivered, "{status}");
        }
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(status), StatusClass::Retryable, "{status}");
        }
        for status in [301, 302, 400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(classify_status(status), StatusClass::Final, "{status}");
        }
    }

    #[test]
    fn ceiling_doubles_from_one_second_up_to_ten_minutes() {
        let policy = RetryPolicy::default();
        let secs: Vec<u64> = (1..=12).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        // Overflowing growth saturates at the cap instead of wrapping.
        assert_eq!(policy.ceiling(200), Duration::from_secs(600));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn backoff_is_full_jitter_below_the_ceiling() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempts in 1..=15 {
            let ceiling = policy.ceiling(attempts);
            let delays: Vec<Duration> = (0..200)
                .map(|_| policy.backoff(attempts, &mut rng))
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempts}");
            // Spread over the whole range, not clustered at the ceiling.
            assert!(
                delays.iter().any(|d| *d < ceiling / 4),
                "attempt {attempts}"
            );
            assert!(
                delays.iter().any(|d| *d > ceiling * 3 / 4),
                "attempt {attempts}"
            );
        }
    }

    #[test]
    fn same_seed_gives_the_same_schedule() {
        let policy = RetryPolicy::default();
        let schedule = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=10)
                .map(|n| policy.decide(transient(), n, t0(), t0(), &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(42), schedule(42));
        assert_ne!(schedule(42), schedule(43));
    }

    #[test]
    fn transient_failures_are_retried_within_the_backoff() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let now = t0() + chrono::TimeDelta::minutes(5);
        for attempts in 1..=10 {
            match policy.decide(transient(), attempts, t0(), now, &mut rng) {
                Decision::RetryAt(at) => {
                    assert!(at >= now);
                    assert!(at <= now + to_chrono(policy.ceiling(attempts)));
                }
                Decision::DeadLetter => panic!("attempt {attempts} dead-lettered"),
            }
        }
    }

    #[test]
    fn permanent_failures_are_dead_lettered_at_once() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            policy.decide(Failure::Permanent, 1, t0(), t0(), &mut rng),
            Decision::DeadLetter
        );
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(3);
        let asked = Failure::Transient {
            retry_after: Some(Duration::from_secs(30)),
        };
        // The server's wish wins over a shorter backoff...
        assert_eq!(
            policy.decide(asked, 1, t0(), t0(), &mut rng),
            Decision::RetryAt(t0() + chrono::TimeDelta::seconds(30))
        );
        // ...a backoff longer than the wish is kept...
        let Decision::RetryAt(at) = policy.decide(
            Failure::Transient {
                retry_after: Some(Duration::ZERO),
            },
            12,
            t0(),
            t0(),
            &mut StdRng::seed_from_u64(5),
        ) else {
            panic!("dead-lettered");
        };
        assert!(at > t0());
        // ...and an excessive wish is capped.
        let greedy = Failure::Transient {
            retry_after: Some(Duration::from_secs(7 * 24 * 3600)),
        };
        assert_eq!(
            policy.decide(greedy, 1, t0(), t0(), &mut rng),
            Decision::RetryAt(t0() + chrono::TimeDelta::hours(1))
        );
    }

    #[test]
    fn budget_ends_retries() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(9);
        let deadline = t0() + chrono::TimeDelta::hours(24);
        // Just before the end: the retry is moved to the end of the budget at the latest.
        let late = deadline - chrono::TimeDelta::seconds(1);
        match policy.decide(transient(), 40, t0(), late, &mut rng) {
            Decision::RetryAt(at) => assert!(at <= deadline && at >= late),
            Decision::DeadLetter => panic!("dead-lettered inside the budget"),
        }
        // At and after the end: dead letter.
        assert_eq!(
            policy.decide(transient(), 41, t0(), deadline, &mut rng),
            Decision::DeadLetter
        );
        assert_eq!(
            policy.decide(
                transient(),
                41,
                t0(),
                deadline + chrono::TimeDelta::hours(1),
                &mut rng
            ),
            Decision::DeadLetter
        );
    }

    #[test]
    fn budget_is_configurable() {
        let policy = RetryPolicy {
            budget: Duration::from_secs(60),
            ..RetryPolicy::default()
        };
        let mut rng = StdRng::seed_from_u64(11);
        let now = t0() + chrono::TimeDelta::seconds(61);
        assert_eq!(
            policy.decide(transient(), 3, t0(), now, &mut rng),
            Decision::DeadLetter
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = t0();
        assert_eq!(parse_retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
