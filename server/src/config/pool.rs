//! The limit fields beyond counting: a concurrency pool (`concurrency`, `lease_ttl`), a
//! fair-share pool (`capacity`, `weights`, `weight`) and `overflow: parent`.
//!
//! ```yaml
//! rate_limit: { concurrency: 10, lease_ttl: 300 }        # 10 leases held at once, 300 s each
//! rate_limit: { unit: second, capacity: 1000, weights: { acme: 4, "premium-*": 2 }, weight: 1 }
//! rate_limit: { unit: minute, requests_per_unit: 100, overflow: parent }
//! ```
//!
//! A pool is not a rate: `concurrency` takes no `unit` or `requests_per_unit`, and `capacity`
//! replaces `requests_per_unit` (a fair-share pool counts fixed windows of its `unit`). Each
//! field that does not apply is reported where it stands.

use super::fields::{Fields, Shape};
use super::model::{Kind, RateLimit, ShareSpec};
use super::parse::Reader;
use super::yaml::{Kind as YamlKind, Mark, Yaml};
use crate::algorithm::MAX_UNITS;
use crate::algorithm::share::MAX_WEIGHT;

/// The most leases one pool holds: a pool's leases are read whole by every operation on it.
pub const MAX_SLOTS: u64 = 10_000;
/// The longest lease: a week.
pub const MAX_LEASE_TTL: u64 = 7 * 86_400;
/// `lease_ttl` when not given, in seconds.
pub const DEFAULT_LEASE_TTL: u32 = 60;

impl Reader {
    /// `concurrency: N` with its optional `lease_ttl`, `kind`, `over_limit_status`.
    pub(super) fn concurrency_limit(
        &mut self,
        f: &Fields<'_>,
        name: Option<String>,
    ) -> Option<RateLimit> {
        for (field, v) in f.not_for(Shape::Concurrency) {
            self.invalid(v.at, Shape::Concurrency.refusal(field));
        }
        let slots = f
            .get("concurrency")
            .and_then(|c| self.integer(c, "concurrency", 0, MAX_SLOTS));
        let ttl = match f.get("lease_ttl") {
            None => Some(DEFAULT_LEASE_TTL),
            Some(t) => self
                .integer(t, "lease_ttl", 1, MAX_LEASE_TTL)
                .map(|t| t as u32),
        };
        let kind = match f.get("kind") {
            None => Some(Kind::Throttle),
            Some(k) => self.choice(
                k,
                "kind",
                &[("throttle", Kind::Throttle), ("quota", Kind::Quota)],
            ),
        };
        let status = match f.get("over_limit_status") {
            None => Some(429),
            Some(s) => self
                .integer(s, "over_limit_status", 400, 599)
                .map(|s| s as u16),
        };
        Some(RateLimit {
            name,
            kind: kind?,
            over_limit_status: status?,
            ..RateLimit::concurrency(slots?, ttl?)
        })
    }

    /// Reports the fields given that do not apply to this limit's shape: a counted limit or, with
    /// `capacity`, a fair-share pool. Whether all of them apply.
    pub(super) fn windowed_fields(&mut self, f: &Fields<'_>) -> bool {
        let shape = if f.get("capacity").is_some() {
            Shape::FairShare
        } else {
            Shape::Counted
        };
        let mut fit = true;
        for (field, v) in f.not_for(shape) {
            self.invalid(v.at, shape.refusal(field));
            fit = false;
        }
        fit
    }

    /// `capacity` with its `weights` and default `weight`: `None` without `capacity`,
    /// `Some(None)` when something is wrong (already reported).
    pub(super) fn fair_share(
        &mut self,
        f: &Fields<'_>,
        valid: bool,
    ) -> Option<Option<(u64, ShareSpec)>> {
        let capacity = f.get("capacity")?;
        let capacity = self.integer(capacity, "capacity", 0, MAX_UNITS);
        let default_weight = match f.get("weight") {
            None => Some(1),
            Some(w) => self
                .integer(w, "weight", 0, u64::from(MAX_WEIGHT))
                .map(|w| w as u32),
        };
        let weights = match f.get("weights") {
            None => Some(Vec::new()),
            Some(w) => self.weights(w),
        };
        Some(match (valid, capacity, default_weight, weights) {
            (true, Some(capacity), Some(default_weight), Some(weights)) => Some((
                capacity,
                ShareSpec {
                    weights,
                    default_weight,
                },
            )),
            _ => None,
        })
    }

