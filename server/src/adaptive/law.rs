//! The control law: from the current limit and one interval's signal, the next limit.
//!
//! With `r = signal / target`:
//!
//! - **over target** (`r > 1`): multiplicative decrease to `limit · max(0.5, 0.95 / r)`, and by
//!   at least one. An upstream whose signal grows in proportion to the limit lands at 95 % of
//!   target in one step; an overload far past target halves the limit per interval, never more,
//!   since one bad interval may be noise.
//! - **in the band** (`0.92 ≤ r ≤ 1`): hold. The band is what lets the limit settle instead of
//!   oscillating around the target, and it is the precision the controller promises: the signal
//!   of a settled limit is within 8 % under target (10 % with the noise of a real upstream).
//! - **under** (`r < 0.92`): additive increase by `max(1, ⌈limit · min(0.25, (1 − r) / 2)⌉)`. The
//!   step is half the headroom (at most a quarter of the limit): far under target the limit
//!   climbs quickly, near it by small steps, so an increase lands in the band rather than past
//!   the target (from `r = 0.91`, a proportional upstream reaches `0.95`).
//!
//! The result is clamped to `[min, max]`. The law is a gradient in the manner of Netflix's
//! concurrency-limits Gradient2 and Envoy's adaptive concurrency filter (the ratio of target to
//! measurement scales the change), with AIMD's asymmetry: decreases are multiplicative and
//! immediate, increases additive and damped, because overshooting costs the upstream more than
//! undershooting costs the clients.

use crate::config::adaptive::AdaptiveSpec;

/// The signal may be this far under target (as a fraction of it) and the limit holds.
pub const BAND: f64 = 0.08;
/// The deepest cut in one interval.
pub const MAX_CUT: f64 = 0.5;
/// The largest increase in one interval, as a fraction of the limit.
pub const MAX_RISE: f64 = 0.25;

/// Which way the law moved the limit, for the audit log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Increase,
    Hold,
    Decrease,
}

impl Move {
    pub fn as_str(self) -> &'static str {
        match self {
            Move::Increase => "increase",
            Move::Hold => "hold",
            Move::Decrease => "decrease",
        }
    }
}

