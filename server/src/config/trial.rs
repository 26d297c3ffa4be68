//! `trial: {shadow_for: 7d}` on a descriptor with a `rate_limit`: each value of the descriptor
//! seen for the first time starts in shadow mode for that long (counted, reported as "would
//! reject", never refused), and is enforced afterwards (`limiter::trial`).
//!
//! ```yaml
//! - key: app_id
//!   trial: { shadow_for: 7d }            # or 36h, 90m, 600s, or a number of seconds
//!   rate_limit: { unit: minute, requests_per_unit: 100 }
//! ```
//!
//! `max_new_per_hour` (default 1 000) bounds the trials each replica starts per hour for the
//! rule: a value first seen past it is enforced at once, so a client inventing values cannot
//! buy itself shadow mode, nor fill the store with first sightings.

use std::time::Duration;

use super::parse::Reader;
use super::yaml::{Kind, Yaml};

/// The shortest trial.
pub const MIN_TRIAL: Duration = Duration::from_secs(1);
/// The longest trial: a year.
pub const MAX_TRIAL: Duration = Duration::from_secs(365 * 86_400);
/// `max_new_per_hour` when not given.
pub const DEFAULT_NEW_PER_HOUR: u64 = 1_000;

/// A rule's trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrialSpec {
    /// How long a new value stays in shadow mode.
    pub shadow_for: Duration,
    /// Trials each replica starts per hour for the rule, at most.
    pub max_new_per_hour: u64,
}

impl Reader {
    /// The `trial` block, or `None` when it does not fit (already reported).
    pub(super) fn trial(&mut self, y: &Yaml) -> Option<TrialSpec> {
        let Kind::Map(pairs) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`trial` must be a mapping with `shadow_for`, found {}",
                    y.describe()
                ),
            );
            return None;
        };
        let mut shadow_for = None;
        let mut max_new = Some(DEFAULT_NEW_PER_HOUR);
        let mut complete = true;
        for (k, v) in pairs {
            match self.string(k, "trial").as_deref() {
                Some("shadow_for") => shadow_for = Some(self.duration(v, "shadow_for")),
                Some("max_new_per_hour") => {
                    max_new = self.integer(v, "max_new_per_hour", 1, 1_000_000);
                }
                Some(other) => {
                    self.invalid(
                        k.at,
                        format!(
                            "unknown field `{other}` in `trial`; expected `shadow_for` or \
                             `max_new_per_hour`"
                        ),
                    );
                    complete = false;
                }
                None => complete = false,
            }
        }
        let Some(shadow_for) = shadow_for else {
            self.invalid(y.at, "`trial` needs `shadow_for`");
            return None;
        };
        Some(TrialSpec {
            shadow_for: shadow_for?,
            max_new_per_hour: max_new?,
        })
        .filter(|_| complete)
    }

    /// A length: a number of seconds, or a number with `s`, `m`, `h` or `d`, within the bounds.
    fn duration(&mut self, y: &Yaml, field: &str) -> Option<Duration> {
        let (text, digits, unit) = self.length_parts(y, field, "7d, 12h, 30m or 90s")?;
        // Whole numbers only: a `.` is refused with the digits it would have split.
        let scale = match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => 0,
        };
        let secs = digits
            .parse::<u64>()
            .ok()
            .filter(|_| scale > 0 && !digits.is_empty() && !digits.contains('.'))
            .and_then(|n| n.checked_mul(scale));
        let Some(secs) = secs else {
            self.invalid(
                y.at,
                format!("`{field}` must be a length such as 7d, 12h, 30m or 90s, found '{text}'"),
            );
            return None;
        };
        let d = Duration::from_secs(secs);
        if d < MIN_TRIAL || d > MAX_TRIAL {
            self.invalid(
                y.at,
                format!("`{field}` must be between 1s and 365d, found '{text}'"),
            );
            return None;
        }
        Some(d)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use crate::config::parse_str;

    #[test]
    fn a_trial_and_what_is_refused_about_one() {
        let rules = parse_str(
            "t.yaml",
            "domain: d\ndescriptors:\n  - key: app\n    trial: {shadow_for: 7d}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n  - key: job\n    trial: {shadow_for: 90, max_new_per_hour: 10}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
        )
        .unwrap();
        let app = rules.lookup("d", &[("app", "x")]).unwrap().trial.unwrap();
        assert_eq!(app.shadow_for, Duration::from_secs(7 * 86_400));
        assert_eq!(app.max_new_per_hour, super::DEFAULT_NEW_PER_HOUR);
        let job = rules.lookup("d", &[("job", "x")]).unwrap().trial.unwrap();
        assert_eq!((job.shadow_for.as_secs(), job.max_new_per_hour), (90, 10));
        assert!(
            rules.dump.contains("trial=604800s/1000new"),
            "{}",
            rules.dump
        );

        let cases = [
            (
                "trial: {shadow_for: 7d}\n",
                "4:12: `trial` needs a `rate_limit`",
            ),
            (
                "trial: {shadow_for: 0s}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "4:25: `shadow_for` must be between 1s and 365d, found '0s'",
            ),
            (
                "trial: {shadow_for: 366d}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "must be between 1s and 365d",
            ),
            (
                "trial: {shadow_for: 7w}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "`shadow_for` must be a length such as 7d, 12h, 30m or 90s, found '7w'",
            ),
            (
                "trial: {shadow_for: 1d, for: everyone}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "unknown field `for` in `trial`",
            ),
            (
                "trial: {max_new_per_hour: 5}\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "`trial` needs `shadow_for`",
            ),
            (
                "trial: 7d\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "`trial` must be a mapping with `shadow_for`",
            ),
            (
                "trial: {shadow_for: 1d}\n    shadow_mode: true\n    rate_limit: {unit: minute, requests_per_unit: 5}\n",
                "`trial` on a descriptor in `shadow_mode` changes nothing",
            ),
        ];
        for (fields, expected) in cases {
            let e = parse_str(
                "t.yaml",
                &format!("domain: d\ndescriptors:\n  - key: k\n    {fields}"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(expected), "{fields}: {e}");
        }
    }
}
