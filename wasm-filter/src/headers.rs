//! What clients see: rate-limit headers in the configured style, `Retry-After`, and the local
//! replies (status, headers, RFC 9457 problem body) the filter sends instead of the upstream's.

use crate::check::{Code, DescriptorStatus};
use crate::config::HeaderStyle;
use crate::value::{push_u64, u64_text, write_str};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// A response the filter sends itself (`proxy_send_local_response`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Rate-limit headers from the status with the fewest requests remaining that has a limit, as
/// Envoy builds them; none when no status carries a limit.
pub fn rate_limit_headers(
    style: HeaderStyle,
    statuses: &[DescriptorStatus],
) -> Vec<(String, String)> {
    let Some((status, limit)) = statuses
        .iter()
        .filter_map(|s| s.current_limit.as_ref().map(|l| (s, l)))
        .min_by_key(|(s, _)| s.limit_remaining)
    else {
        return Vec::new();
    };
    let reset = u64_text(status.duration_until_reset_ms.map_or(0, ceil_secs));
    let remaining = u64_text(u64::from(status.limit_remaining));
    match style {
        HeaderStyle::None => Vec::new(),
        HeaderStyle::Ratelimit => vec![
            (
                "ratelimit-limit".into(),
                u64_text(u64::from(limit.requests_per_unit)),
            ),
            ("ratelimit-remaining".into(), remaining),
            ("ratelimit-reset".into(), reset),
        ],
        HeaderStyle::XRatelimit => {
            // draft-03: the tightest limit, then each reported limit as a quota policy.
            let mut value = u64_text(u64::from(limit.requests_per_unit));
            for l in statuses.iter().filter_map(|s| s.current_limit.as_ref()) {
                if let Some(window) = unit_seconds(l.unit) {
                    value.push_str(&format!(", {};w={window}", l.requests_per_unit));
                }
            }
            vec![
                ("x-ratelimit-limit".into(), value),
                ("x-ratelimit-remaining".into(), remaining),
                ("x-ratelimit-reset".into(), reset),
            ]
        }
    }
}

/// Window length of a `RateLimitResponse.RateLimit.Unit` (MONTH and YEAR as the reference counts them).
fn unit_seconds(unit: i32) -> Option<u64> {
    Some(match unit {
        1 => 1,
        2 => 60,
        3 => 3600,
        4 => 86_400,
        5 => 30 * 86_400,
        6 => 365 * 86_400,
        7 => 7 * 86_400,
        _ => return None,
    })
}

/// Whole seconds, rounded up: a client that waits that long finds the limit reset.
pub fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// The wait before a rejected request may succeed: the longest `duration_until_reset` among the
/// OVER_LIMIT statuses.
pub fn over_limit_wait_ms(statuses: &[DescriptorStatus]) -> Option<u64> {
    statuses
        .iter()
        .filter(|s| s.code == Code::OverLimit)
        .filter_map(|s| s.duration_until_reset_ms)
        .max()
}

/// Whether `value` is a valid HTTP field value (RFC 9110 section 5.5): no control character but
/// horizontal tab. Hosts do not all check the values a filter sets.
pub fn is_field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

pub fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// Appends each of `extra` whose name is not already in `headers`: Sluice's own headers win over
/// the ones the filter derives, so nothing is sent twice.
pub fn merge(headers: &mut Vec<(String, String)>, extra: Vec<(String, String)>) {
    for (k, v) in extra {
        if !has_header(headers, &k) {
            headers.push((k, v));
        }
    }
}

/// The reason phrase used as a problem document's `title`.
fn title(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        402 => "Payment Required",
        403 => "Forbidden",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Request Rejected",
    }
}

/// An RFC 9457 problem document for replies the filter makes up itself; `kind` as Sluice's
/// documents name it (`throttle`, `quota`, or `invalid` for a request refused as malformed).
pub fn problem(
    status: u16,
    detail: &str,
    retry_after_s: Option<u64>,
    kind: Option<&str>,
) -> Vec<u8> {
    let mut doc = String::with_capacity(128);
    doc.push_str("{\"type\":\"about:blank\",\"title\":");
    write_str(&mut doc, title(status));
    doc.push_str(",\"status\":");
    push_u64(&mut doc, u64::from(status));
    doc.push_str(",\"detail\":");
    write_str(&mut doc, detail);
    if let Some(secs) = retry_after_s {
        doc.push_str(",\"retry_after\":");
        push_u64(&mut doc, secs);
    }
    if let Some(kind) = kind {
        doc.push_str(",\"kind\":");
        write_str(&mut doc, kind);
    }
    doc.push('}');
    doc.into_bytes()
}

/// A reply made up by the filter: its own problem body, `Retry-After` when a wait is known, and
/// the given rate-limit headers.
pub fn made_up_reply(
    status: u16,
    detail: &str,
    wait_ms: Option<u64>,
    mut headers: Vec<(String, String)>,
) -> LocalReply {
    let retry_after = wait_ms.map(|ms| ceil_secs(ms).max(1));
    if let Some(secs) = retry_after {
        merge(&mut headers, vec![("retry-after".into(), u64_text(secs))]);
    }
    merge(
        &mut headers,
        vec![("content-type".into(), PROBLEM_JSON.into())],
    );
    LocalReply {
        status,
        headers,
        body: problem(status, detail, retry_after, None),
    }
}

