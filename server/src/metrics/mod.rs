//! Prometheus metrics, registered by this module and exposed on `GET /metrics`.
//!
//! Per-rule counters carry one label, `rule`: the rule's stats key (`domain.key_value.key2`), which
//! is bounded by the config. Descriptor values from requests only reach a label when a rule opts in
//! with `detailed_metric` or `value_to_metric`, because unbounded values would blow up the series
//! count of every Prometheus scraping Sluice; a request's `limit` override is counted under
//! `<domain>.limit_override`. And whatever a rule opts into, each per-rule family holds at most
//! `--max-metric-series` series: past that, hits count in the family's `rule="overflow"` series and
//! in `sluice_metric_series_overflow_total`, so a flood of distinct values cannot grow `/metrics`
//! (or this process) without bound.
//!
//! Boundary: owns the Prometheus families; imports nothing else of Sluice's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod leases;
mod queues;
pub mod reference;
mod rules;

pub use leases::LeaseStats;
pub use queues::{OutcomeLabels, QueueStats, WeightLabels};
pub use rules::{OVERFLOW_SERIES, RuleCount, RuleLabels, RuleSeries, RuleStats, Shared};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FamilyLabels {
    pub family: &'static str,
}

/// Series one per-rule family holds by default.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub transport: &'static str,
    pub result: &'static str,
}

