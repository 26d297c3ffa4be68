//! `rate_limit` (one limit, or `unlimited: true`) and `rate_limits` (several limits that must all
//! pass), each field checked where it stands.
//!
//! A file without the fields beyond the reference's (`unit_multiplier`, `algorithm`, `burst`,
//! `calendar`, `kind`, `over_limit_status`, `rate_limits`) reads exactly as the reference reads it.

use super::fields::{Fields, Place, Shape};
use super::model::{Algorithm, Kind, Limit, RateLimit, Unit};
use super::parse::Reader;
use super::yaml::{Kind as YamlKind, Mark, Yaml};
use crate::algorithm::MAX_UNITS;

/// A descriptor's limits and the rule names its match drops from the request.
#[derive(Debug)]
pub(super) struct RawLimits {
    pub limit: Limit,
    pub replaces: Vec<String>,
    /// Where `overflow: parent` was given, if it was (the parent is checked once the tree is
    /// built).
    pub overflow: Option<Mark>,
    /// Where the `adaptive` block was given, if one was (its rule's path is checked once the
    /// tree is built).
    pub adaptive: Option<Mark>,
    /// Where a `standing` block was given, if one was (checked like `adaptive`'s path).
    pub standing: Option<Mark>,
}

/// The longest window: its end in microseconds since the epoch must stay exact in Lua's doubles.
const MAX_WINDOW_SECS: u64 = u32::MAX as u64;

impl Reader {
    /// `rate_limit: {...}`.
    pub(super) fn rate_limit(&mut self, y: &Yaml) -> Option<RawLimits> {
        if !matches!(y.kind, YamlKind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`rate_limit` must be a mapping with `unit` and `requests_per_unit` \
                     (or `unlimited: true`), found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::RateLimit);
        let name = self.name(&f);
        let replaces = self.replaces(f.get("replaces"), name.as_deref());
        if self.flag(&f, "unlimited") {
            for (field, v) in f.not_for(Shape::Unlimited) {
                self.invalid(v.at, Shape::Unlimited.refusal(field));
            }
            return Some(RawLimits {
                limit: Limit::Unlimited { name },
                replaces,
                overflow: None,
                adaptive: None,
                standing: None,
            });
        }
        let overflow = self.overflow(&f);
        let limit = self.one_limit(&f, name)?;
        Some(RawLimits {
            limit: Limit::Limited(Box::new([limit])),
            replaces,
            overflow,
            adaptive: f.get("adaptive").map(|a| a.at),
            standing: f.get("standing").map(|s| s.at),
        })
    }

