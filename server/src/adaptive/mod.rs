//! Adaptive limits: Sluice moves a limit that declares `adaptive` (`config::adaptive`) between
//! its bounds to keep the upstream it protects at a target latency quantile or error rate.
//!
//! 1. **Reports.** Clients and proxies report each response's latency and status
//!    (`POST /reports`, [`crate::http`]). [`Reports::record`] attributes each to the rule its
//!    descriptor matches and adds it to that rule's [`sketch::Aggregate`] for the interval: a
//!    fixed log-scale histogram, so memory is bounded by the rules with `adaptive` in the config,
//!    and the reports one rule counts per interval by [`MAX_REPORTS_PER_INTERVAL`]. The check
//!    path never touches any of this.
//! 2. **Fleet.** At each interval boundary every replica adds its aggregate to the interval's
//!    fleet-wide one ([`fleet`]: a Redis hash per rule per interval, or this process alone).
//! 3. **Controller.** A moment later one replica per rule and interval (a short Redis lock)
//!    reads the fleet's aggregate, computes the signal, applies the [`law`] and, when the limit
//!    changes, writes it as an override by the actor [`ACTOR`] through the override store:
//!    every replica applies it as it applies any override, and it is audited with the signal
//!    that caused it. An override of the same target set by anyone else wins: the controller
//!    leaves it alone ([`crate::overrides::OverrideStore::put_guarded`]).
//!
//! 4. **Standing** ([`standing`]): fair-share rules with `standing` lower the weight of a tenant
//!    they keep refusing and restore it once the tenant behaves, through the same fleet-wide
//!    decision and the same guarded, audited overrides (actor `standing`).
//!
//! Boundary: reads the rule set and writes through [`crate::overrides`]; of the limiter it reads
//! only the record of refused tenants ([`crate::limiter::standing`]; start-up hands it the live
//! rules and a way to apply overrides at once).

pub mod cadence;
pub mod controller;
pub mod fleet;
pub mod law;
pub mod sketch;
pub mod standing;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::config::RuleSet;
use crate::config::adaptive::MAX_LATENCY_MS;
use crate::metrics::ResultLabels;

pub use controller::Controller;
use sketch::Aggregate;

/// The `by` of the overrides the controller writes.
pub const ACTOR: &str = "adaptive";
/// Reports one rule counts per interval on one replica; more are dropped (and counted as such).
/// The histogram's size does not grow with them; this bounds the work spent on a flood.
pub const MAX_REPORTS_PER_INTERVAL: u64 = 1_000_000;

/// One response, as a client reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub entries: Vec<(String, String)>,
    pub latency_ms: f64,
    pub status: u16,
}

impl Report {
    /// Why the report cannot be true, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.entries.is_empty() {
            return Err("a report's `descriptor` needs at least one entry".into());
        }
        if !self.latency_ms.is_finite()
            || self.latency_ms < 0.0
            || self.latency_ms > MAX_LATENCY_MS as f64
        {
            return Err(format!(
                "`latency_ms` must be between 0 and {MAX_LATENCY_MS} (an hour), found {}",
                self.latency_ms
            ));
        }
        if !(100..=599).contains(&self.status) {
            return Err(format!(
                "`status` must be an HTTP status (100 to 599), found {}",
                self.status
            ));
        }
        Ok(())
    }
}

/// What became of one batch's reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub accepted: u64,
    /// Their descriptor matches no adaptive rule.
    pub unmatched: u64,
    /// Their rule had counted [`MAX_REPORTS_PER_INTERVAL`] already this interval.
    pub dropped: u64,
}

/// This replica's reports of the current interval, per adaptive rule (by stats key).
pub struct Reports {
    slots: RwLock<HashMap<Arc<str>, Arc<Mutex<Aggregate>>>>,
    counted: Family<ResultLabels, Counter>,
}

impl Reports {
    /// Counts reports in `counted` (`sluice_adaptive_reports_total{result}`).
    pub fn new(counted: Family<ResultLabels, Counter>) -> Self {
        Self {
            slots: RwLock::default(),
            counted,
        }
    }