/// The `sluice_requests` series of one transport, looked up once when the adapter starts: a
/// labelled lookup on every check hashes the label set and takes the family's lock. Creating
/// them up front also makes every result's series exist (at 0) before its first check.
#[derive(Debug, Clone)]
pub struct RequestCounters {
    pub ok: Counter,
    pub over_limit: Counter,
    pub invalid: Counter,
    /// Refused because their values cannot be counted (too long, not UTF-8).
    pub unusable: Counter,
    pub error: Counter,
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

/// Every metric Sluice exports.
#[derive(Debug)]
pub struct Metrics {
    pub rules: RuleStats,
    pub leases: LeaseStats,
    pub queues: QueueStats,
    /// Per trial rule: trials started here, and hits over a limit let through by a trial.
    pub trials_started: Family<RuleLabels, Counter>,
    pub trial_would_reject: Family<RuleLabels, Counter>,
    /// Adaptive limits: the limit in force and the last signal per rule (bounded by the
    /// config), reports by what became of them, decided intervals by outcome.
    pub adaptive_limit: Family<RuleLabels, Gauge>,
    pub adaptive_signal: Family<RuleLabels, Gauge<f64, AtomicU64>>,
    pub adaptive_reports: Family<ResultLabels, Counter>,
    pub adaptive_decisions: Family<ResultLabels, Counter>,
    /// Standing: tenants penalised per rule (bounded by the config), and what each window's
    /// decision did to a tenant, by result.
    pub standing_penalised: Family<RuleLabels, Gauge>,
    pub standing_changes: Family<ResultLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub store_errors: Family<KindLabels, Counter>,
    pub config_loads: Family<ResultLabels, Counter>,
    pub config_rules: Gauge,
    pub global_shadow_mode: Counter,
    /// Hits counted in a family's overflow series because the family was full, by family.
    pub series_overflow: Family<FamilyLabels, Counter>,
    /// Admin API requests refused for their token, by reason.
    pub admin_refused: Family<ReasonLabels, Counter>,
    /// Series each per-rule family may hold, and how many each has created.
    max_series: usize,
    rule_series_created: [AtomicUsize; 5],
    registry: Registry,
    /// Tells this instance's cached [`RuleSeries`] from another's.
    id: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sluice");
        let rules = RuleStats::default();
        rules.register(&mut registry);
        let leases = LeaseStats::default();
        leases.register(&mut registry);
        let queues = QueueStats::default();
        queues.register(&mut registry);
        let trials_started = Family::<RuleLabels, Counter>::default();
        registry.register(
            "trials_started",
            "Descriptor values first seen by a trial rule, which start in shadow mode",
            trials_started.clone(),
        );
        let trial_would_reject = Family::<RuleLabels, Counter>::default();
        registry.register(
            "trial_would_reject",
            "Over-limit hits let through because their value is in its rule's trial",
            trial_would_reject.clone(),
        );
        let adaptive_limit = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "adaptive_limit",
            "The limit an adaptive rule has in force (its override, else its configured limit)",
            adaptive_limit.clone(),
        );
        let adaptive_signal = Family::<RuleLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "adaptive_signal",
            "An adaptive rule's signal in its last decided interval: the latency quantile in \
             milliseconds, or the error fraction",
            adaptive_signal.clone(),
        );
        let adaptive_reports = Family::<ResultLabels, Counter>::default();
        registry.register(
            "adaptive_reports",
            "Latency and status reports received, by result: accepted, unmatched (no adaptive \
             rule), dropped (over the per-interval cap), refused (their batch was invalid)",
            adaptive_reports.clone(),
        );
        let adaptive_decisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "adaptive_decisions",
            "Intervals an adaptive rule was decided in, by outcome: increase, decrease, hold, \
             too_few_reports, operator_override",
            adaptive_decisions.clone(),
        );
        let standing_penalised = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "standing_penalised",
            "Tenants of a fair-share rule with `standing` whose weight is penalised now",
            standing_penalised.clone(),
        );
        let standing_changes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "standing_changes",
            "Tenants a `standing` decision acted on, by result: penalised, recovered, \
             tier_kept, operator_override, bound (too many penalised), error",
            standing_changes.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Rate-limit checks by transport and result",
            requests.clone(),
        );
        // 50 µs .. ~0.4 s: Envoy gives up after 20 ms by default, so resolution matters below that.
        let request_duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 14));
        registry.register(
            "request_duration_seconds",
            "Time to decide a rate-limit check, store round trip included",
            request_duration.clone(),
        );
        let store_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "store_errors",
            "Counter store failures by kind",
            store_errors.clone(),
        );
        let config_loads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_loads",
            "Rule set loads and reloads by result",
            config_loads.clone(),
        );
        let config_rules = Gauge::default();
        registry.register(
            "config_rules",
            "Rules in the rule set being served",
            config_rules.clone(),
        );
        let global_shadow_mode = Counter::default();
        registry.register(
            "global_shadow_mode",
            "Over-limit requests let through because SHADOW_MODE is on",
            global_shadow_mode.clone(),
        );
        let series_overflow = Family::<FamilyLabels, Counter>::default();
        registry.register(
            "metric_series_overflow",
            "Increments counted in a metric family's rule=\"overflow\" series because the family \
             already held --max-metric-series series",
            series_overflow.clone(),
        );
        let admin_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "admin_refused",
            "Admin API requests refused: no bearer token, or a wrong one",
            admin_refused.clone(),
        );
        Self {
            rules,
            leases,
            queues,
            trials_started,
            trial_would_reject,
            adaptive_limit,
            adaptive_signal,
            adaptive_reports,
            adaptive_decisions,
            standing_penalised,
            standing_changes,
            requests,
            request_duration,
            store_errors,
            config_loads,
            config_rules,
            global_shadow_mode,
            series_overflow,
            admin_refused,
            max_series: DEFAULT_MAX_SERIES,
            rule_series_created: Default::default(),
            registry,
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sets how many series each per-rule family may hold (`--max-metric-series`).
    pub fn set_max_series(&mut self, max: usize) {
        self.max_series = max.max(1);
    }

    /// Adds `by` to a rule's count under the label `stat_key`, through the rule's cached series.
    pub fn inc_rule(&self, series: &RuleSeries, stat_key: &Arc<str>, count: RuleCount, by: u64) {
        let labels = || RuleLabels {
            rule: Shared(Arc::clone(stat_key)),
        };
        let (id, counter) = series
            .slot(count)
            .get_or_init(|| (self.id, self.rule_series(count, &labels())));
        if *id == self.id {
            counter.inc_by(by);
        } else {
            self.rule_series(count, &labels()).inc_by(by);
        }
    }

    /// The series of `labels` in a per-rule family, or the family's overflow series once it is
    /// full. The bound holds within a series or two: concurrent first hits of new names may each
    /// pass the check before either is created.
    pub fn rule_series(&self, count: RuleCount, labels: &RuleLabels) -> Counter {
        let family = self.rules.family(count);
        if let Some(counter) = family.get(labels) {
            return counter.clone();
        }
        // Counted here rather than asked of the family (which does not say): two first hits of
        // one name at once count twice, which only makes the bound stricter.
        let created = &self.rule_series_created[count as usize];
        if created.fetch_add(1, Ordering::Relaxed) < self.max_series {
            return family.get_or_create_owned(labels);
        }
        created.fetch_sub(1, Ordering::Relaxed);
        self.series_overflow
            .get_or_create(&FamilyLabels {
                family: count.name(),
            })
            .inc();
        family.get_or_create_owned(&RuleLabels {
            rule: Shared(Arc::from(OVERFLOW_SERIES)),
        })
    }

    /// The registry, for modules that register their own metrics (the shared store's breaker,
    /// failure policy and caches) before serving starts.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Add metrics that are read at scrape time (a store's own statistics).
    pub fn register_collector(
        &mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) {
        self.registry.register_collector(collector);
    }

    /// The request counters of `transport` (`grpc` or `http`).
    pub fn request_counters(&self, transport: &'static str) -> RequestCounters {
        let counter = |result| {
            self.requests
                .get_or_create(&RequestLabels { transport, result })
                .clone()
        };
        RequestCounters {
            ok: counter("ok"),
            over_limit: counter("over_limit"),
            invalid: counter("invalid"),
            unusable: counter("unusable"),
            error: counter("error"),
        }
    }

    pub fn config_loaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.config_loads
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The text exposition format (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(rule: &str) -> RuleLabels {
        RuleLabels {
            rule: Shared(Arc::from(rule)),
        }
    }

    #[test]
    fn a_full_family_counts_new_names_in_its_overflow_series() {
        let mut metrics = Metrics::new();
        metrics.set_max_series(3);
        for i in 0..5 {
            metrics
                .rule_series(RuleCount::TotalHits, &labels(&format!("d.k_{i}")))
                .inc();
        }
        // Known names keep their series once the family is full.
        metrics
            .rule_series(RuleCount::TotalHits, &labels("d.k_0"))
            .inc();
        let text = metrics.encode();
        assert!(
            text.contains("sluice_rule_total_hits_total{rule=\"d.k_0\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("sluice_rule_total_hits_total{rule=\"d.k_2\"} 1"),
            "{text}"
        );
        assert!(!text.contains("d.k_3"), "{text}");
        assert!(
            text.contains("sluice_rule_total_hits_total{rule=\"overflow\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "sluice_metric_series_overflow_total{family=\"sluice_rule_total_hits\"} 2"
            ),
            "{text}"
        );
        // Each family has its own bound.
        metrics
            .rule_series(RuleCount::OverLimit, &labels("d.k_9"))
            .inc();
        assert!(
            metrics
                .encode()
                .contains("sluice_rule_over_limit_total{rule=\"d.k_9\"} 1")
        );
    }
}
