//! What an answer says about retrying: `Retry-After` and the RFC 9457 problem document Sluice
//! (and the proxies in front of it) send with a rejection.

use std::time::Duration;

use serde::Deserialize;

/// Whether a rejection clears by itself soon (`throttle`) or only when a long window resets, or
/// by paying (`quota`). Retrying a quota in a loop only burns requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Throttle,
    Quota,
}

/// The members of a problem document a client acts on. Unknown members are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// The rejecting limit's name.
    #[serde(default)]
    pub rule: Option<String>,
    /// Seconds until the request would fit.
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub kind: Option<Kind>,
}

impl Problem {
    /// The problem document in `body`, when the content type says there is one.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Option<Problem> {
        let ct = content_type?.split(';').next()?.trim();
        if !ct.eq_ignore_ascii_case("application/problem+json") {
            return None;
        }
        serde_json::from_slice(body).ok()
    }
}

/// `Retry-After` as delay-seconds. The HTTP-date form is not read: Sluice and the proxies in
/// front of it always send seconds, and a date needs a clock agreement the seconds do not.
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_sluice_problem_documents() {
        let body = br#"{"type":"x","status":402,"rule":"storage","retry_after":60,"kind":"quota","extra":[1]}"#;
        let p = Problem::parse(Some("application/problem+json"), body).unwrap();
        assert_eq!(p.kind, Some(Kind::Quota));
        assert_eq!(p.retry_after, Some(60));
        assert_eq!(p.rule.as_deref(), Some("storage"));
        assert!(Problem::parse(Some("application/json"), body).is_none());
        assert!(Problem::parse(Some("application/problem+json"), b"not json").is_none());
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(retry_after(Some(" 12 ")), Some(Duration::from_secs(12)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }
}
