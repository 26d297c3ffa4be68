//! Each interval, per adaptive rule: hand this replica's aggregate to the fleet at the boundary,
//! then (a settling delay later, so every replica has handed in its own) let one replica read the
//! fleet's aggregate and move the limit.
//!
//! Intervals are aligned to the epoch (interval `k` of a rule is `[k·I, (k+1)·I)` in wall-clock
//! milliseconds), so replicas agree on them without talking; clocks apart by less than the
//! settling delay ([`settle`](super::cadence::settle)) lose nothing. An interval with fewer than `min_reports` reports
//! fleet-wide leaves the limit where it is: a p99 of a handful of reports is noise.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::cadence::{Cadence, every_tick};
use super::fleet::Fleet;
use super::law::{Move, next_limit};
use super::{ACTOR, Reports};
use crate::clock::Clock;
use crate::config::adaptive::{AdaptiveSpec, Signal};
use crate::config::{Algorithm, RateLimit, Rule, RuleSet};
use crate::metrics::{ResultLabels, RuleLabels, Shared};
use crate::notify::Notifier;
use crate::overrides::backend::{AuditEntry, Guarded};
use crate::overrides::{Override, OverrideRequest, OverrideStore, TargetEntry, target_id};

/// The live rule set.
pub type Rules = Arc<dyn Fn() -> Arc<RuleSet> + Send + Sync>;
/// Applies a fresh list of overrides on this replica at once (others follow the store).
pub type Apply = Arc<dyn Fn(Vec<Override>) + Send + Sync>;

/// The controller's metric families.
#[derive(Clone, Default)]
pub struct AdaptiveMetrics {
    /// `sluice_adaptive_limit{rule}`: the limit in force.
    pub limit: Family<RuleLabels, Gauge>,
    /// `sluice_adaptive_signal{rule}`: the last interval's signal (ms, or a fraction).
    pub signal: Family<RuleLabels, Gauge<f64, AtomicU64>>,
    /// `sluice_adaptive_decisions_total{result}`: what each decided interval came to.
    pub decisions: Family<ResultLabels, Counter>,
}

pub struct Controller {
    reports: Arc<Reports>,
    fleet: Arc<Fleet>,
    overrides: Arc<OverrideStore>,
    rules: Rules,
    apply: Apply,
    metrics: AdaptiveMetrics,
    cadence: Cadence,
    /// Where `adaptive_change` goes, when notifications are on.
    notifier: Option<Notifier>,
}

/// The adaptive rules of a rule set, with their adaptive limit.
fn adaptive_rules(rules: &RuleSet) -> Vec<(Arc<Rule>, RateLimit)> {
    rules_with(rules, |l| l.adaptive())
}

/// The rules of a rule set whose limit `pick` finds, with that limit (wildcard nodes included:
/// a rule whose path the config refused for it never gets this far).
pub(super) fn rules_with(
    rules: &RuleSet,
    pick: fn(&crate::config::Limit) -> Option<&RateLimit>,
) -> Vec<(Arc<Rule>, RateLimit)> {
    fn walk(
        node: &crate::config::Node,
        pick: fn(&crate::config::Limit) -> Option<&RateLimit>,
        out: &mut Vec<(Arc<Rule>, RateLimit)>,
    ) {
        if let Some(rule) = &node.rule
            && let Some(l) = pick(&rule.limit)
        {
            out.push((Arc::clone(rule), l.clone()));
        }
        for children in node.exact.values() {
            children.values().for_each(|n| walk(n, pick, out));
        }
        for children in node.wildcard.values() {
            children.iter().for_each(|(_, n)| walk(n, pick, out));
        }
        node.default.values().for_each(|n| walk(n, pick, out));
    }
    let mut out = Vec::new();
    for root in rules.domains.values() {
        walk(root, pick, &mut out);
    }
    out
}

