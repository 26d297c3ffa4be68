//! The HTTP transport's messages: the request headers (with the caller's wait, [`WAIT_HEADER`])
//! and the proto3-JSON `RateLimitRequest` body Sluice's `POST /json` reads, and its answers: 200
//! with the proto3-JSON `RateLimitResponse`, or on OVER_LIMIT the rejecting rule's status with a
//! JSON body (an RFC 9457 problem document carrying the same proto3 fields as extension members,
//! or the plain proto3 JSON from older servers). Field names are accepted in lowerCamelCase and
//! snake_case, integers as numbers or strings, enums as names or numbers.

use crate::check::{Answer, Code, DescriptorStatus, ErrorKind, Failure, Limit, Problem};
use crate::headers::{PROBLEM_JSON, has_header};
use crate::proto::WireDescriptor;
use crate::value::{self, Value, write_str};

/// The header in which Sluice's `/json` reads how long its caller waits for the answer, in
/// milliseconds: a check queued for a concurrency pool is answered within it (gRPC carries the
/// same in `grpc-timeout`, which the proxy's gRPC client sets from the callout's timeout).
pub const WAIT_HEADER: &str = "x-sluice-wait-ms";

/// The request headers of a check to `path` at `authority` whose callout times out after
/// `wait_ms` (the decimal `service.timeout_ms`).
pub fn request_headers<'a>(
    path: &'a str,
    authority: &'a str,
    wait_ms: &'a str,
) -> [(&'static str, &'a str); 6] {
    [
        (":method", "POST"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/json"),
        ("accept", "application/json, application/problem+json"),
        (WAIT_HEADER, wait_ms),
    ]
}

/// The request body.
pub fn encode_request(domain: &str, descriptors: &[WireDescriptor<'_>]) -> Vec<u8> {
    let mut out = String::with_capacity(64 + 64 * descriptors.len());
    out.push_str("{\"domain\":");
    write_str(&mut out, domain);
    out.push_str(",\"descriptors\":[");
    for (i, d) in descriptors.iter().enumerate() {
        out.push_str(if i == 0 {
            "{\"entries\":["
        } else {
            ",{\"entries\":["
        });
        for (j, (k, v)) in d.entries.iter().enumerate() {
            out.push_str(if j == 0 { "{\"key\":" } else { ",{\"key\":" });
            write_str(&mut out, k);
            out.push_str(",\"value\":");
            write_str(&mut out, v);
            out.push('}');
        }
        if let Some(lease) = d.lease {
            out.push_str(if d.entries.is_empty() {
                "{\"key\":"
            } else {
                ",{\"key\":"
            });
            write_str(&mut out, crate::lease::LEASE_ENTRY);
            out.push_str(",\"value\":");
            write_str(&mut out, lease);
            out.push('}');
        }
        out.push(']');
        if let Some(hits) = d.hits_addend {
            // uint64 is a string in proto3 JSON.
            out.push_str(&format!(",\"hitsAddend\":\"{hits}\""));
        }
        if d.negative_hits {
            out.push_str(",\"isNegativeHits\":true");
        }
        out.push('}');
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Decodes an answer from its HTTP status, `content-type` and body.
pub fn decode_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Answer, Failure> {
    let doc = match value::parse(body) {
        Ok(doc @ Value::Object(_)) => doc,
        _ if status == 200 => {
            return Err(Failure::new(
                ErrorKind::Malformed,
                "answer is not a JSON object",
            ));
        }
        _ if refuses(status) => return Ok(Answer::refused(format!("HTTP {status}"))),
        _ => {
            return Err(Failure::new(
                ErrorKind::HttpStatus,
                format!("HTTP {status}"),
            ));
        }
    };
    let overall = code(field(&doc, "overallCode", "overall_code"));
    // Any status but 200 is only an answer when it says OVER_LIMIT; 400 and 413 without it are
    // Sluice refusing the check, 5xx an outage.
    if status != 200 && overall != Code::OverLimit {
        if refuses(status) {
            let message = match doc.get("error").and_then(Value::as_str) {
                Some(e) => format!("HTTP {status}: {e}"),
                None => format!("HTTP {status}"),
            };
            return Ok(Answer::refused(message));
        }
        return Err(Failure::new(
            ErrorKind::HttpStatus,
            format!("HTTP {status}"),
        ));
    }
    let statuses = match field(&doc, "statuses", "statuses") {
        None => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(descriptor_status)
            .collect::<Option<Vec<_>>>(),
        Some(_) => None,
    }
    .ok_or_else(|| Failure::new(ErrorKind::Malformed, "statuses are not descriptor statuses"))?;
    let mut answer = Answer {
        overall,
        statuses,
        response_headers: header_list(field(
            &doc,
            "responseHeadersToAdd",
            "response_headers_to_add",
        ))?,
        request_headers: header_list(field(&doc, "requestHeadersToAdd", "request_headers_to_add"))?,
        ..Answer::default()
    };
    let is_problem = content_type.is_some_and(|c| {
        c.trim_start()
            .to_ascii_lowercase()
            .starts_with(PROBLEM_JSON)
    });
    if is_problem {
        // The problem document itself is the body clients get.
        answer.body = body.to_vec();
        if !has_header(&answer.response_headers, "content-type") {
            answer
                .response_headers
                .push(("content-type".into(), PROBLEM_JSON.into()));
        }
        answer.problem = problem_fields(&doc);
    } else if let Some(raw) = field(&doc, "rawBody", "raw_body").and_then(Value::as_str) {
        answer.body = crate::jwt::base64(raw)
            .ok_or_else(|| Failure::new(ErrorKind::Malformed, "rawBody is not base64"))?;
    }
    Ok(answer)
}

/// Sluice answers `/json` with 400 for a malformed check and 413 for one over its body bound:
/// from the filter, only client values can cause either ([`Answer::refused`]).
fn refuses(status: u16) -> bool {
    matches!(status, 400 | 413)
}

/// What the filter reads of a problem document (gRPC's `raw_body` carries one too).
pub fn problem_fields(doc: &Value) -> Problem {
    Problem {
        status: doc
            .get("status")
            .and_then(uint)
            .and_then(|s| u16::try_from(s).ok()),
        retry_after_s: doc.get("retry_after").and_then(uint),
        concurrency: doc.get("algorithm").and_then(Value::as_str) == Some("concurrency"),
        invalid: doc.get("kind").and_then(Value::as_str) == Some("invalid"),
    }
}

/// [`problem_fields`] of a body, when it is a JSON object.
pub fn problem_in(body: &[u8]) -> Problem {
    if body.first() != Some(&b'{') {
        return Problem::default();
    }
    value::parse(body).map_or(Problem::default(), |doc| problem_fields(&doc))
}

fn field<'a>(o: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    o.get(camel).or_else(|| o.get(snake))
}

fn uint(v: &Value) -> Option<u64> {
    match v {
        Value::Number(_) => v.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn code(v: Option<&Value>) -> Code {
    match v {
        Some(Value::String(s)) => match s.as_str() {
            "OK" => Code::Ok,
            "OVER_LIMIT" => Code::OverLimit,
            "UNKNOWN" => Code::Unknown,
            _ => Code::Other(-1),
        },
        Some(n) => uint(n)
            .and_then(|n| i32::try_from(n).ok())
            .map_or(Code::Other(-1), Code::from_wire),
        // proto3 JSON omits default values: no code is UNKNOWN (0).
        None => Code::Unknown,
    }
}

fn unit(v: Option<&Value>) -> i32 {
    const UNITS: [&str; 8] = [
        "UNKNOWN", "SECOND", "MINUTE", "HOUR", "DAY", "MONTH", "YEAR", "WEEK",
    ];
    match v {
        Some(Value::String(s)) => UNITS.iter().position(|u| u == s).map_or(0, |p| p as i32),
        Some(n) => uint(n).and_then(|n| i32::try_from(n).ok()).unwrap_or(0),
        None => 0,
    }
}

fn descriptor_status(o: &Value) -> Option<DescriptorStatus> {
    o.as_object()?;
    let current_limit = match field(o, "currentLimit", "current_limit") {
        None | Some(Value::Null) => None,
        Some(l @ Value::Object(_)) => Some(Limit {
            requests_per_unit: field(l, "requestsPerUnit", "requests_per_unit")
                .map_or(Some(0), uint)
                .and_then(|n| u32::try_from(n).ok())?,
            unit: unit(l.get("unit")),
        }),
        Some(_) => return None,
    };
    Some(DescriptorStatus {
        code: code(o.get("code")),
        current_limit,
        limit_remaining: field(o, "limitRemaining", "limit_remaining")
            .map_or(Some(0), uint)
            .and_then(|n| u32::try_from(n).ok())?,
        duration_until_reset_ms: match field(o, "durationUntilReset", "duration_until_reset") {
            None => None,
            Some(d) => Some(duration_ms(d.as_str()?)?),
        },
    })
}

/// A proto3-JSON duration (`"1.5s"`, `"-0.1s"`) in whole milliseconds, rounded up; negative is 0.
pub fn duration_ms(s: &str) -> Option<u64> {
    let number = s.strip_suffix('s')?;
    if let Some(magnitude) = number.strip_prefix('-').filter(|m| !m.starts_with('-')) {
        return duration_ms(&format!("{magnitude}s")).map(|_| 0);
    }
    let (secs, frac) = number.split_once('.').unwrap_or((number, "0"));
    if secs.is_empty()
        || frac.is_empty()
        || !secs.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let nanos: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(
        secs.saturating_mul(1000)
            .saturating_add(nanos.div_ceil(1_000_000)),
    )
}

fn header_list(v: Option<&Value>) -> Result<Vec<(String, String)>, Failure> {
    let bad = || Failure::new(ErrorKind::Malformed, "headers are not key/value objects");
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|h| {
                let key = h.get("key").and_then(Value::as_str).ok_or_else(bad)?;
                let value = h.get("value").and_then(Value::as_str).unwrap_or_default();
                Ok((key.to_string(), value.to_string()))
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
