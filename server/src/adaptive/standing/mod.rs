//! Weights that follow behaviour: a fair-share rule with `standing` (`config::standing`) lowers
//! the weight of a tenant it keeps refusing, and gives it back once the tenant stays within its
//! share.
//!
//! 1. **Refusals.** The limiter records the tenants such a pool refused
//!    ([`crate::limiter::standing::Refusals`]). At each window boundary (windows are the pool's
//!    own, aligned to the epoch) every replica adds its set to the window's fleet-wide one
//!    ([`Fleet::add_refused`]).
//! 2. **Decision.** A settling delay later, one replica per rule and window (the fleet's claim)
//!    reads the tenants refused in each of the last `after` windows, and those refused in any of
//!    the last `recover_after`:
//!    - a tenant refused in every one of the last `after` windows and not penalised yet gets an
//!      override of its weight, `weight × penalty` rounded down, by the actor [`ACTOR`] (a tier
//!      named in `weights` is left alone with `keep_tier_weights`);
//!    - a penalised tenant refused in none of the last `recover_after` windows gets its override
//!      removed, and its configured weight back.
//!
//!    Both are guarded writes: an operator's override of the tenant wins, and is never replaced
//!    or removed here. Every change is in the audit log (`override.set` / `override.delete` by
//!    `standing`, with the windows that caused it) and applies on every replica at once as any
//!    override does. A penalty is not compounded: a penalised tenant that keeps being refused
//!    stays at `weight × penalty`.
//!
//! Bounds: each replica remembers at most
//! [`MAX_TENANTS_PER_WINDOW`](crate::limiter::standing::MAX_TENANTS_PER_WINDOW) refused tenants
//! per rule and window, and a rule holds at most [`MAX_PENALISED`] penalties at once.

mod tenants;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::cadence::{Cadence, every_tick};
use super::controller::{Apply, Rules, rules_with};
use super::fleet::Fleet;
use crate::config::{RateLimit, Rule, RuleSet};
use crate::limiter::standing::Refusals;
use crate::metrics::{ResultLabels, RuleLabels, Shared};
use crate::overrides::backend::{AuditEntry, Guarded};
use crate::overrides::{Override, OverrideRequest, OverrideStore};
use tenants::{target, tenant_of};

/// The `by` of the overrides standing writes.
pub const ACTOR: &str = "standing";
/// Penalties one rule holds at once; tenants past it are not penalised (counted as `bound`).
pub const MAX_PENALISED: usize = 1_000;

/// Standing's metric families (`crate::metrics`).
#[derive(Clone, Default)]
pub struct StandingMetrics {
    pub penalised: prometheus_client::metrics::family::Family<
        RuleLabels,
        prometheus_client::metrics::gauge::Gauge,
    >,
    pub changes: prometheus_client::metrics::family::Family<
        ResultLabels,
        prometheus_client::metrics::counter::Counter,
    >,
}

pub struct Standing {
    refusals: Arc<Refusals>,
    fleet: Arc<Fleet>,
    overrides: Arc<OverrideStore>,
    rules: Rules,
    apply: Apply,
    metrics: StandingMetrics,
    cadence: Cadence,
}

/// What one window's decision found for a rule.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decided {
    pub penalised: Vec<String>,
    pub recovered: Vec<String>,
}

impl Standing {
    pub fn new(
        refusals: Arc<Refusals>,
        fleet: Arc<Fleet>,
        overrides: Arc<OverrideStore>,
        rules: Rules,
        apply: Apply,
        metrics: StandingMetrics,
    ) -> Self {
        Self {
            refusals,
            fleet,
            overrides,
            rules,
            apply,
            metrics,
            cadence: Cadence::default(),
        }
    }

