//! What every fault-injection test checks about the answers given under load while a fault
//! lasted, and the figures it reports; the domains and counters the tests use. [`scenario`]
//! holds the shared set-up and timelines, so each test file reads as its deployment and fault.

use std::time::{Duration, Instant};

use crate::load::{Answer, Sample, between, percentiles};
use crate::sluice::Sluice;

pub mod scenario;

/// The store budget the fault tests give Sluice: `SLUICE_FAULT_BUDGET_MS`, else 100 ms. The suite
/// runs debug builds on a two-core machine shared with Redis, the load and other builds, where a
/// healthy call can take over 50 ms (seen with Sentinel at a load average of 13); a tighter
/// budget would turn that noise into failure-policy answers while Redis is healthy. To measure the production default, run a release build with 10:
/// `SLUICE_BIN=target/release/sluice SLUICE_FAULT_BUDGET_MS=10 cargo test --test fault_… -- --nocapture`.
pub fn budget() -> Duration {
    env_ms("SLUICE_FAULT_BUDGET_MS", 100)
}

/// What an answer may take beyond the budget: the gRPC round trip and scheduling
/// (`SLUICE_FAULT_MARGIN_MS`, else 100 ms). The suite runs debug builds of Sluice, the load and
/// up to nine Redis processes on two cores, often beside other builds: answers 60 to 75 ms past
/// the budget were seen there while a restarted Cluster node rejoined. Without the budget and
/// the breaker, a hung Redis costs each check a second or more.
pub fn margin() -> Duration {
    env_ms("SLUICE_FAULT_MARGIN_MS", 100)
}

fn env_ms(name: &str, default: u64) -> Duration {
    let ms = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    Duration::from_millis(ms)
}

/// The answers of one phase (a fault, or the time after it), with their latency figures.
pub struct Phase {
    pub name: String,
    pub samples: Vec<Sample>,
}

impl Phase {
    pub fn new(name: impl Into<String>, all: &[Sample], from: Instant, to: Instant) -> Self {
        Self {
            name: name.into(),
            samples: between(all, from, to),
        }
    }

    /// Prints `name: n answers, p50/p99/max` (run the test with `--nocapture` to see them) and
    /// checks that every answer came within `bound`.
    pub fn report_and_bound(&self, bound: Duration) {
        let (p50, p99, max) = percentiles(&self.samples);
        eprintln!(
            "latency {:<34} {:>6} answers  p50 {p50:6.2} ms  p99 {p99:6.2} ms  max {max:6.2} ms",
            self.name,
            self.samples.len()
        );
        assert!(!self.samples.is_empty(), "{}: no answers at all", self.name);
        assert!(
            max <= bound.as_secs_f64() * 1000.0,
            "{}: an answer took {max:.2} ms, more than {bound:?}",
            self.name
        );
    }

    /// The answers to request `request`.
    pub fn answers(&self, request: usize) -> Vec<Answer> {
        self.samples
            .iter()
            .filter(|s| s.request == request)
            .map(|s| s.answer)
            .collect()
    }
}

/// The answers to `request` of the checks sent at or after `from` and answered by `to`: a check
/// in flight when a fault starts or ends may be decided either way.
pub fn decided_within(
    samples: &[Sample],
    request: usize,
    from: Instant,
    to: Instant,
) -> Vec<Answer> {
    samples
        .iter()
        .filter(|s| s.request == request && s.at >= from && s.at + s.latency <= to)
        .map(|s| s.answer)
        .collect()
}

/// When decisions of `request` were normal again after `back` (among checks answered by
/// `until`): the sending time of the first of its answers from which on every answer is
/// `normal`, as an offset from `back`. `None` if the last answer is not normal.
pub fn normal_again(
    samples: &[Sample],
    request: usize,
    back: Instant,
    until: Instant,
    normal: Answer,
) -> Option<Duration> {
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.request == request && s.at >= back && s.at + s.latency <= until)
        .collect();
    let last_abnormal = after.iter().rposition(|s| s.answer != normal);
    let first_normal = match last_abnormal {
        None => after.first()?,
        Some(i) => after.get(i + 1)?,
    };
    Some(first_normal.at.duration_since(back))
}

/// A value from Prometheus text: the sum of every series of `name` whose labels contain `labels`.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A rule file for the domain named `mode`, under that failure policy, with a limit the load
/// never reaches. On a Cluster, `shard_by: k` puts every domain's counter in the slot of `{v}`,
/// served by one master.
pub fn rules(mode: &str, shard_by: bool) -> String {
    let shard = if shard_by { "shard_by: k\n" } else { "" };
    format!(
        "domain: {mode}\nfailure_mode: {mode}\n{shard}descriptors:\n  - key: k\n    \
         rate_limit: {{unit: year, requests_per_unit: 1000000000}}\n"
    )
}

/// The counter of domain `domain` for `k: v` (a yearly fixed window), with the hash tag
/// `shard_by` writes on a Cluster.
pub fn counter_key(domain: &str, shard_by: bool) -> String {
    let tag = if shard_by { "{v}" } else { "" };
    format!("sl:{tag}{}:{domain}|1:k|1:v|f31536000", domain.len())
}

/// A fixed window's count, as `node` holds it.
pub fn stored(node: &crate::node::RedisNode, domain: &str, shard_by: bool) -> u64 {
    node.cli(&["HGET", &counter_key(domain, shard_by), "n"])
        .trim()
        .parse()
        .unwrap_or(0)
}

pub(crate) fn count(samples: &[Sample], request: usize, answer: Answer) -> u64 {
    samples
        .iter()
        .filter(|s| s.request == request && s.answer == answer)
        .count() as u64
}

/// Every answer is a decision: no error, no `UNAVAILABLE`.
pub(crate) fn assert_decisions(samples: &[Sample], t0: Instant) {
    let undecided: Vec<(Duration, usize, Answer)> = samples
        .iter()
        .filter(|s| !matches!(s.answer, Answer::Ok | Answer::OverLimit))
        .map(|s| (s.at.duration_since(t0), s.request, s.answer))
        .collect();
    assert!(
        undecided.is_empty(),
        "every answer is a decision (no error, no UNAVAILABLE): {undecided:?}"
    );
}

/// Sluice's `/metrics` text.
pub async fn metrics(sluice: &Sluice) -> String {
    reqwest::get(sluice.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}
