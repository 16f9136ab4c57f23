//! Per-profile event rate limit: a token bucket per profile, kept in the memory of the lane
//! that owns the profile (so no locking and no store round trip).
//!
//! A bucket holds one second's worth of tokens and refills continuously; a full bucket is the
//! same as no bucket, so idle profiles are swept away and memory stays bounded by the profiles
//! active in the last second.

use std::collections::HashMap;
use std::time::Instant;

/// Buckets beyond this many trigger a sweep of the full ones. After a sweep the threshold is
/// twice what is left (never below this), so with many profiles active at once a sweep runs
/// once per doubling, not on every event.
const SWEEP_ABOVE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The token buckets of one lane.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// Tokens per second, also the bucket size; `0` disables the limit.
    rate: f64,
    buckets: HashMap<String, Bucket>,
    /// Bucket count past which the next sweep runs.
    sweep_above: usize,
    /// Sweeps run so far.
    sweeps: u64,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            buckets: HashMap::new(),
            sweep_above: SWEEP_ABOVE,
            sweeps: 0,
        }
    }

    /// Takes a token for one event of `profile_id` at `now`; `false` when the profile is over
    /// its rate.
    pub fn allow(&mut self, profile_id: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        if self.buckets.len() > self.sweep_above {
            self.sweep(now);
            self.sweep_above = (self.buckets.len() * 2).max(SWEEP_ABOVE);
        }
        let rate = self.rate;
        let bucket = match self.buckets.get_mut(profile_id) {
            Some(bucket) => bucket,
            None => self.buckets.entry(profile_id.to_owned()).or_insert(Bucket {
                tokens: rate,
                updated: now,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops buckets that would be full by now.
    fn sweep(&mut self, now: Instant) {
        self.sweeps += 1;
        let rate = self.rate;
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * rate < rate
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn twenty_sixth_event_in_a_second_is_refused_then_refills() {
        let mut limiter = RateLimiter::new(25);
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(limiter.allow("p", t0));
        }
        assert!(!limiter.allow("p", t0));
        // Another profile has its own bucket.
        assert!(limiter.allow("q", t0));
        // 40 ms refill one token at 25/s.
        assert!(limiter.allow("p", t0 + Duration::from_millis(41)));
        assert!(!limiter.allow("p", t0 + Duration::from_millis(42)));
        // A second later the bucket is full again, but never fuller.
        let t1 = t0 + Duration::from_secs(5);
        for _ in 0..25 {
            assert!(limiter.allow("p", t1));
        }
        assert!(!limiter.allow("p", t1));
    }

    #[test]
    fn zero_disables_the_limit() {
        let mut limiter = RateLimiter::new(0);
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limiter.allow("p", t0)));
    }

    #[test]
    fn many_active_profiles_do_not_sweep_on_every_event() {
        let mut limiter = RateLimiter::new(25);
        let t0 = Instant::now();
        // 20,000 profiles in the same instant: none is full, nothing can be swept away.
        for i in 0..20_000 {
            assert!(limiter.allow(&format!("p{i}"), t0));
        }
        assert_eq!(limiter.buckets.len(), 20_000);
        // Once per doubling (4,097, 8,195, 16,391), not once per event past 4,096.
        assert_eq!(limiter.sweeps, 3);
    }

    #[test]
    fn full_buckets_are_swept() {
        let mut limiter = RateLimiter::new(25);
        let t0 = Instant::now();
        for i in 0..=SWEEP_ABOVE {
            assert!(limiter.allow(&format!("p{i}"), t0));
        }
        assert!(limiter.allow("late", t0 + Duration::from_secs(2)));
        assert_eq!(limiter.buckets.len(), 1);
    }
}
