//! The per-interval aggregate of one adaptive rule: a fixed log-scale latency histogram, the
//! number of reports and of errors among them.
//!
//! Bucket `i ≥ 1` holds latencies in `[LOWEST·G^(i−1), LOWEST·G^i)` with `G = 1.04`, from 10 µs
//! to an hour in [`BUCKETS`] buckets: a quantile read back is within 2 % of the true one, whatever
//! the spread, in a fixed 4 KiB per rule. Histograms add bucket by bucket, so replicas' interval
//! aggregates merge exactly (`fleet`).

/// Below this (milliseconds), everything is bucket 0.
const LOWEST_MS: f64 = 0.01;
const GROWTH: f64 = 1.04;
/// Enough buckets for an hour: `1 + ln(3.6e6 / LOWEST_MS) / ln(GROWTH)`, rounded up.
pub const BUCKETS: usize = 505;

/// What one interval's reports add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub reports: u64,
    /// Reports with a status of 500 or more.
    pub errors: u64,
    pub buckets: Vec<u64>,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self {
            reports: 0,
            errors: 0,
            buckets: vec![0; BUCKETS],
        }
    }
}

/// The bucket of a latency in milliseconds (finite, not negative).
pub fn bucket_of(ms: f64) -> usize {
    if ms < LOWEST_MS {
        return 0;
    }
    let i = 1 + ((ms / LOWEST_MS).ln() / GROWTH.ln()).floor() as usize;
    i.min(BUCKETS - 1)
}

/// The latency a bucket stands for: the geometric middle of its range.
fn value_of(bucket: usize) -> f64 {
    if bucket == 0 {
        return 0.0;
    }
    LOWEST_MS * GROWTH.powf(bucket as f64 - 0.5)
}

impl Aggregate {
    pub fn add(&mut self, latency_ms: f64, error: bool) {
        self.reports += 1;
        self.errors += u64::from(error);
        self.buckets[bucket_of(latency_ms)] += 1;
    }

    /// Adds another aggregate (another replica's, or a bucket list read from the store).
    pub fn merge(&mut self, other: &Aggregate) {
        self.reports += other.reports;
        self.errors += other.errors;
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
    }

    /// The `q` quantile of the latencies, in milliseconds (`None` without reports).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest latency at least `q` of the reports are at or below.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(value_of(i));
            }
        }
        Some(value_of(BUCKETS - 1))
    }

    /// The fraction of reports that were errors.
    pub fn error_rate(&self) -> f64 {
        if self.reports == 0 {
            return 0.0;
        }
        self.errors as f64 / self.reports as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut a = Aggregate::default();
        for i in 1..=10_000 {
            a.add(f64::from(i) / 10.0, i % 50 == 0);
        }
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (0.999, 999.0)] {
            let got = a.quantile(q).unwrap();
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        assert!((a.error_rate() - 0.02).abs() < 1e-9);
        assert_eq!(bucket_of(0.0), 0);
        assert!(bucket_of(3_600_000.0) < BUCKETS);
        assert_eq!(bucket_of(1e12), BUCKETS - 1);
        assert!(bucket_of(3_599_999.0) < BUCKETS);
    }

    #[test]
    fn aggregates_merge_exactly() {
        let (mut a, mut b, mut both) = (
            Aggregate::default(),
            Aggregate::default(),
            Aggregate::default(),
        );
        for i in 0..1000 {
            let ms = f64::from(i % 97) * 3.3;
            if i % 2 == 0 { &mut a } else { &mut b }.add(ms, i % 7 == 0);
            both.add(ms, i % 7 == 0);
        }
        a.merge(&b);
        assert_eq!(a, both);
        assert_eq!(Aggregate::default().quantile(0.99), None);
    }
}
