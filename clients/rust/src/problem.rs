//! What an answer says about retrying: `Retry-After` and the RFC 9457 problem document Sluice
//! (and the proxies in front of it) send with a rejection. Whatever the server sends, reading it
//! never fails: what cannot be read is absent (`clients/behaviour.md` §1).

use std::time::Duration;

use serde_json::{Map, Value};

/// What a refusal asks of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Clears within seconds: retry after `retry_after`.
    Throttle,
    /// Spent until its window resets (or paid for): do not retry in a loop.
    Quota,
}

/// The fields of Sluice's problem document a client acts on. A field of the wrong type is absent;
/// the others still count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problem {
    pub status: Option<u16>,
    pub title: Option<String>,
    pub detail: Option<String>,
    /// The rule (limit name) that refused the request.
    pub rule: Option<String>,
    /// Seconds until a retry can succeed.
    pub retry_after: Option<u64>,
    pub kind: Option<Kind>,
}

/// Numbers read from a server are clamped here: a huge value is a long wait, never an overflow.
pub const MAX_SECONDS: u64 = 1_000_000_000;

impl Problem {
    /// Reads a body as a problem document if its content type says it is one and it is a JSON
    /// object.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Option<Problem> {
        let ct = content_type?.split(';').next()?.trim();
        if !ct.eq_ignore_ascii_case("application/problem+json") {
            return None;
        }
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(Problem {
            status: doc
                .get("status")
                .and_then(Value::as_u64)
                .filter(|s| (100..=599).contains(s))
                .and_then(|s| u16::try_from(s).ok()),
            title: text("title"),
            detail: text("detail"),
            rule: text("rule"),
            retry_after: seconds_field(&doc, "retry_after"),
            kind: match doc.get("kind").and_then(Value::as_str) {
                Some("throttle") => Some(Kind::Throttle),
                Some("quota") => Some(Kind::Quota),
                _ => None,
            },
        })
    }
}

fn seconds_field(doc: &Map<String, Value>, key: &str) -> Option<u64> {
    match doc.get(key)? {
        Value::Number(n) if n.is_u64() => n.as_u64().map(|s| s.min(MAX_SECONDS)),
        // An integer beyond u64 arrives as a float with no fraction.
        Value::Number(n) => n
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|_| MAX_SECONDS),
        _ => None,
    }
}

/// A non-negative integer of ASCII digits, clamped at [`MAX_SECONDS`]; anything else is `None`.
pub fn digits(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        text.parse::<u64>()
            .map_or(MAX_SECONDS, |n| n.min(MAX_SECONDS)),
    )
}

/// `Retry-After` as a wait: whole seconds, or an IMF-fixdate measured from `epoch_now` (the wall
/// clock since the Unix epoch; a date in the past is no wait). Unreadable values are `None`.
pub fn retry_after(value: Option<&str>, epoch_now: Duration) -> Option<Duration> {
    let value = value?;
    if let Some(s) = digits(value) {
        return Some(Duration::from_secs(s));
    }
    let at = imf_fixdate(value.trim())?;
    Some(Duration::from_secs(at).saturating_sub(epoch_now))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` as seconds since the Unix epoch (RFC 9110 §5.6.7).
fn imf_fixdate(text: &str) -> Option<u64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = text.split(' ').collect();
    let [day_name, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day_name = day_name.strip_suffix(',')?;
    if !DAYS.contains(&day_name) || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let number = |s: &str| -> Option<u64> {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (day, year) = (number(day)?, number(year)?);
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if [h, m, s].iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, s) = (number(h)?, number(m)?, number(s)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3_600 + m * 60 + s)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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
    fn retry_after_is_seconds_or_a_date() {
        let now = Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(
            retry_after(Some(" 12 "), now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("-1"), now), None);
        assert_eq!(retry_after(None, now), None);
    }
}