/// The next limit after an interval whose signal was `signal` (in the target's unit).
pub fn next_limit(spec: &AdaptiveSpec, current: u64, signal: f64) -> (u64, Move) {
    let current = current.clamp(spec.min, spec.max);
    let target = spec.target();
    let r = if signal.is_finite() && signal >= 0.0 {
        signal / target
    } else {
        1.0
    };
    let (next, how) = if r > 1.0 {
        let factor = (0.95 / r).max(MAX_CUT);
        let cut = (current as f64 * factor).floor() as u64;
        (cut.min(current.saturating_sub(1)), Move::Decrease)
    } else if r >= 1.0 - BAND {
        (current, Move::Hold)
    } else {
        let share = ((1.0 - r) / 2.0).min(MAX_RISE);
        let step = ((current as f64 * share).ceil() as u64).max(1);
        (current.saturating_add(step), Move::Increase)
    };
    (next.clamp(spec.min, spec.max), how)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::adaptive::sketch::Aggregate;
    use crate::config::adaptive::Signal;

    fn latency_spec(target_ms: u64, min: u64, max: u64) -> AdaptiveSpec {
        AdaptiveSpec {
            signal: Signal::Latency {
                target_us: target_ms * 1000,
                quantile_ppm: 990_000,
            },
            min,
            max,
            interval: Duration::from_secs(1),
            min_reports: 20,
        }
    }

    /// A small deterministic generator (xorshift), so runs repeat exactly.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// An upstream whose latency grows with the requests in flight: `base + per_request · in
    /// flight`, each response up to 10 % slower at random. Demand keeps `min(limit, demand)`
    /// requests in flight. Returns the interval's p99.
    fn interval_p99(
        limit: u64,
        demand: u64,
        base_ms: f64,
        per_request_ms: f64,
        noise: &mut Noise,
    ) -> f64 {
        let in_flight = limit.min(demand) as f64;
        let mut a = Aggregate::default();
        for _ in 0..500 {
            let ms = (base_ms + per_request_ms * in_flight) * (1.0 + 0.1 * noise.next());
            a.add(ms, false);
        }
        a.quantile(0.99).unwrap()
    }

    /// Runs `intervals` intervals from `limit`; returns the limits and the p99s seen.
    fn run(
        spec: &AdaptiveSpec,
        mut limit: u64,
        intervals: usize,
        upstream: (f64, f64),
        demand: u64,
        noise: &mut Noise,
    ) -> Vec<(u64, f64)> {
        let mut seen = Vec::new();
        for _ in 0..intervals {
            let p99 = interval_p99(limit, demand, upstream.0, upstream.1, noise);
            seen.push((limit, p99));
            limit = next_limit(spec, limit, p99).0;
            assert!(
                (spec.min..=spec.max).contains(&limit),
                "{limit} left the range"
            );
        }
        seen
    }

    #[test]
    fn the_limit_settles_where_p99_is_within_ten_percent_of_target_and_follows_the_upstream() {
        let spec = latency_spec(250, 5, 400);
        let mut noise = Noise(0x5eed);
        // 10 ms + 4 ms per request in flight (up to 10 % more): p99 = 250 ms near 54 in flight.
        let slow = (10.0, 4.0);
        let seen = run(&spec, 10, 30, slow, 1000, &mut noise);
        let settled = seen
            .iter()
            .position(|(_, p99)| *p99 <= 250.0 && *p99 >= 225.0)
            .unwrap();
        assert!(settled <= 10, "settled after {settled} intervals: {seen:?}");
        for (limit, p99) in &seen[settled..] {
            assert!(
                (225.0..=250.0 * 1.02).contains(p99),
                "after settling: limit {limit}, p99 {p99}: {seen:?}"
            );
        }
        let at = seen.last().unwrap().0;

        // Overload: the upstream gets three times slower per request; the limit comes down.
        let slower = (10.0, 12.0);
        let seen = run(&spec, at, 15, slower, 1000, &mut noise);
        assert!(seen[1].0 < at, "{seen:?}");
        let (low, p99) = *seen.last().unwrap();
        assert!(low < at / 2, "{seen:?}");
        assert!((225.0..=255.0).contains(&p99), "{seen:?}");

        // It speeds up again: the limit rises back.
        let fast = (10.0, 2.0);
        let seen = run(&spec, low, 20, fast, 1000, &mut noise);
        let (high, p99) = *seen.last().unwrap();
        assert!(high > at, "{seen:?}");
        assert!((225.0..=255.0).contains(&p99), "{seen:?}");
    }

    #[test]
    fn the_limit_never_leaves_its_bounds() {
        let spec = latency_spec(100, 20, 30);
        let mut noise = Noise(7);
        // An upstream always far over target: the limit stops at `min`.
        let seen = run(&spec, 30, 10, (500.0, 1.0), 1000, &mut noise);
        assert_eq!(seen.last().unwrap().0, 20);
        // One always far under: it stops at `max`.
        let seen = run(&spec, 20, 10, (1.0, 0.01), 1000, &mut noise);
        assert_eq!(seen.last().unwrap().0, 30);
        // A current limit outside the range (the rules changed) is brought inside.
        assert_eq!(next_limit(&spec, 500, 95.0), (30, Move::Hold));
        assert_eq!(next_limit(&spec, 1, 95.0), (20, Move::Hold));
    }

    #[test]
    fn the_steps_of_the_law() {
        let spec = latency_spec(100, 1, 1000);
        assert_eq!(next_limit(&spec, 100, 95.0), (100, Move::Hold));
        assert_eq!(next_limit(&spec, 100, 92.0), (100, Move::Hold));
        assert_eq!(next_limit(&spec, 100, 90.0), (105, Move::Increase));
        // 20 % headroom: up by 10 %.
        assert_eq!(next_limit(&spec, 100, 80.0), (110, Move::Increase));
        // Far under: at most a quarter.
        assert_eq!(next_limit(&spec, 100, 1.0), (125, Move::Increase));
        assert_eq!(next_limit(&spec, 2, 1.0), (3, Move::Increase));
        // Just over: at least one, to 95 % of what the ratio says.
        assert_eq!(next_limit(&spec, 100, 101.0).1, Move::Decrease);
        assert_eq!(next_limit(&spec, 100, 101.0).0, 94);
        assert_eq!(next_limit(&spec, 100, 10_000.0), (50, Move::Decrease));
        let errors = AdaptiveSpec {
            signal: Signal::Errors { target_ppm: 20_000 },
            ..spec
        };
        assert_eq!(next_limit(&errors, 100, 0.0), (125, Move::Increase));
        assert_eq!(next_limit(&errors, 100, 0.019), (100, Move::Hold));
        assert_eq!(next_limit(&errors, 100, 0.5), (50, Move::Decrease));
    }
}
