//! Counting and reporting: per-worker tallies merged after the run, and process CPU time read
//! from `/proc` for the server's CPU per decision.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::client::{Answer, Outcome};

/// Latencies above this are clamped into the top bucket; no request can legitimately take longer
/// because `--timeout-ms` is capped well below it.
const MAX_TRACKED_US: u64 = 60_000_000;

/// One worker's counts; merged after the run so the hot loop shares nothing.
#[derive(Debug)]
pub struct Tally {
    pub ok: u64,
    pub over_limit: u64,
    pub empty_statuses: u64,
    pub errors: BTreeMap<&'static str, u64>,
    /// Latency of answered requests (OK or OVER_LIMIT) in microseconds. Errors are left out: a
    /// refused connection answers in microseconds and would drag the percentiles down.
    pub latency_us: Histogram<u64>,
    /// Open loop: how late each request left against its intended send time. The generator's
    /// own delay; it is already inside `latency_us`, reported so a reader can tell it apart.
    pub send_lag_us: Histogram<u64>,
    /// When this worker's last measured request finished.
    pub last_done: Option<Instant>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).context("latency histogram")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

impl Tally {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            ok: 0,
            over_limit: 0,
            empty_statuses: 0,
            errors: BTreeMap::new(),
            latency_us: histogram()?,
            send_lag_us: histogram()?,
            last_done: None,
        })
    }

    pub fn record(&mut self, answer: Answer, latency: Duration, done: Instant) {
        match answer.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::OverLimit => self.over_limit += 1,
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        if matches!(answer.outcome, Outcome::Ok | Outcome::OverLimit) {
            self.latency_us.saturating_record(micros(latency));
        }
        self.empty_statuses += u64::from(answer.empty_statuses);
        self.last_done = Some(self.last_done.map_or(done, |prev| prev.max(done)));
    }

    pub fn record_lag(&mut self, lag: Duration) {
        self.send_lag_us.saturating_record(micros(lag));
    }

    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.over_limit += other.over_limit;
        self.empty_statuses += other.empty_statuses;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        self.send_lag_us
            .add(&other.send_lag_us)
            .context("merging lag histograms")?;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn decisions(&self) -> u64 {
        self.ok + self.over_limit
    }
}

/// p50, p90, p99, p99.9 and max of `h`, or nulls when it is empty.
pub fn percentiles(h: &Histogram<u64>) -> serde_json::Value {
    let at = |q: f64| -> serde_json::Value {
        if h.is_empty() {
            serde_json::Value::Null
        } else {
            h.value_at_quantile(q).into()
        }
    };
    serde_json::json!({
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": if h.is_empty() { serde_json::Value::Null } else { h.max().into() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Answer;

    #[test]
    fn merged_tallies_add_up() {
        let now = Instant::now();
        let ok = Answer {
            outcome: Outcome::Ok,
            empty_statuses: true,
        };
        let err = Answer {
            outcome: Outcome::Error("UNAVAILABLE"),
            empty_statuses: false,
        };
        let mut a = Tally::new().expect("tally");
        a.record(ok, Duration::from_micros(100), now);
        let mut b = Tally::new().expect("tally");
        b.record(
            err,
            Duration::from_micros(5),
            now + Duration::from_millis(1),
        );
        b.record(ok, Duration::from_micros(300), now);
        a.merge(b).expect("merge");
        assert_eq!((a.ok, a.empty_statuses, a.errors_total()), (2, 2, 1));
        // Errors stay out of the latency histogram.
        assert_eq!(a.latency_us.len(), 2);
        assert_eq!(a.last_done, Some(now + Duration::from_millis(1)));
        let p = percentiles(&a.latency_us);
        assert!(p["max"].as_u64().is_some_and(|m| m >= 300));
    }
}
