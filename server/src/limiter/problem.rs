//! The RFC 9457 problem document of an over-limit answer: Envoy sends it as the 429 body
//! (`raw_body`), `/json` answers with it, and the wasm filter and NGINX forward it.
//!
//! ```json
//! {
//!   "type": "https://iana.org/assignments/http-problem-types#quota-exceeded",
//!   "title": "Too Many Requests",
//!   "status": 429,
//!   "detail": "app_id is over its limit of 100 per 5 minutes (sliding_window); retry in 12 s",
//!   "violated-policies": ["edge.app_id"],
//!   "rule": "edge.app_id", "level": "app_id", "limit": 100, "window": 300,
//!   "algorithm": "sliding_window", "remaining": 0, "retry_after": 12, "kind": "throttle"
//! }
//! ```
//!
//! The type and `violated-policies` are the ones draft-ietf-httpapi-ratelimit-headers defines;
//! the other members tell a client what it needs to back off well: which descriptor level (app,
//! team, organisation) rejected it, whether it is a short `throttle` (retry after `retry_after`)
//! or a spent `quota` (retry only after the window resets, or pay, when the status is 402).
//! Descriptor values are never echoed: they may be credentials, and bodies end up in logs.

use super::decision::{Checked, Rejection};
use super::headers::ceil_secs;
use super::request::CheckRequest;
use crate::config::Kind;
use serde_json::json;

pub const PROBLEM_TYPE: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// The answer for a request whose values cannot be counted ([`super::CheckError::Unusable`]):
/// refused with status 400 and `kind: "invalid"`, so a client (or the proxy relaying the body)
/// can tell it from a limit.
pub fn unusable(detail: &str) -> Rejection {
    let members = [
        ("type", json!("about:blank")),
        ("title", json!("Bad Request")),
        ("status", json!(400)),
        ("detail", json!(detail)),
        ("kind", json!("invalid")),
    ];
    Rejection {
        status: 400,
        problem: members
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

/// The answer for a request rejected by `by`, with every limit that was over in `violated`.
pub(super) fn rejection(
    request: &CheckRequest,
    by: &Checked<'_>,
    violated: &[&Checked<'_>],
) -> Rejection {
    let spec = by.spec();
    let level = request.descriptors[by.limited.index]
        .entries
        .last()
        .map_or("", |e| e.key.as_str());
    let retry_after = ceil_secs(by.until_reset());
    let title = match (spec.over_limit_status, spec.kind) {
        (402, _) => "Payment Required",
        (_, Kind::Throttle) => "Too Many Requests",
        (_, Kind::Quota) => "Quota Exceeded",
    };
    let what = match spec.kind {
        Kind::Throttle => "limit",
        Kind::Quota => "quota",
    };
    let detail = if spec.algorithm == crate::config::Algorithm::Concurrency {
        format!(
            "{level} holds all {} of its concurrent leases (concurrency); one expires in \
             {retry_after} s unless released sooner",
            spec.requests_per_unit
        )
    } else {
        format!(
            "{level} is over its {what} of {} per {} ({}); retry in {retry_after} s",
            spec.requests_per_unit,
            spec.describe_window(),
            spec.algorithm.as_str()
        )
    };
    let mut names: Vec<String> = Vec::with_capacity(violated.len());
    for v in violated {
        let n = v.policy_name();
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let members = [
        ("type", json!(PROBLEM_TYPE)),
        ("title", json!(title)),
        ("status", json!(spec.over_limit_status)),
        ("detail", json!(detail)),
        ("violated-policies", json!(names)),
        ("rule", json!(by.policy_name())),
        ("level", json!(level)),
        ("limit", json!(spec.requests_per_unit)),
        ("window", json!(spec.window_secs())),
        ("algorithm", json!(spec.algorithm.as_str())),
        ("remaining", json!(by.remaining())),
        ("retry_after", json!(retry_after)),
        ("kind", json!(spec.kind.as_str())),
    ];
    let problem = members
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    Rejection {
        status: spec.over_limit_status,
        problem,
    }
}
