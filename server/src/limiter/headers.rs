//! Rate-limit headers for clients, in the style the operator chose, plus `Retry-After` and the
//! problem document's content type on every over-limit answer.
//!
//! | style | headers |
//! |---|---|
//! | `off` | none (only `Retry-After` and `content-type` when over) |
//! | `ratelimit` | the reference's `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (names configurable) for the tightest limit |
//! | `x-ratelimit` | Envoy's draft-03 `X-RateLimit-Limit` (with `;w=` quota policies for every limit), `-Remaining`, `-Reset` |
//! | `ietf` | draft-ietf-httpapi-ratelimit-headers-10: `RateLimit-Policy` and `RateLimit` structured fields, one item per limit, named by the limit's policy name |
//!
//! Every time is in whole seconds, rounded up, so a client that waits what it is told is never
//! early.

use std::fmt::Write as _;
use std::time::Duration;

use super::decision::{Checked, Code, DescriptorStatus};
use crate::config::Algorithm;
use crate::storage::Role;

/// Which rate-limit headers to add to answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HeaderStyle {
    #[default]
    Off,
    /// The reference's `LIMIT_RESPONSE_HEADERS_ENABLED` headers, with its configurable names.
    RateLimit(HeaderNames),
    XRateLimit,
    Ietf,
}

/// Names of the `ratelimit` style's headers (the reference's `LIMIT_*_HEADER` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub limit: String,
    pub remaining: String,
    pub reset: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            limit: "RateLimit-Limit".into(),
            remaining: "RateLimit-Remaining".into(),
            reset: "RateLimit-Reset".into(),
        }
    }
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The headers of one answer. `tightest[i]` is the position in `checked` of descriptor `i`'s most
/// constraining limit.
pub(super) fn response_headers(
    style: &HeaderStyle,
    checked: &[Checked<'_>],
    statuses: &[DescriptorStatus],
    tightest: &[Option<usize>],
    overall: Code,
) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    match style {
        HeaderStyle::Off => {}
        HeaderStyle::RateLimit(names) => {
            if let Some(c) = headline(checked, tightest) {
                headers.push((names.limit.clone(), c.spec().requests_per_unit.to_string()));
                headers.push((names.remaining.clone(), c.remaining().to_string()));
                headers.push((names.reset.clone(), ceil_secs(c.until_reset()).to_string()));
            }
        }
        HeaderStyle::XRateLimit => {
            if let Some(c) = headline(checked, tightest) {
                let mut limit = c.spec().requests_per_unit.to_string();
                for q in checked {
                    let spec = q.spec();
                    let _ = write!(
                        limit,
                        ", {};w={}",
                        spec.requests_per_unit,
                        spec.window_secs()
                    );
                    if let Some(name) = &spec.name {
                        let _ = write!(limit, ";name=\"{}\"", sf_string(name));
                    }
                }
                headers.push(("X-RateLimit-Limit".into(), limit));
                headers.push(("X-RateLimit-Remaining".into(), c.remaining().to_string()));
                headers.push((
                    "X-RateLimit-Reset".into(),
                    ceil_secs(c.until_reset()).to_string(),
                ));
            }
        }
        HeaderStyle::Ietf => {
            if !checked.is_empty() {
                let mut policy = String::new();
                let mut current = String::new();
                for (i, c) in checked.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    let name = sf_string(&c.policy_name());
                    let spec = c.spec();
                    let _ = write!(
                        policy,
                        "{sep}\"{name}\";q={};w={}",
                        spec.requests_per_unit,
                        spec.window_secs()
                    );
                    if spec.algorithm == Algorithm::TokenBucket {
                        let _ = write!(policy, ";sluice-burst={}", spec.burst);
                    }
                    let _ = write!(
                        current,
                        "{sep}\"{name}\";r={};t={}",
                        c.remaining(),
                        ceil_secs(c.until_reset())
                    );
                }
                headers.push(("RateLimit-Policy".into(), policy));
                headers.push(("RateLimit".into(), current));
            }
        }
    }
    if overall == Code::OverLimit {
        let wait = statuses
            .iter()
            .filter(|s| s.code == Code::OverLimit)
            .filter_map(|s| s.duration_until_reset)
            .max()
            .unwrap_or_default();
        headers.push(("Retry-After".into(), ceil_secs(wait).to_string()));
        headers.push(("content-type".into(), PROBLEM_CONTENT_TYPE.into()));
    }
    headers
}

/// The limit single-valued headers describe: of each descriptor's tightest limit, the first with
/// the fewest remaining, or the last enforced one that rejects (the reference's choice).
fn headline<'c, 'a>(
    checked: &'c [Checked<'a>],
    tightest: &[Option<usize>],
) -> Option<&'c Checked<'a>> {
    let mut best: Option<&Checked<'_>> = None;
    for c in tightest.iter().flatten().map(|&i| &checked[i]) {
        let rejecting = c.reports_over() && c.role == Role::Enforce;
        if rejecting || best.is_none_or(|b| c.remaining() < b.remaining()) {
            best = Some(c);
        }
    }
    best
}

/// Text as the body of a structured-field string: printable ASCII, with `"` and `\` escaped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '"' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            ' '..='~' => out.push(ch),
            _ => out.push('?'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
        assert_eq!(ceil_secs(Duration::from_micros(3_000_001)), 4);
        assert_eq!(ceil_secs(Duration::from_micros(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }

    #[test]
    fn structured_field_strings_are_escaped() {
        assert_eq!(sf_string(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(sf_string("naïve"), "na?ve");
    }
}