/// The override target of a rule: its path, the last level by prefix when it is a bare key.
fn target(rule: &Rule) -> Vec<TargetEntry> {
    rule.levels
        .iter()
        .map(|l| TargetEntry {
            key: l.key.clone(),
            value: l.value.clone(),
            prefix: l.value.is_none().then(String::new),
        })
        .collect()
}

impl Controller {
    pub fn new(
        reports: Arc<Reports>,
        fleet: Arc<Fleet>,
        overrides: Arc<OverrideStore>,
        rules: Rules,
        apply: Apply,
        metrics: AdaptiveMetrics,
    ) -> Self {
        Self {
            reports,
            fleet,
            overrides,
            rules,
            apply,
            metrics,
            cadence: Cadence::default(),
            notifier: None,
        }
    }

    /// Raises `adaptive_change` through `notifier` for every change this replica decides.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Runs [`Controller::tick`] every [`TICK`](super::cadence::TICK) on `clock` until the task
    /// is dropped.
    pub fn spawn(self: Arc<Self>, clock: Arc<dyn Clock>) -> tokio::task::JoinHandle<()> {
        every_tick(clock, move |now_ms| {
            let this = Arc::clone(&self);
            async move { this.tick(now_ms).await }
        })
    }

    /// Does whatever is due at `now_ms` (wall clock, ms since the epoch).
    pub async fn tick(&self, now_ms: u64) {
        let rules = (self.rules)();
        let adaptive = adaptive_rules(&rules);
        self.reports
            .retain(|k| adaptive.iter().any(|(r, _)| &*r.stat_key == k));
        let mut due = Vec::new();
        for (rule, limit) in &adaptive {
            let Some(spec) = limit.adaptive.as_deref() else {
                continue;
            };
            let key = &rule.stat_key;
            let now = self.cadence.due(key, spec.interval, now_ms);
            if let Some(k) = now.flush {
                let agg = self.reports.take(key);
                let keep = spec.interval * 4;
                if let Err(e) = self.fleet.add(key, k, &agg, keep).await {
                    tracing::warn!(rule = %key, error = %e, "cannot add this replica's reports to the fleet's");
                }
            }
            if let Some(k) = now.decide {
                due.push((Arc::clone(rule), limit.clone(), k));
            }
        }
        if due.is_empty() {
            return;
        }
        let current = match self.overrides.load().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "adaptive limits: cannot read the overrides; skipping the interval");
                return;
            }
        };
        for (rule, limit, k) in due {
            self.decide(&rules, &rule, &limit, k, &current, now_ms)
                .await;
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .decisions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    async fn decide(
        &self,
        rules: &RuleSet,
        rule: &Arc<Rule>,
        limit: &RateLimit,
        k: u64,
        current: &[Override],
        now_ms: u64,
    ) {
        let Some(spec) = limit.adaptive.as_deref() else {
            return;
        };
        let labels = RuleLabels {
            rule: Shared(Arc::clone(&rule.stat_key)),
        };
        let descriptor = target(rule);
        let id = target_id(&rule.domain, &descriptor);
        let existing = current
            .iter()
            .find(|o| o.id == id && !o.lapsed(now_ms / 1000));
        let pool = limit.algorithm == Algorithm::Concurrency;
        let in_force = match existing {
            Some(o) if o.by != ACTOR => {
                self.count("operator_override");
                return;
            }
            Some(o) => {
                if pool { o.concurrency } else { o.limit }.unwrap_or(limit.requests_per_unit)
            }
            None => limit.requests_per_unit,
        };
        self.metrics
            .limit
            .get_or_create(&labels)
            .set(in_force as i64);
        match self.fleet.claim(&rule.stat_key, k, spec.interval).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "adaptive limits: cannot claim the interval");
                return;
            }
        }
        let agg = match self.fleet.read(&rule.stat_key, k).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "adaptive limits: cannot read the fleet's reports");
                return;
            }
        };
        if agg.reports < spec.min_reports {
            self.count("too_few_reports");
            return;
        }
        let signal = match spec.signal {
            Signal::Latency { quantile_ppm, .. } => agg
                .quantile(f64::from(quantile_ppm) / 1e6)
                .unwrap_or_default(),
            Signal::Errors { .. } => agg.error_rate(),
        };
        self.metrics.signal.get_or_create(&labels).set(signal);
        let (next, how) = next_limit(spec, in_force, signal);
        if next == in_force {
            self.count("hold");
            return;
        }
        let how = if how == Move::Hold {
            // Only a limit outside [min, max] moves on a hold: it is brought inside.
            if next > in_force {
                Move::Increase
            } else {
                Move::Decrease
            }
        } else {
            how
        };
        let signal_doc = signal_json(spec, signal, agg.reports, k);
        let request = OverrideRequest {
            domain: rule.domain.to_string(),
            descriptor,
            limit: (!pool).then_some(next),
            limit_name: if pool { None } else { limit.name.clone() },
            concurrency: pool.then_some(next),
            weight: None,
            mode: None,
            ttl_seconds: None,
            reason: Some(format!(
                "adaptive: {} {in_force} -> {next}: {}",
                how.as_str(),
                describe_signal(spec, signal, agg.reports)
            )),
        };
        let o = match crate::overrides::validate(request, rules, ACTOR, now_ms) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "adaptive limits: the override does not fit the rule");
                return;
            }
        };
        let mut after = serde_json::to_value(&o).unwrap_or_default();
        after["signal"] = signal_doc.clone();
        let audit = AuditEntry::about(&o, "override.set", ACTOR, now_ms, after);
        match self.overrides.put_guarded(&o, &audit).await {
            Ok(Guarded::Stored(_)) => {
                self.count(how.as_str());
                self.metrics.limit.get_or_create(&labels).set(next as i64);
                tracing::info!(target: "sluice::audit", rule = %rule.stat_key, before = in_force, after = next, signal, reports = agg.reports, "adaptive change");
                if let Some(n) = &self.notifier {
                    n.adaptive_change(
                        rule,
                        &o.id,
                        k * spec.interval.as_millis() as u64,
                        serde_json::json!({
                            "override_id": o.id,
                            "descriptor": o.descriptor,
                            "before": in_force,
                            "after": next,
                            "signal": signal_doc,
                        }),
                        o.reason.clone().unwrap_or_default(),
                    );
                }
                if let Ok(list) = self.overrides.load().await {
                    (self.apply)(list);
                }
            }
            Ok(Guarded::Kept(_)) => self.count("operator_override"),
            Err(e) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "adaptive limits: cannot write the override");
            }
        }
    }
}