/// The reply to a request refused as invalid: a value the filter cannot use, or a check Sluice
/// refused as malformed. A problem document of kind `invalid` and no `Retry-After`: the same
/// request is refused again whenever it comes, so there is nothing to wait for.
pub fn invalid_reply(status: u16, detail: &str) -> LocalReply {
    LocalReply {
        status,
        headers: vec![("content-type".into(), PROBLEM_JSON.into())],
        body: problem(status, detail, None, Some("invalid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Limit;

    fn status(
        code: Code,
        limit: Option<(u32, i32)>,
        remaining: u32,
        reset_ms: Option<u64>,
    ) -> DescriptorStatus {
        DescriptorStatus {
            code,
            current_limit: limit.map(|(requests_per_unit, unit)| Limit {
                requests_per_unit,
                unit,
            }),
            limit_remaining: remaining,
            duration_until_reset_ms: reset_ms,
        }
    }

    #[test]
    fn headers_come_from_the_tightest_limit() {
        let statuses = [
            status(Code::Ok, Some((100, 2)), 40, Some(30_500)),
            status(Code::Ok, None, 0, None),
            status(Code::Ok, Some((10, 1)), 3, Some(200)),
        ];
        assert_eq!(
            rate_limit_headers(HeaderStyle::Ratelimit, &statuses),
            vec![
                ("ratelimit-limit".to_string(), "10".to_string()),
                ("ratelimit-remaining".to_string(), "3".to_string()),
                ("ratelimit-reset".to_string(), "1".to_string()),
            ]
        );
        let x = rate_limit_headers(HeaderStyle::XRatelimit, &statuses);
        assert_eq!(x[0].1, "10, 100;w=60, 10;w=1");
        assert!(rate_limit_headers(HeaderStyle::None, &statuses).is_empty());
        assert!(
            rate_limit_headers(HeaderStyle::Ratelimit, &[status(Code::Ok, None, 5, None)])
                .is_empty()
        );
    }

    #[test]
    fn wait_is_the_longest_over_limit_reset() {
        let statuses = [
            status(Code::OverLimit, Some((1, 1)), 0, Some(900)),
            status(Code::Ok, Some((1, 4)), 0, Some(86_000_000)),
            status(Code::OverLimit, Some((5, 2)), 0, Some(42_001)),
        ];
        assert_eq!(over_limit_wait_ms(&statuses), Some(42_001));
        assert_eq!(ceil_secs(42_001), 43);
        assert_eq!(over_limit_wait_ms(&statuses[1..2]), None);
    }

    #[test]
    fn sluice_headers_win_over_derived_ones() {
        let mut h = vec![("Retry-After".to_string(), "7".to_string())];
        merge(
            &mut h,
            vec![
                ("retry-after".into(), "9".into()),
                ("x-a".into(), "1".into()),
            ],
        );
        assert_eq!(
            h,
            vec![
                ("Retry-After".into(), "7".into()),
                ("x-a".into(), "1".into())
            ]
        );
    }

    #[test]
    fn made_up_replies_carry_a_problem_document() {
        let r = made_up_reply(429, "over the local limit", Some(1), Vec::new());
        assert_eq!(r.status, 429);
        assert!(has_header(&r.headers, "retry-after"));
        assert!(
            r.headers
                .contains(&("content-type".into(), PROBLEM_JSON.into()))
        );
        let doc = crate::value::parse(&r.body).unwrap();
        assert_eq!(doc.get("status").and_then(|v| v.as_u64()), Some(429));
        assert_eq!(doc.get("retry_after").and_then(|v| v.as_u64()), Some(1));
        assert_eq!(
            doc.get("title").and_then(|v| v.as_str()),
            Some("Too Many Requests")
        );
        let detail = problem(503, "quote \" and \\", None, None);
        assert_eq!(
            crate::value::parse(&detail)
                .unwrap()
                .get("detail")
                .and_then(|v| v.as_str()),
            Some("quote \" and \\")
        );
        let closed = made_up_reply(503, "unavailable", None, Vec::new());
        assert!(!has_header(&closed.headers, "retry-after"));
    }

    #[test]
    fn invalid_replies_are_problems_of_kind_invalid_without_a_wait() {
        let r = invalid_reply(400, "descriptor \"app\", action 0: the value is not UTF-8");
        assert_eq!(r.status, 400);
        assert_eq!(
            r.headers,
            vec![("content-type".into(), PROBLEM_JSON.into())]
        );
        let doc = crate::value::parse(&r.body).unwrap();
        assert_eq!(doc.get("status").and_then(|v| v.as_u64()), Some(400));
        assert_eq!(doc.get("kind").and_then(|v| v.as_str()), Some("invalid"));
        assert_eq!(
            doc.get("title").and_then(|v| v.as_str()),
            Some("Bad Request")
        );
        assert_eq!(
            doc.get("detail").and_then(|v| v.as_str()),
            Some("descriptor \"app\", action 0: the value is not UTF-8")
        );
        assert!(doc.get("retry_after").is_none());
        let r = invalid_reply(431, "x");
        assert_eq!(
            crate::value::parse(&r.body)
                .unwrap()
                .get("title")
                .and_then(|v| v.as_str()),
            Some("Request Header Fields Too Large")
        );
    }
}