    /// `rate_limits: [{...}, ...]`: at least one limit, no two sharing a counter.
    pub(super) fn rate_limits(&mut self, y: &Yaml) -> Option<RawLimits> {
        let YamlKind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`rate_limits` must be a list of limits (mappings with `unit` and \
                     `requests_per_unit`), found {}",
                    y.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.invalid(y.at, "`rate_limits` must hold at least one limit");
            return None;
        }
        let mut limits: Vec<(RateLimit, Mark)> = Vec::with_capacity(items.len());
        let mut replaces = Vec::new();
        let mut adaptive: Option<Mark> = None;
        let mut standing: Option<Mark> = None;
        let mut complete = true;
        for item in items {
            if !matches!(item.kind, YamlKind::Map(_)) {
                self.invalid(
                    item.at,
                    format!(
                        "each entry of `rate_limits` must be a mapping with `unit` and \
                         `requests_per_unit`, found {}",
                        item.describe()
                    ),
                );
                complete = false;
                continue;
            }
            let f = self.fields(item, Place::RateLimit);
            if let Some(u) = f.get("unlimited") {
                self.invalid(
                    u.at,
                    "`unlimited` cannot be one of several limits: an unlimited descriptor is \
                     `rate_limit: {unlimited: true}`",
                );
                complete = false;
                continue;
            }
            if let Some(o) = f.get("overflow") {
                self.invalid(
                    o.at,
                    "`overflow` applies to a descriptor with a single `rate_limit`, not to one of \
                     several limits",
                );
                complete = false;
                continue;
            }
            let name = self.name(&f);
            replaces.extend(self.replaces(f.get("replaces"), name.as_deref()));
            if let Some(a) = f.get("adaptive") {
                if let Some(first) = adaptive {
                    self.invalid(
                        a.at,
                        format!(
                            "one `adaptive` limit per descriptor: the limit at line {}, column {} \
                             already is",
                            first.line, first.column
                        ),
                    );
                    complete = false;
                    continue;
                }
                adaptive = Some(a.at);
            }
            if let Some(s) = f.get("standing") {
                standing.get_or_insert(s.at);
            }
            let Some(limit) = self.one_limit(&f, name) else {
                complete = false;
                continue;
            };
            // A descriptor has one concurrency pool whatever its TTL: the pool's key does not
            // carry the TTL (`storage::keys`).
            let shares_counter = |l: &RateLimit| {
                l.algorithm == limit.algorithm
                    && (l.period() == limit.period() || l.algorithm == Algorithm::Concurrency)
            };
            if let Some((_, first)) = limits.iter().find(|(l, _)| shares_counter(l)) {
                self.invalid(
                    item.at,
                    format!(
                        "this limit has the same window ({}) and algorithm ({}) as the limit at \
                         line {}, column {}: they would share one counter",
                        limit.describe_window(),
                        limit.algorithm.as_str(),
                        first.line,
                        first.column
                    ),
                );
                complete = false;
                continue;
            }
            limits.push((limit, item.at));
        }
        // An adaptive counted limit is written as an override of that limit, which must be told
        // apart from the others by its name.
        let counted = limits
            .iter()
            .filter(|(l, _)| l.algorithm != Algorithm::Concurrency)
            .count();
        if let Some((l, at)) = limits.iter().find(|(l, _)| l.adaptive.is_some())
            && l.algorithm != Algorithm::Concurrency
            && counted > 1
            && l.name.is_none()
        {
            self.invalid(
                *at,
                "an `adaptive` limit among several counted limits needs a `name`: its adjustments \
                 are overrides of the limit with that name",
            );
            complete = false;
        }
        complete.then(|| RawLimits {
            limit: Limit::Limited(limits.into_iter().map(|(l, _)| l).collect()),
            replaces,
            overflow: None,
            adaptive,
            standing,
        })
    }

    fn name(&mut self, f: &Fields<'_>) -> Option<String> {
        f.get("name")
            .and_then(|n| self.string(n, "name"))
            .filter(|n| !n.is_empty())
    }

    /// The fields of one counted limit.
    fn one_limit(&mut self, f: &Fields<'_>, name: Option<String>) -> Option<RateLimit> {
        if f.get("concurrency").is_some() {
            return self.concurrency_limit(f, name);
        }
        let fit = self.windowed_fields(f);
        let share = self.fair_share(f, fit);
        // A missing `requests_per_unit` is 0, as in the reference: every request is over limit.
        let requests_per_unit = match (f.get("requests_per_unit"), &share) {
            (_, Some(Some((capacity, _)))) => Some(*capacity),
            (_, Some(None)) => None,
            (None, None) => Some(0),
            (Some(n), None) => self.integer(n, "requests_per_unit", 0, MAX_UNITS),
        };
        let share = share.flatten().map(|(_, spec)| spec);
        let unit = match f.get("unit") {
            None => {
                self.invalid(f.at, "`rate_limit` needs a `unit` (or `unlimited: true`)");
                None
            }
            Some(u) => {
                let text = self.string(u, "unit")?;
                let unit = Unit::parse(&text);
                if unit.is_none() {
                    self.invalid(
                        u.at,
                        format!(
                            "unknown unit '{text}'; expected one of: second, minute, hour, day, \
                             week, month, year"
                        ),
                    );
                }
                unit
            }
        };
        let unit_multiplier = match f.get("unit_multiplier") {
            None => Some(1),
            Some(m) => self
                .integer(m, "unit_multiplier", 1, u64::from(u32::MAX))
                .map(|m| m as u32),
        };
        let algorithm = match f.get("algorithm") {
            None if share.is_some() => Some(Algorithm::FairShare),
            None => Some(Algorithm::FixedWindow),
            Some(a) => self.choice(
                a,
                "algorithm",
                &[
                    ("fixed_window", Algorithm::FixedWindow),
                    ("sliding_window", Algorithm::SlidingWindow),
                    ("token_bucket", Algorithm::TokenBucket),
                ],
            ),
        };
        let burst = match f.get("burst") {
            None => None,
            Some(b) => {
                if algorithm.is_some_and(|a| a != Algorithm::TokenBucket) {
                    self.invalid(b.at, "`burst` applies only to `algorithm: token_bucket`");
                }
                Some(self.integer(b, "burst", 1, MAX_UNITS))
            }
        };
        let calendar = self.flag(f, "calendar");
        if calendar {
            let at = f.get("calendar").map_or(f.at, |y| y.at);
            if let Some(u @ (Unit::Second | Unit::Minute | Unit::Hour)) = unit {
                self.invalid(
                    at,
                    format!(
                        "`calendar` applies to day, week, month and year windows; a {} window \
                         has no calendar boundary to follow",
                        u.as_str().to_ascii_lowercase()
                    ),
                );
            } else if algorithm.is_some_and(|a| a != Algorithm::FixedWindow) {
                self.invalid(
                    at,
                    "`calendar` windows are fixed windows: sliding windows and token buckets \
                     have no boundary to align",
                );
            }
        }
        let kind = match f.get("kind") {
            None => None,
            Some(k) => Some(self.choice(
                k,
                "kind",
                &[("throttle", Kind::Throttle), ("quota", Kind::Quota)],
            )?),
        };
        let over_limit_status = match f.get("over_limit_status") {
            None => Some(429),
            Some(s) => self
                .integer(s, "over_limit_status", 400, 599)
                .map(|s| s as u16),
        };

        let (requests_per_unit, unit, unit_multiplier) =
            (requests_per_unit?, unit?, unit_multiplier?);
        let window = unit.seconds() * u64::from(unit_multiplier);
        if window > MAX_WINDOW_SECS {
            let at = f.get("unit_multiplier").map_or(f.at, |y| y.at);
            self.invalid(
                at,
                format!(
                    "a window of {unit_multiplier} {}s is {window} seconds; at most \
                     {MAX_WINDOW_SECS} seconds (136 years) are supported",
                    unit.as_str().to_ascii_lowercase()
                ),
            );
            return None;
        }
        let burst = match burst {
            None => requests_per_unit,
            Some(b) => b?,
        };
        Some(RateLimit {
            name,
            requests_per_unit,
            unit,
            unit_multiplier,
            algorithm: algorithm?,
            burst,
            calendar,
            kind: kind.unwrap_or(Kind::for_window(window)),
            over_limit_status: over_limit_status?,
            share: share.map(std::sync::Arc::new),
            queue: match f.get("queue") {
                None => None,
                Some(q) => Some(self.queue(q)?),
            },
            adaptive: match f.get("adaptive") {
                None => None,
                Some(a) => Some(std::sync::Arc::new(self.adaptive(a, MAX_UNITS)?)),
            },
            standing: match f.get("standing") {
                None => None,
                Some(s) => Some(std::sync::Arc::new(self.standing(s)?)),
            },
        })
    }

    /// `replaces: [{name: ...}, ...]`.
    fn replaces(&mut self, y: Option<&Yaml>, own_name: Option<&str>) -> Vec<String> {
        let Some(y) = y else {
            return Vec::new();
        };
        if y.is_null() {
            return Vec::new();
        }
        let YamlKind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`replaces` must be a list of `name:` entries, found {}",
                    y.describe()
                ),
            );
            return Vec::new();
        };
        let mut names = Vec::with_capacity(items.len());
        for item in items {
            if !matches!(item.kind, YamlKind::Map(_)) {
                self.invalid(
                    item.at,
                    format!(
                        "each `replaces` entry must be a mapping with a `name`, found {}",
                        item.describe()
                    ),
                );
                continue;
            }
            let f = self.fields(item, Place::Replaces);
            let name = f.get("name").and_then(|n| self.string(n, "name"));
            let at = f.get("name").map_or(f.at, |y| y.at);
            match name {
                Some(n) if !n.is_empty() => {
                    if Some(n.as_str()) == own_name {
                        self.invalid(at, format!("rule '{n}' cannot replace itself"));
                    } else {
                        names.push(n);
                    }
                }
                _ => self.invalid(at, "a `replaces` entry needs a non-empty `name`"),
            }
        }
        names
    }
}