fn signal_json(spec: &AdaptiveSpec, signal: f64, reports: u64, k: u64) -> serde_json::Value {
    let interval_ms = spec.interval.as_millis() as u64;
    match spec.signal {
        Signal::Latency { quantile_ppm, .. } => serde_json::json!({
            "signal": "latency",
            "quantile": f64::from(quantile_ppm) / 1e6,
            "value_ms": signal,
            "target_ms": spec.target(),
            "reports": reports,
            "interval_start_ms": k * interval_ms,
            "interval_ms": interval_ms,
        }),
        Signal::Errors { .. } => serde_json::json!({
            "signal": "errors",
            "value": signal,
            "target": spec.target(),
            "reports": reports,
            "interval_start_ms": k * interval_ms,
            "interval_ms": interval_ms,
        }),
    }
}

fn describe_signal(spec: &AdaptiveSpec, signal: f64, reports: u64) -> String {
    match spec.signal {
        Signal::Latency { quantile_ppm, .. } => format!(
            "latency q{} {signal:.1}ms against target {}ms ({reports} reports)",
            f64::from(quantile_ppm) / 1e6,
            spec.target()
        ),
        Signal::Errors { .. } => format!(
            "error rate {signal:.4} against target {} ({reports} reports)",
            spec.target()
        ),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
