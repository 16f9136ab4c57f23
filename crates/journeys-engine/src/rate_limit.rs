//! Per-profile event rate limit: a token bucket per profile, kept in the memory of the lane
//! that owns the profile (so no locking and no store round trip).
//!
//! A bucket holds one second's worth of tokens and refills continuously; a full bucket is the
//! same as no bucket, so buckets untouched for a second are dropped and memory stays bounded
//! by the profiles active in the last second. The buckets are kept in the order they were last
//! used, so the ones to drop are always at the front: each call drops at most
//! [`EVICT_PER_CALL`] of them, and no call ever walks the whole map.

use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;

/// Most idle buckets one call drops. More than the one bucket a call can add, so the idle ones
/// drain however many profiles are active.
const EVICT_PER_CALL: usize = 4;

/// A bucket untouched this long has refilled completely (it holds one second's worth).
const FULL_AFTER: Duration = Duration::from_secs(1);

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
    /// Least recently used first.
    buckets: LinkedHashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            buckets: LinkedHashMap::new(),
        }
    }

    /// Takes a token for one event of `profile_id` at `now`; `false` when the profile is over
    /// its rate.
    pub fn allow(&mut self, profile_id: &str, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.evict_idle(now);
        let rate = self.rate;
        // Moved to the back: the most recently used.
        let bucket = match self.buckets.to_back(profile_id) {
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

    /// Drops up to [`EVICT_PER_CALL`] buckets from the front that are full by now.
    fn evict_idle(&mut self, now: Instant) {
        for _ in 0..EVICT_PER_CALL {
            match self.buckets.front() {
                Some((_, bucket))
                    if now.saturating_duration_since(bucket.updated) >= FULL_AFTER =>
                {
                    self.buckets.pop_front();
                }
                _ => return,
            }
        }
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
    fn idle_buckets_are_dropped_a_few_per_call_never_all_at_once() {
        let mut limiter = RateLimiter::new(25);
        let t0 = Instant::now();
        // 20,000 profiles in the same instant: none is full, nothing can be dropped.
        for i in 0..20_000 {
            assert!(limiter.allow(&format!("p{i}"), t0));
        }
        assert_eq!(limiter.buckets.len(), 20_000);
        // A second later they are all full; each call drops a few, not all 20,000 at once.
        let t1 = t0 + Duration::from_secs(2);
        assert!(limiter.allow("late", t1));
        assert_eq!(limiter.buckets.len(), 20_000 - EVICT_PER_CALL + 1);
        // Every call drops more than it adds, so the idle ones drain.
        for i in 0..10_000 {
            assert!(limiter.allow(&format!("q{i}"), t1));
        }
        assert_eq!(limiter.buckets.len(), 10_001);
    }

    #[test]
    fn a_busy_profile_is_not_dropped_while_it_is_used() {
        let mut limiter = RateLimiter::new(25);
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(limiter.allow("busy", t0));
        }
        // Others come and go; the busy profile's empty bucket is kept, so it stays limited.
        for i in 0..100 {
            assert!(limiter.allow(&format!("p{i}"), t0 + Duration::from_millis(10)));
        }
        assert!(!limiter.allow("busy", t0 + Duration::from_millis(20)));
    }
}