    /// `weights: { value: weight, "pattern*": weight }`.
    fn weights(&mut self, y: &Yaml) -> Option<Vec<(String, u32)>> {
        let YamlKind::Map(pairs) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`weights` must map tenant values to weights, found {}",
                    y.describe()
                ),
            );
            return None;
        };
        let mut out: Vec<(String, u32)> = Vec::with_capacity(pairs.len());
        let mut complete = true;
        for (k, v) in pairs {
            let Some(value) = self.string(k, "weights") else {
                complete = false;
                continue;
            };
            if out.iter().any(|(seen, _)| *seen == value) {
                self.invalid(k.at, format!("tenant '{value}' is weighted twice"));
                complete = false;
                continue;
            }
            match self.integer(v, "weight", 0, u64::from(MAX_WEIGHT)) {
                Some(w) => out.push((value, w as u32)),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    /// `overflow: parent`: where it was given, if it was and is valid.
    pub(super) fn overflow(&mut self, f: &Fields<'_>) -> Option<Mark> {
        let y = f.get("overflow")?;
        self.choice(y, "overflow", &[("parent", ())])?;
        if f.get("concurrency").is_some() {
            // Reported by `concurrency_limit`.
            return None;
        }
        Some(y.at)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{Algorithm, Limit, parse_str};

    fn errors(yaml: &str) -> String {
        parse_str("p.yaml", yaml).unwrap_err().to_string()
    }

    #[test]
    fn a_concurrency_pool() {
        let rules = parse_str(
            "p.yaml",
            "domain: d\ndescriptors:\n  - key: upload\n    rate_limit: {concurrency: 3, lease_ttl: 90, name: up}\n  - key: job\n    rate_limit: {concurrency: 1}\n",
        )
        .unwrap();
        let up = &rules.lookup("d", &[("upload", "x")]).unwrap().limit;
        let Limit::Limited(l) = up else { panic!() };
        assert_eq!(l[0].algorithm, Algorithm::Concurrency);
        assert_eq!(l[0].requests_per_unit, 3);
        assert_eq!(l[0].window_secs(), 90);
        assert_eq!(l[0].name.as_deref(), Some("up"));
        let job = rules.lookup("d", &[("job", "x")]).unwrap();
        assert_eq!(job.limit.limits()[0].window_secs(), 60, "the default TTL");
        assert!(
            rules
                .dump
                .contains("d.upload: 3 concurrent, lease 90 s name=up"),
            "{}",
            rules.dump
        );
    }

    #[test]
    fn a_fair_share_pool() {
        let rules = parse_str(
            "p.yaml",
            "domain: d\ndescriptors:\n  - key: tenant\n    rate_limit:\n      unit: second\n      capacity: 100\n      weights: {acme: 4, \"pro-*\": 2}\n      weight: 0\n",
        )
        .unwrap();
        let rule = rules.lookup("d", &[("tenant", "x")]).unwrap();
        let l = &rule.limit.limits()[0];
        assert_eq!(l.algorithm, Algorithm::FairShare);
        assert_eq!(l.requests_per_unit, 100);
        let spec = l.share.as_ref().unwrap();
        assert_eq!(spec.weight_of("acme"), 4);
        assert_eq!(spec.weight_of("pro-x"), 2);
        assert_eq!(spec.weight_of("other"), 0);
        assert!(
            rules.dump.contains("100 per SECOND fair_share"),
            "{}",
            rules.dump
        );
    }

    #[test]
    fn misplaced_pool_fields_are_reported_where_they_stand() {
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {concurrency: 2, unit: second, requests_per_unit: 5}\n",
        );
        assert!(
            e.contains("p.yaml:4:40: `unit` does not apply to a concurrency pool"),
            "{e}"
        );
        assert!(
            e.contains("p.yaml:4:67: `requests_per_unit` does not apply"),
            "{e}"
        );
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5, lease_ttl: 3, weight: 2}\n",
        );
        assert!(
            e.contains("4:65: `lease_ttl` applies only to a pool with `concurrency`"),
            "{e}"
        );
        assert!(
            e.contains("4:76: `weight` applies only to a fair-share pool"),
            "{e}"
        );
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, capacity: 5, requests_per_unit: 5, weights: {a: 1001}}\n",
        );
        assert!(e.contains("`requests_per_unit` with `capacity`"), "{e}");
        assert!(e.contains("`weight` must be at most 1000"), "{e}");
        let e =
            errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {concurrency: 20000}\n");
        assert!(e.contains("`concurrency` must be at most 10000"), "{e}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {concurrency: 2, lease_ttl: 0}\n",
        );
        assert!(e.contains("`lease_ttl` must be at least 1"), "{e}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limits:\n      - {concurrency: 2}\n      - {concurrency: 3, lease_ttl: 5}\n",
        );
        assert!(e.contains("6:9: this limit has the same window"), "{e}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, concurrency: 1}\n",
        );
        assert!(
            e.contains("`concurrency` must not be set together with `unlimited: true`"),
            "{e}"
        );
    }

    #[test]
    fn overflow_needs_a_counted_parent() {
        let ok = parse_str(
            "p.yaml",
            "domain: d\ndescriptors:\n  - key: team\n    rate_limit: {unit: minute, requests_per_unit: 10}\n    descriptors:\n      - key: app\n        rate_limit: {unit: minute, requests_per_unit: 2, overflow: parent}\n",
        )
        .unwrap();
        let app = ok.lookup("d", &[("team", "t"), ("app", "a")]).unwrap();
        let parent = app.overflow.as_ref().unwrap();
        assert_eq!(&*parent.stat_key, "d.team");
        assert!(
            ok.dump
                .contains("d.team.app: 2 per MINUTE, overflow=d.team"),
            "{}",
            ok.dump
        );

        let e = errors(
            "domain: d\ndescriptors:\n  - key: team\n    descriptors:\n      - key: app\n        rate_limit: {unit: minute, requests_per_unit: 2, overflow: parent}\n",
        );
        assert!(
            e.contains(
                "p.yaml:6:68: `overflow: parent` needs a `rate_limit` on the parent descriptor"
            ),
            "{e}"
        );
        let e = errors(
            "domain: d\ndescriptors:\n  - key: app\n    rate_limit: {unit: minute, requests_per_unit: 2, overflow: parent}\n",
        );
        assert!(e.contains("has no parent descriptor"), "{e}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: team\n    rate_limit: {concurrency: 2}\n    descriptors:\n      - key: app\n        rate_limit: {unit: minute, requests_per_unit: 2, overflow: parent}\n",
        );
        assert!(
            e.contains("the parent's limit must be a counted limit"),
            "{e}"
        );
        let e = errors(
            "domain: d\ndescriptors:\n  - key: app\n    rate_limit: {unit: minute, requests_per_unit: 2, overflow: sideways}\n",
        );
        assert!(
            e.contains("unknown overflow 'sideways'; expected one of: parent"),
            "{e}"
        );
    }
}
