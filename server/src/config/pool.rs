//! The limit fields beyond counting: a concurrency pool (`concurrency`, `lease_ttl`, and a
//! `queue` whose tenants may be weighted), a fair-share pool (`capacity`, `weights`, `weight`) and
//! `overflow: parent`.
//!
//! ```yaml
//! rate_limit: { concurrency: 10, lease_ttl: 300 }        # 10 leases held at once, 300 s each
//! rate_limit: { concurrency: 3, queue: { max_wait_ms: 2000, max_depth: 500 }, weights: { acme: 2 } }
//! rate_limit: { unit: second, capacity: 1000, weights: { acme: 4, "premium-*": 2 }, weight: 1 }
//! rate_limit: { unit: minute, requests_per_unit: 100, overflow: parent }
//! ```
//!
//! A pool is not a rate: `concurrency` takes no `unit` or `requests_per_unit`, and `capacity`
//! replaces `requests_per_unit` (a fair-share pool counts fixed windows of its `unit`). Each
//! field that does not apply is reported where it stands.

use std::sync::Arc;
use std::time::Duration;

use super::fields::{Fields, Shape};
use super::model::{Kind, QueueSpec, RateLimit, ShareSpec};
use super::parse::Reader;
use super::yaml::{Kind as YamlKind, Mark, Yaml};
use crate::algorithm::MAX_UNITS;
use crate::algorithm::queue::{MAX_DEPTH, MAX_WAIT_MS};
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
        let queue = match f.get("queue") {
            None => Some(None),
            Some(q) => self.queue(q).map(Some),
        };
        // Weights only order a queue's tenants: without a queue they would mean nothing.
        let share = match (f.get("weights").or(f.get("weight")), &queue) {
            (None, _) => Some(None),
            (Some(w), Some(None)) => {
                self.invalid(
                    w.at,
                    format!(
                        "`{}` on a concurrency pool orders its queue's tenants: add a `queue`",
                        if f.get("weights").is_some() {
                            "weights"
                        } else {
                            "weight"
                        }
                    ),
                );
                None
            }
            (Some(_), _) => self.share_spec(f).map(|s| Some(Arc::new(s))),
        };
        Some(RateLimit {
            name,
            kind: kind?,
            over_limit_status: status?,
            share: share?,
            queue: queue?,
            adaptive: match f.get("adaptive") {
                None => None,
                Some(a) => Some(Arc::new(self.adaptive(a, MAX_SLOTS)?)),
            },
            ..RateLimit::concurrency(slots?, ttl?)
        })
    }

    /// `queue: {max_wait_ms: N, max_depth: N}`, both required.
    pub(super) fn queue(&mut self, y: &Yaml) -> Option<QueueSpec> {
        let YamlKind::Map(pairs) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`queue` must be a mapping with `max_wait_ms` and `max_depth`, found {}",
                    y.describe()
                ),
            );
            return None;
        };
        let (mut wait, mut depth, mut complete) = (None, None, true);
        let mut seen = [false; 2];
        for (k, v) in pairs {
            let Some(field) = self.string(k, "queue") else {
                complete = false;
                continue;
            };
            let read = match field.as_str() {
                "max_wait_ms" => {
                    seen[0] = true;
                    wait = self.integer(v, "max_wait_ms", 1, MAX_WAIT_MS);
                    wait.is_some()
                }
                "max_depth" => {
                    seen[1] = true;
                    depth = self.integer(v, "max_depth", 1, MAX_DEPTH);
                    depth.is_some()
                }
                other => {
                    self.invalid(
                        k.at,
                        format!(
                            "unknown field `{other}` in `queue`; expected `max_wait_ms` and \
                             `max_depth`"
                        ),
                    );
                    false
                }
            };
            complete &= read;
        }
        for (field, seen) in ["max_wait_ms", "max_depth"].into_iter().zip(seen) {
            if !seen {
                self.invalid(y.at, format!("`queue` needs `{field}`"));
                complete = false;
            }
        }
        Some(QueueSpec {
            max_wait: Duration::from_millis(wait?),
            max_depth: depth?,
        })
        .filter(|_| complete)
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
        let spec = self.share_spec(f);
        Some(match (valid, capacity, spec) {
            (true, Some(capacity), Some(spec)) => Some((capacity, spec)),
            _ => None,
        })
    }

    /// `weights` with the default `weight`, of a fair-share pool or a queued concurrency pool.
    fn share_spec(&mut self, f: &Fields<'_>) -> Option<ShareSpec> {
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
        Some(ShareSpec {
            weights: weights?,
            default_weight: default_weight?,
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
    fn a_queued_pool_and_what_is_refused_about_queues() {
        let rules = parse_str(
            "p.yaml",
            "domain: d\ndescriptors:\n  - key: up\n    rate_limit:\n      concurrency: 3\n      queue: {max_wait_ms: 2000, max_depth: 500}\n      weights: {acme: 2}\n",
        )
        .unwrap();
        let l = &rules.lookup("d", &[("up", "x")]).unwrap().limit.limits()[0];
        let q = l.queue.unwrap();
        assert_eq!((q.max_wait.as_millis(), q.max_depth), (2000, 500));
        assert_eq!(l.share.as_ref().unwrap().weight_of("acme"), 2);
        assert!(
            rules
                .dump
                .contains("3 concurrent, lease 60 s queue=2000ms/500 weights=[acme=2]"),
            "{}",
            rules.dump
        );
        let shared = parse_str(
            "p.yaml",
            "domain: d\ndescriptors:\n  - key: t\n    rate_limit: {unit: second, capacity: 9, queue: {max_wait_ms: 1500, max_depth: 20}}\n",
        )
        .unwrap();
        let l = &shared.lookup("d", &[("t", "x")]).unwrap().limit.limits()[0];
        assert_eq!(l.queue.unwrap().max_depth, 20);
        assert!(
            shared.dump.contains("fair_share queue=1500ms/20"),
            "{}",
            shared.dump
        );

        let cases = [
            (
                "{unit: second, requests_per_unit: 5, queue: {max_wait_ms: 1, max_depth: 1}}",
                "4:61: `queue` applies only to a pool: one with `concurrency` or a `capacity`",
            ),
            (
                "{unit: second, capacity: 5, queue: {max_wait_ms: 1}}",
                "`queue` needs `max_depth`",
            ),
            (
                "{concurrency: 1, queue: {max_wait_ms: 60001, max_depth: 1}}",
                "4:55: `max_wait_ms` must be at most 60000",
            ),
            (
                "{concurrency: 1, queue: {max_wait_ms: 10, max_depth: 0}}",
                "`max_depth` must be at least 1",
            ),
            (
                "{concurrency: 1, queue: {max_wait_ms: 1.5, max_depth: 3}}",
                "4:55: `max_wait_ms` must be",
            ),
            (
                "{concurrency: 1, queue: {max_wait_ms: 10}}",
                "4:41: `queue` needs `max_depth`",
            ),
            (
                "{concurrency: 1, queue: {max_wait_ms: 10, max_depth: 3, order: fifo}}",
                "unknown field `order` in `queue`",
            ),
            ("{concurrency: 1, queue: 5}", "`queue` must be a mapping"),
            (
                "{concurrency: 1, weights: {a: 2}}",
                "`weights` on a concurrency pool orders its queue's tenants: add a `queue`",
            ),
        ];
        for (limit, expected) in cases {
            let e = errors(&format!(
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {limit}\n"
            ));
            assert!(e.contains(expected), "{limit}: {e}");
        }
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