    /// Adds checked reports of `domain` to their rules' aggregates.
    pub fn record(&self, rules: &RuleSet, domain: &str, reports: &[Report]) -> Tally {
        let mut tally = Tally::default();
        for r in reports {
            let entries: Vec<(&str, &str)> = r
                .entries
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let Some(rule) = rules
                .lookup(domain, &entries)
                .filter(|rule| rule.limit.adaptive().is_some())
            else {
                tally.unmatched += 1;
                continue;
            };
            let slot = self.slot(&rule.stat_key);
            let mut agg = slot.lock();
            if agg.reports >= MAX_REPORTS_PER_INTERVAL {
                tally.dropped += 1;
                continue;
            }
            agg.add(r.latency_ms, r.status >= 500);
            tally.accepted += 1;
        }
        for (result, n) in [
            ("accepted", tally.accepted),
            ("unmatched", tally.unmatched),
            ("dropped", tally.dropped),
        ] {
            if n > 0 {
                self.counted
                    .get_or_create(&ResultLabels { result })
                    .inc_by(n);
            }
        }
        tally
    }

    /// Counts `n` reports refused as impossible (their whole batch was answered 400).
    pub fn refused(&self, n: u64) {
        self.counted
            .get_or_create(&ResultLabels { result: "refused" })
            .inc_by(n.max(1));
    }

    /// The slot of a rule, made on first use. Only rules of the config get one (the caller
    /// found the rule there), so the map is bounded by the config.
    fn slot(&self, rule: &Arc<str>) -> Arc<Mutex<Aggregate>> {
        if let Some(s) = self.slots.read().get(rule) {
            return Arc::clone(s);
        }
        Arc::clone(self.slots.write().entry(Arc::clone(rule)).or_default())
    }

    /// The interval's aggregate of `rule`, leaving an empty one for the next.
    pub fn take(&self, rule: &str) -> Aggregate {
        match self.slots.read().get(rule) {
            Some(s) => std::mem::take(&mut *s.lock()),
            None => Aggregate::default(),
        }
    }

    /// Forgets rules that are no longer adaptive (after a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.slots.write().retain(|k, _| keep(k));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn report(value: &str, latency_ms: f64, status: u16) -> Report {
        Report {
            entries: vec![("upstream".into(), value.into())],
            latency_ms,
            status,
        }
    }

    #[test]
    fn impossible_reports_are_refused() {
        assert!(report("x", 0.0, 200).check().is_ok());
        assert!(report("x", 3_600_000.0, 599).check().is_ok());
        for (r, why) in [
            (report("x", -1.0, 200), "`latency_ms` must be between 0"),
            (
                report("x", 3_600_000.5, 200),
                "`latency_ms` must be between 0",
            ),
            (report("x", f64::NAN, 200), "`latency_ms`"),
            (report("x", 1.0, 99), "`status` must be an HTTP status"),
            (report("x", 1.0, 600), "`status` must be an HTTP status"),
            (
                Report {
                    entries: vec![],
                    latency_ms: 1.0,
                    status: 200,
                },
                "at least one entry",
            ),
        ] {
            let e = r.check().unwrap_err();
            assert!(e.contains(why), "{r:?}: {e}");
        }
    }

    #[test]
    fn reports_go_to_their_adaptive_rule_within_the_cap() {
        let rules = crate::config::parse_str(
            "a.yaml",
            "domain: d\ndescriptors:\n  - key: upstream\n    value: pay\n    rate_limit: {concurrency: 5, adaptive: {signal: latency, target: 100ms, min: 1, max: 10}}\n  - key: upstream\n    value: plain\n    rate_limit: {concurrency: 5}\n",
        )
        .unwrap();
        let reports = Reports::new(Family::default());
        let tally = reports.record(
            &rules,
            "d",
            &[
                report("pay", 10.0, 200),
                report("pay", 20.0, 503),
                report("plain", 20.0, 200),
                report("other", 20.0, 200),
            ],
        );
        assert_eq!(
            tally,
            Tally {
                accepted: 2,
                unmatched: 2,
                dropped: 0
            }
        );
        assert_eq!(
            reports
                .record(&rules, "nope", &[report("pay", 1.0, 200)])
                .unmatched,
            1
        );
        let agg = reports.take("d.upstream_pay");
        assert_eq!((agg.reports, agg.errors), (2, 1));
        assert_eq!(reports.take("d.upstream_pay").reports, 0);

        reports.slot(&Arc::from("d.upstream_pay")).lock().reports = MAX_REPORTS_PER_INTERVAL;
        let tally = reports.record(&rules, "d", &[report("pay", 1.0, 200)]);
        assert_eq!(tally.dropped, 1);
    }
}