    /// Runs [`Standing::tick`] every [`TICK`](super::cadence::TICK) on `clock` until the task is
    /// dropped.
    pub fn spawn(
        self: Arc<Self>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> tokio::task::JoinHandle<()> {
        every_tick(clock, move |now_ms| {
            let this = Arc::clone(&self);
            async move {
                this.tick(now_ms).await;
            }
        })
    }

    /// Does whatever is due at `now_ms` (wall clock, ms since the epoch); returns what the
    /// windows decided here came to, by rule.
    pub async fn tick(&self, now_ms: u64) -> Vec<(Arc<str>, Decided)> {
        let rules = (self.rules)();
        let standing = rules_with(&rules, |l| l.standing());
        self.refusals
            .retain(|k| standing.iter().any(|(r, _)| &*r.stat_key == k));
        let mut due = Vec::new();
        for (rule, limit) in &standing {
            let Some(spec) = limit.standing.as_deref() else {
                continue;
            };
            let window = Duration::from_secs(limit.window_secs().max(1));
            let key = &rule.stat_key;
            let now = self.cadence.due(key, window, now_ms);
            if let Some(k) = now.flush {
                let tenants = self.refusals.take(key);
                let keep = spec.after.max(spec.recover_after) + 2;
                if let Err(e) = self.fleet.add_refused(key, k, &tenants, keep, window).await {
                    tracing::warn!(rule = %key, error = %e, "standing: cannot add this replica's refusals to the fleet's");
                }
            }
            if let Some(k) = now.decide {
                due.push((Arc::clone(rule), limit.clone(), k));
            }
        }
        let mut out = Vec::new();
        if due.is_empty() {
            return out;
        }
        let current = match self.overrides.load().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "standing: cannot read the overrides; skipping the window");
                return out;
            }
        };
        let mut changed = false;
        for (rule, limit, k) in due {
            if let Some(d) = self
                .decide(&rules, &rule, &limit, k, &current, now_ms)
                .await
            {
                changed |= !d.penalised.is_empty() || !d.recovered.is_empty();
                out.push((Arc::clone(&rule.stat_key), d));
            }
        }
        if changed && let Ok(list) = self.overrides.load().await {
            (self.apply)(list);
        }
        out
    }

    fn count(&self, result: &'static str, n: usize) {
        if n > 0 {
            self.metrics
                .changes
                .get_or_create(&ResultLabels { result })
                .inc_by(n as u64);
        }
    }

    /// Decides window `k` of `rule`, if this replica wins it.
    async fn decide(
        &self,
        rules: &RuleSet,
        rule: &Arc<Rule>,
        limit: &RateLimit,
        k: u64,
        current: &[Override],
        now_ms: u64,
    ) -> Option<Decided> {
        let spec = limit.standing.as_deref()?;
        let share = limit.share.as_deref()?;
        let window = Duration::from_secs(limit.window_secs().max(1));
        let name = format!("standing:{}", rule.stat_key);
        match self.fleet.claim(&name, k, window).await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "standing: cannot claim the window");
                return None;
            }
        }
        let since = |n: u64| (k + 1).saturating_sub(n)..=k;
        let (bad, recent) = match (
            self.fleet
                .refused(&rule.stat_key, since(spec.after), true)
                .await,
            self.fleet
                .refused(&rule.stat_key, since(spec.recover_after), false)
                .await,
        ) {
            (Ok(b), Ok(r)) => (b, r),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(rule = %rule.stat_key, error = %e, "standing: cannot read the fleet's refusals");
                return None;
            }
        };
        let keep = spec.after.max(spec.recover_after);
        if let Err(e) = self
            .fleet
            .forget_before(&rule.stat_key, (k + 1).saturating_sub(keep))
            .await
        {
            tracing::warn!(rule = %rule.stat_key, error = %e, "standing: cannot forget old windows");
        }
        let bad = if k + 1 < spec.after {
            HashSet::new()
        } else {
            bad
        };
        // The overrides of this rule's tenants, by tenant.
        let mine: HashMap<&str, &Override> = current
            .iter()
            .filter(|o| !o.lapsed(now_ms / 1000) && o.domain == *rule.domain)
            .filter_map(|o| Some((tenant_of(rule, &o.descriptor)?, o)))
            .collect();
        let mut penalised = mine.values().filter(|o| o.by == ACTOR).count();
        let mut decided = Decided::default();

        let mut bad: Vec<&String> = bad.iter().collect();
        bad.sort();
        for tenant in bad {
            match mine.get(tenant.as_str()) {
                Some(o) if o.by == ACTOR => continue,
                Some(_) => {
                    self.count("operator_override", 1);
                    continue;
                }
                None => {}
            }
            let tier = share.tier_of(tenant);
            if spec.keep_tier_weights && tier.is_some() {
                self.count("tier_kept", 1);
                continue;
            }
            if penalised >= MAX_PENALISED {
                self.count("bound", 1);
                continue;
            }
            let weight = share.weight_of(tenant);
            let lowered = spec.penalised(weight);
            if lowered == weight {
                continue;
            }
            let reason = format!(
                "standing: refused in {} consecutive windows of {} s; weight {weight} -> {lowered}",
                spec.after,
                window.as_secs()
            );
            let facts = serde_json::json!({
                "refused_windows": spec.after,
                "window_secs": window.as_secs(),
                "last_window_start_ms": k * window.as_millis() as u64,
                "configured_weight": weight,
            });
            let request = OverrideRequest {
                domain: rule.domain.to_string(),
                descriptor: target(rule, tenant),
                limit: None,
                limit_name: None,
                concurrency: None,
                weight: Some(lowered),
                mode: None,
                ttl_seconds: None,
                reason: Some(reason),
            };
            if self.penalise(rules, request, facts, now_ms).await {
                penalised += 1;
                decided.penalised.push(tenant.clone());
            }
        }

        let mut lifted: Vec<(&str, &Override)> = mine
            .iter()
            .filter(|(t, o)| o.by == ACTOR && !recent.contains(**t))
            .map(|(t, o)| (*t, *o))
            .collect();
        lifted.sort_by_key(|(t, _)| *t);
        for (tenant, o) in lifted {
            let audit = AuditEntry::about(
                o,
                "override.delete",
                ACTOR,
                now_ms,
                serde_json::json!({
                    "standing": {
                        "recovered_after_windows": spec.recover_after,
                        "window_secs": window.as_secs(),
                        "last_window_start_ms": k * window.as_millis() as u64,
                    }
                }),
            );
            match self.overrides.delete_guarded(&o.id, ACTOR, &audit).await {
                Ok(Guarded::Stored(_)) => {
                    penalised = penalised.saturating_sub(1);
                    decided.recovered.push(tenant.to_owned());
                    tracing::info!(target: "sluice::audit", rule = %rule.stat_key, tenant, "standing: weight restored");
                }
                Ok(Guarded::Kept(_)) => self.count("operator_override", 1),
                Err(e) => {
                    self.count("error", 1);
                    tracing::warn!(rule = %rule.stat_key, error = %e, "standing: cannot remove a penalty");
                }
            }
        }
        self.count("penalised", decided.penalised.len());
        self.count("recovered", decided.recovered.len());
        self.metrics
            .penalised
            .get_or_create(&RuleLabels {
                rule: Shared(Arc::clone(&rule.stat_key)),
            })
            .set(penalised as i64);
        Some(decided)
    }

    /// Writes one penalty (guarded); whether it was stored.
    async fn penalise(
        &self,
        rules: &RuleSet,
        request: OverrideRequest,
        facts: serde_json::Value,
        now_ms: u64,
    ) -> bool {
        let o = match crate::overrides::validate(request, rules, ACTOR, now_ms) {
            Ok(o) => o,
            Err(e) => {
                self.count("error", 1);
                tracing::warn!(error = %e, "standing: the penalty does not fit the rule");
                return false;
            }
        };
        let mut after = serde_json::to_value(&o).unwrap_or_default();
        after["standing"] = facts;
        let audit = AuditEntry::about(&o, "override.set", ACTOR, now_ms, after);
        match self.overrides.put_guarded(&o, &audit).await {
            Ok(Guarded::Stored(_)) => {
                tracing::info!(target: "sluice::audit", id = %o.id, reason = o.reason.as_deref().unwrap_or_default(), "standing: weight penalised");
                true
            }
            Ok(Guarded::Kept(_)) => {
                self.count("operator_override", 1);
                false
            }
            Err(e) => {
                self.count("error", 1);
                tracing::warn!(error = %e, "standing: cannot write a penalty");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
