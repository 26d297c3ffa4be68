//! `adaptive: {...}` inside a `rate_limit` (or one entry of `rate_limits`): Sluice moves that
//! limit between `min` and `max` to keep the protected upstream at a target, from the latencies
//! and statuses clients report (`crate::adaptive`).
//!
//! ```yaml
//! rate_limit:
//!   concurrency: 50
//!   adaptive: { signal: latency, target: 250ms, quantile: 0.99, min: 10, max: 200, interval: 10s }
//! rate_limit:
//!   unit: second
//!   requests_per_unit: 500
//!   adaptive: { signal: errors, target: 0.02, min: 50, max: 2000 }
//! ```
//!
//! Where the limit may be moved is checked once the tree is built: the rule's path must name
//! exact values (the last level may be a bare key), since the limit is written as an override
//! whose target is that path.

use std::time::Duration;

use super::fields::Place;
use super::parse::Reader;
use super::yaml::{Kind, Yaml};

/// The shortest interval between two adjustments.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3_600);
/// `interval` when not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// The highest latency target (and the highest latency a report may claim): an hour.
pub const MAX_LATENCY_MS: u64 = 3_600_000;
/// `quantile` when not given, in millionths.
pub const DEFAULT_QUANTILE_PPM: u32 = 990_000;
/// `min_reports` when not given: fewer reports in an interval leave the limit where it is.
pub const DEFAULT_MIN_REPORTS: u64 = 20;

/// What the limit is steered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// A quantile of the reported latencies, against a target in microseconds.
    Latency { target_us: u64, quantile_ppm: u32 },
    /// The fraction of reports with a status of 500 or more, against a target in millionths.
    Errors { target_ppm: u32 },
}

/// A limit's `adaptive` block. Fractions are kept in millionths so rules stay comparable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptiveSpec {
    pub signal: Signal,
    pub min: u64,
    pub max: u64,
    pub interval: Duration,
    /// Reports an interval needs before it moves the limit.
    pub min_reports: u64,
}

impl AdaptiveSpec {
    /// The signal's target in the unit the signal is measured in: milliseconds, or a fraction.
    pub fn target(&self) -> f64 {
        match self.signal {
            Signal::Latency { target_us, .. } => target_us as f64 / 1000.0,
            Signal::Errors { target_ppm } => f64::from(target_ppm) / 1e6,
        }
    }

    /// `latency p99<=250ms 10..200 every 10s`, for `/rlconfig`.
    pub fn describe(&self) -> String {
        let signal = match self.signal {
            Signal::Latency {
                target_us,
                quantile_ppm,
            } => format!(
                "latency q{}<={}ms",
                f64::from(quantile_ppm) / 1e6,
                target_us as f64 / 1000.0
            ),
            Signal::Errors { target_ppm } => {
                format!("errors<={}", f64::from(target_ppm) / 1e6)
            }
        };
        format!(
            "adaptive={signal} {}..{} every {}s min_reports={}",
            self.min,
            self.max,
            self.interval.as_secs(),
            self.min_reports
        )
    }
}

