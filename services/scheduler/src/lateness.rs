//! Lateness of fired timers (fired at − due at): a fixed-size, log-linear histogram that answers
//! percentiles within 1/64 (≈ 1.6 %) of the true value, records in constant time and never
//! allocates after construction.
//!
//! Values are whole microseconds. Below [`LINEAR`] µs every value has its own bucket; above,
//! each power of two is split into [`SUB_BUCKETS`] equal buckets, so the relative error is
//! bounded the same way across microseconds and hours. A percentile is reported as the upper
//! bound of its bucket (never optimistic), capped by the exact maximum.

use std::time::Duration;

/// Values below this many microseconds are counted exactly.
const LINEAR: u64 = 128;
/// Buckets per power of two above [`LINEAR`]; must be a power of two with `LINEAR = 2 *
/// SUB_BUCKETS`.
const SUB_BUCKETS: u64 = 64;
/// log2(SUB_BUCKETS).
const SUB_BITS: u32 = 6;
/// Enough powers of two for any `u64` microsecond count.
#[allow(clippy::cast_possible_truncation)] // small constants (64 and 128), in a const context
const BUCKETS: usize = LINEAR as usize + (64 - (SUB_BITS as usize + 1)) * SUB_BUCKETS as usize;

/// A histogram of durations with percentile queries; see the module docs for its precision.
#[derive(Clone)]
pub struct LatenessHistogram {
    counts: Box<[u64]>,
    total: u64,
    max_micros: u64,
    sum_micros: u128,
}

impl Default for LatenessHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatenessHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatenessHistogram")
            .field("count", &self.total)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl LatenessHistogram {
    /// An empty histogram (about 30 KB of counters).
    #[must_use]
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max_micros: 0,
            sum_micros: 0,
        }
    }

    /// Counts one value.
    pub fn record(&mut self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)] += 1;
        self.total += 1;
        self.max_micros = self.max_micros.max(micros);
        self.sum_micros += u128::from(micros);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatenessHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_micros = self.max_micros.max(other.max_micros);
        self.sum_micros += other.sum_micros;
    }

    /// How many values were recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest value recorded, exactly; zero when empty.
    #[must_use]
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros)
    }

    /// The arithmetic mean; zero when empty.
    #[must_use]
    pub fn mean(&self) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let mean = self.sum_micros / u128::from(self.total);
        Duration::from_micros(u64::try_from(mean).unwrap_or(u64::MAX))
    }

    /// The value at quantile `q` (0.0..=1.0): the smallest bucket bound with at least `q` of the
    /// values at or below it, capped by the maximum; zero when empty.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let q = q.clamp(0.0, 1.0);
        // The rank of the value asked for, 1-based; `ceil` so that p50 of two values is the
        // first. Totals never come near 2^53, so the float round trip is exact.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((q * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(upper_bound_of(index).min(self.max_micros));
            }
        }
        self.max()
    }
}

/// The bucket holding `micros`.
fn bucket_of(micros: u64) -> usize {
    if micros < LINEAR {
        // Lossless: below 128.
        return usize::try_from(micros).unwrap_or(0);
    }
    // The highest set bit is at least 7 here (micros >= 128).
    let exponent = 63 - micros.leading_zeros();
    let sub = (micros >> (exponent - SUB_BITS)) - SUB_BUCKETS;
    let index = LINEAR + u64::from(exponent - (SUB_BITS + 1)) * SUB_BUCKETS + sub;
    usize::try_from(index)
        .unwrap_or(BUCKETS - 1)
        .min(BUCKETS - 1)
}

/// The largest value that falls in bucket `index`.
fn upper_bound_of(index: usize) -> u64 {
    let index = index as u64;
    if index < LINEAR {
        return index;
    }
    let above = index - LINEAR;
    // Fits: at most 56 powers above the linear range.
    let exponent = u32::try_from(above / SUB_BUCKETS).unwrap_or(0) + SUB_BITS + 1;
    let sub = above % SUB_BUCKETS + SUB_BUCKETS;
    let shift = exponent - SUB_BITS;
    // In u128: the last bucket's bound is 2^64 - 1, whose "next" would overflow a u64.
    let bound = (u128::from(sub + 1) << shift) - 1;
    u64::try_from(bound).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_histogram_reports_zero() {
        let h = LatenessHistogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        assert_eq!(h.quantile(0.99), Duration::ZERO);
        assert_eq!(h.max(), Duration::ZERO);
        assert_eq!(h.mean(), Duration::ZERO);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = LatenessHistogram::new();
        for micros in 1..=100 {
            h.record(Duration::from_micros(micros));
        }
        assert_eq!(h.quantile(0.5), Duration::from_micros(50));
        assert_eq!(h.quantile(0.99), Duration::from_micros(99));
        assert_eq!(h.quantile(1.0), Duration::from_micros(100));
        assert_eq!(h.max(), Duration::from_micros(100));
    }

    #[test]
    fn large_values_stay_within_the_relative_error() {
        let mut h = LatenessHistogram::new();
        // 1 ms .. 10 s in 1 ms steps.
        for millis in 1..=10_000u64 {
            h.record(Duration::from_millis(millis));
        }
        for (q, exact_ms) in [(0.5, 5_000u64), (0.9, 9_000), (0.99, 9_900)] {
            let got = h.quantile(q).as_secs_f64() * 1000.0;
            #[allow(clippy::cast_precision_loss)]
            let exact = exact_ms as f64;
            assert!(
                got >= exact && got <= exact * (1.0 + 1.0 / 64.0) + 0.001,
                "q={q}: got {got} ms, exact {exact} ms"
            );
        }
        assert_eq!(h.max(), Duration::from_secs(10));
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous_bound = None;
        for index in 0..BUCKETS {
            let bound = upper_bound_of(index);
            if let Some(previous) = previous_bound {
                assert!(bound > previous, "bucket {index} does not grow");
            }
            assert_eq!(bucket_of(bound), index, "upper bound of {index} maps back");
            if bound < u64::MAX {
                assert_eq!(bucket_of(bound + 1), index + 1, "next value after {index}");
            }
            previous_bound = Some(bound);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_never_exceed_the_maximum() {
        let mut h = LatenessHistogram::new();
        h.record(Duration::from_micros(1_000_001));
        assert_eq!(h.quantile(0.99), Duration::from_micros(1_000_001));
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = LatenessHistogram::new();
        let mut b = LatenessHistogram::new();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        b.record(Duration::from_millis(5));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max(), Duration::from_millis(5));
        assert_eq!(a.mean(), Duration::from_millis(3));
    }
}