impl Reader {
    /// The `adaptive` block of a limit whose value may go up to `bound`, or `None` when it does
    /// not fit (already reported).
    pub(super) fn adaptive(&mut self, y: &Yaml, bound: u64) -> Option<AdaptiveSpec> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`adaptive` must be a mapping with `signal`, `target`, `min` and `max`, \
                     found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::Adaptive);
        let get = |name: &str| f.get(name);
        let mut complete = true;
        let required = |field: &str, this: &mut Self| {
            let v = get(field);
            if v.is_none() {
                this.invalid(y.at, format!("`adaptive` needs `{field}`"));
            }
            v
        };
        let signal_y = required("signal", self);
        let target_y = required("target", self);
        let min_y = required("min", self);
        let max_y = required("max", self);
        let signal = signal_y.and_then(|s| {
            self.choice(s, "signal", &[("latency", "latency"), ("errors", "errors")])
        });
        let quantile = match get("quantile") {
            None => Some(DEFAULT_QUANTILE_PPM),
            Some(q) if signal == Some("errors") => {
                self.invalid(
                    q.at,
                    "`quantile` applies to `signal: latency`; the errors signal is a fraction of \
                     all reports",
                );
                None
            }
            Some(q) => self.fraction(q, "quantile"),
        };
        let signal = match (signal, target_y) {
            (Some("latency"), Some(t)) => {
                self.latency(t, "target", MAX_LATENCY_MS)
                    .map(|us| Signal::Latency {
                        target_us: us,
                        quantile_ppm: quantile.unwrap_or(DEFAULT_QUANTILE_PPM),
                    })
            }
            (Some(_), Some(t)) => self
                .fraction(t, "target")
                .map(|ppm| Signal::Errors { target_ppm: ppm }),
            _ => None,
        };
        let min = min_y.and_then(|m| self.integer(m, "min", 1, bound));
        let max = max_y.and_then(|m| self.integer(m, "max", 1, bound));
        if let (Some(lo), Some(hi), Some(at)) = (min, max, max_y)
            && lo > hi
        {
            self.invalid(at.at, format!("`adaptive` has `min` {lo} above `max` {hi}"));
            complete = false;
        }
        let interval = match get("interval") {
            None => Some(DEFAULT_INTERVAL),
            Some(i) => self
                .latency(i, "interval", MAX_INTERVAL.as_millis() as u64)
                .and_then(|us| {
                    let d = Duration::from_micros(us);
                    if d < MIN_INTERVAL || !d.subsec_nanos().is_multiple_of(1_000_000) {
                        self.invalid(
                            i.at,
                            "`interval` must be a whole number of milliseconds between 1s and 1h",
                        );
                        return None;
                    }
                    Some(d)
                }),
        };
        let min_reports = match get("min_reports") {
            None => Some(DEFAULT_MIN_REPORTS),
            Some(n) => self.integer(n, "min_reports", 1, 1_000_000),
        };
        let spec = AdaptiveSpec {
            signal: signal?,
            min: min?,
            max: max?,
            interval: interval?,
            min_reports: min_reports?,
        };
        (complete && quantile.is_some()).then_some(spec)
    }

    /// A fraction strictly between 0 and 1, in millionths.
    pub(super) fn fraction(&mut self, y: &Yaml, field: &str) -> Option<u32> {
        let text = match &y.kind {
            Kind::Scalar { text, plain: true } if !y.is_null() => text.trim(),
            _ => {
                self.invalid(
                    y.at,
                    format!(
                        "`{field}` must be a number between 0 and 1, found {}",
                        y.describe()
                    ),
                );
                return None;
            }
        };
        match text.parse::<f64>() {
            Ok(x) if x > 0.0 && x < 1.0 => Some(((x * 1e6).round() as u32).clamp(1, 999_999)),
            _ => {
                self.invalid(
                    y.at,
                    format!(
                        "`{field}` must be a number between 0 and 1 (both excluded), found '{text}'"
                    ),
                );
                None
            }
        }
    }

    /// A positive length (`250ms`, `1.5s`, `2m`, `1h`, or a number of milliseconds) of at most
    /// `max_ms`, in microseconds.
    fn latency(&mut self, y: &Yaml, field: &str, max_ms: u64) -> Option<u64> {
        let (text, number, unit) = self.length_parts(y, field, "250ms, 1.5s or 2m")?;
        let scale_ms = match unit {
            "" | "ms" => Some(1.0),
            "s" => Some(1_000.0),
            "m" => Some(60_000.0),
            "h" => Some(3_600_000.0),
            _ => None,
        };
        let ms = scale_ms.and_then(|s| number.parse::<f64>().ok().map(|n| n * s));
        match ms {
            Some(ms) if ms.is_finite() && ms > 0.0 && ms <= max_ms as f64 => {
                Some(((ms * 1000.0).round() as u64).max(1))
            }
            Some(_) => {
                self.invalid(
                    y.at,
                    format!(
                        "`{field}` must be above 0 and at most {}, found '{text}'",
                        if max_ms >= 3_600_000 {
                            "1h".to_owned()
                        } else {
                            format!("{max_ms}ms")
                        }
                    ),
                );
                None
            }
            None => {
                self.invalid(
                    y.at,
                    format!("`{field}` must be a length such as 250ms, 1.5s or 2m, found '{text}'"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::Signal;
    use crate::config::parse_str;

    fn spec_of(limit: &str) -> super::AdaptiveSpec {
        let rules = parse_str(
            "a.yaml",
            &format!("domain: d\ndescriptors:\n  - key: upstream\n    value: payments\n    rate_limit: {limit}\n"),
        )
        .unwrap();
        let rule = rules.lookup("d", &[("upstream", "payments")]).unwrap();
        rule.limit.limits()[0].adaptive.as_deref().unwrap().clone()
    }

    #[test]
    fn an_adaptive_block_reads_with_its_defaults() {
        let s = spec_of(
            "{concurrency: 50, adaptive: {signal: latency, target: 250ms, min: 10, max: 200}}",
        );
        assert_eq!(
            s.signal,
            Signal::Latency {
                target_us: 250_000,
                quantile_ppm: 990_000
            }
        );
        assert_eq!((s.min, s.max), (10, 200));
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.min_reports, 20);
        let s = spec_of(
            "{unit: second, requests_per_unit: 100, adaptive: {signal: errors, target: 0.02, min: 5, max: 900, interval: 1500ms, min_reports: 50}}",
        );
        assert_eq!(s.signal, Signal::Errors { target_ppm: 20_000 });
        assert_eq!(s.interval, Duration::from_millis(1500));
        assert_eq!(s.min_reports, 50);
        let s = spec_of(
            "{unit: second, capacity: 100, adaptive: {signal: latency, target: 1.5s, quantile: 0.5, min: 5, max: 900, interval: 1m}}",
        );
        assert_eq!(
            s.signal,
            Signal::Latency {
                target_us: 1_500_000,
                quantile_ppm: 500_000
            }
        );
        assert_eq!(s.interval, Duration::from_secs(60));
    }

    #[test]
    fn what_is_refused_about_an_adaptive_block() {
        let pool = "concurrency: 50, adaptive: ";
        let cases = [
            (
                format!("{{{pool}{{signal: latency, target: 250ms, min: 300, max: 200}}}}"),
                "a.yaml:5:93: `adaptive` has `min` 300 above `max` 200",
            ),
            (
                format!("{{{pool}{{signal: speed, target: 250ms, min: 1, max: 200}}}}"),
                "unknown signal",
            ),
            (
                format!(
                    "{{{pool}{{signal: latency, target: 250ms, quantile: 1, min: 1, max: 2}}}}"
                ),
                "`quantile` must be a number between 0 and 1 (both excluded), found '1'",
            ),
            (
                format!(
                    "{{{pool}{{signal: latency, target: 250ms, quantile: 0, min: 1, max: 2}}}}"
                ),
                "`quantile` must be a number between 0 and 1",
            ),
            (
                format!("{{{pool}{{signal: latency, target: 0ms, min: 1, max: 2}}}}"),
                "`target` must be above 0",
            ),
            (
                format!("{{{pool}{{signal: latency, target: -5ms, min: 1, max: 2}}}}"),
                "`target` must be a length",
            ),
            (
                format!("{{{pool}{{signal: errors, target: 1.5, min: 1, max: 2}}}}"),
                "`target` must be a number between 0 and 1",
            ),
            (
                format!(
                    "{{{pool}{{signal: latency, target: 9ms, min: 1, max: 2, interval: 500ms}}}}"
                ),
                "`interval` must be a whole number of milliseconds between 1s and 1h",
            ),
            (
                format!("{{{pool}{{signal: latency, target: 9ms, min: 1, max: 2, interval: 2h}}}}"),
                "`interval` must be above 0 and at most 1h, found '2h'",
            ),
            (
                format!("{{{pool}{{signal: latency, target: 9ms, min: 1, max: 20000}}}}"),
                "`max` must be",
            ),
            (
                format!("{{{pool}{{signal: latency, target: 9ms, min: 0, max: 2}}}}"),
                "`min` must be",
            ),
            (
                format!("{{{pool}{{signal: latency, target: 9ms, max: 2}}}}"),
                "`adaptive` needs `min`",
            ),
            (
                format!("{{{pool}{{signal: errors, target: 0.1, quantile: 0.9, min: 1, max: 2}}}}"),
                "`quantile` applies to `signal: latency`",
            ),
            (
                format!("{{{pool}{{signal: errors, target: 0.1, min: 1, max: 2, step: 3}}}}"),
                "unknown field `step` in `adaptive`",
            ),
            (format!("{{{pool}fast}}"), "`adaptive` must be a mapping"),
            (
                "{unlimited: true, adaptive: {signal: errors, target: 0.1, min: 1, max: 2}}"
                    .to_owned(),
                "`adaptive` must not be set together with `unlimited: true`",
            ),
        ];
        for (limit, expected) in cases {
            let e = parse_str(
                "a.yaml",
                &format!("domain: d\ndescriptors:\n  - key: upstream\n    value: payments\n    rate_limit: {limit}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(expected), "{limit}: {e}");
            assert!(e.contains("a.yaml:5:"), "{limit}: {e}");
        }
    }

    #[test]
    fn where_an_adaptive_limit_may_stand() {
        let a = "adaptive: {signal: errors, target: 0.1, min: 1, max: 20}";
        let ok = [
            format!("  - key: tenant\n    rate_limit: {{unit: second, capacity: 10, {a}}}\n"),
            format!(
                "  - key: upstream\n    value: x\n    rate_limits:\n      - {{unit: second, requests_per_unit: 5, name: fast, {a}}}\n      - {{unit: hour, requests_per_unit: 500}}\n"
            ),
        ];
        for descriptors in ok {
            parse_str("a.yaml", &format!("domain: d\ndescriptors:\n{descriptors}")).unwrap();
        }
        let refused = [
            (
                format!(
                    "  - key: upstream\n    value: \"x*\"\n    rate_limit: {{concurrency: 5, {a}}}\n"
                ),
                "`adaptive` needs a rule whose path names exact values",
            ),
            (
                format!(
                    "  - key: tenant\n    rate_limit: {{concurrency: 5, {a}}}\n  - key: tenant\n    value: acme\n    rate_limit: {{concurrency: 5}}\n"
                ),
                "other descriptors with key `tenant` beside it",
            ),
            (
                format!(
                    "  - key: upstream\n    value: x\n    rate_limits:\n      - {{unit: second, requests_per_unit: 5, {a}}}\n      - {{unit: hour, requests_per_unit: 500}}\n"
                ),
                "needs a `name`",
            ),
            (
                format!(
                    "  - key: upstream\n    value: x\n    rate_limits:\n      - {{unit: second, requests_per_unit: 5, name: a, {a}}}\n      - {{unit: hour, requests_per_unit: 500, name: b, {a}}}\n"
                ),
                "one `adaptive` limit per descriptor",
            ),
        ];
        for (descriptors, expected) in refused {
            let e = parse_str("a.yaml", &format!("domain: d\ndescriptors:\n{descriptors}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{descriptors}: {e}");
        }
    }
}
