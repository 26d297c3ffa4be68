//! The decision for one request, transport-free: [`start`] answers locally when it can (negative
//! cache, then token buckets), [`finish`] turns Sluice's answer or its absence into a
//! [`Verdict`] under `failure_mode`.

use crate::bucket::{self, Take};
use crate::config::{Config, FailureMode};
use crate::descriptor::Descriptor;
use crate::headers::{self, LocalReply};
use crate::negative;
use crate::shared::{SharedStore, slot_key};

mod failure;
pub use failure::{ErrorKind, Failure, from_grpc_status};

/// `RateLimitResponse.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Code {
    #[default]
    Unknown,
    Ok,
    OverLimit,
    Other(i32),
}

impl Code {
    pub fn from_wire(v: i32) -> Self {
        match v {
            0 => Self::Unknown,
            1 => Self::Ok,
            2 => Self::OverLimit,
            other => Self::Other(other),
        }
    }
}

/// `RateLimitResponse.RateLimit`: the limit a status was checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit {
    pub requests_per_unit: u32,
    /// `RateLimitResponse.RateLimit.Unit` as on the wire.
    pub unit: i32,
}

/// `RateLimitResponse.DescriptorStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<Limit>,
    pub limit_remaining: u32,
    pub duration_until_reset_ms: Option<u64>,
}

/// Sluice's answer, from either transport.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    pub overall: Code,
    pub statuses: Vec<DescriptorStatus>,
    pub response_headers: Vec<(String, String)>,
    pub request_headers: Vec<(String, String)>,
    /// `raw_body`, or the problem document `/json` answered with.
    pub body: Vec<u8>,
    /// What a problem document in the body says.
    pub problem: Problem,
    /// Sluice refused the check as malformed (HTTP 400 or 413, gRPC INVALID_ARGUMENT), with its
    /// message; nothing else of the answer is set. The filter's own parts of a check (domain,
    /// keys, the number of descriptors and entries) are validated at start-up, so only the
    /// client's values can make it malformed: the request is invalid, not Sluice unavailable.
    pub refused: Option<String>,
}

impl Answer {
    pub fn refused(message: impl Into<String>) -> Self {
        Self {
            refused: Some(message.into()),
            ..Self::default()
        }
    }
}

/// The members of a problem document (Sluice's RFC 9457 body) the filter acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Problem {
    /// `status`: the reply's status.
    pub status: Option<u16>,
    /// `retry_after`, in seconds.
    pub retry_after_s: Option<u64>,
    /// `"algorithm": "concurrency"`: a full pool frees a slot whenever a holder releases its
    /// lease, not at the wait Sluice reports, so the answer must not go into the negative cache.
    pub concurrency: bool,
    /// `"kind": "invalid"`: Sluice refused the request's values, not a rate limit. Counted as an
    /// invalid request and never put in the negative cache (there is no wait to cache).
    pub invalid: bool,
}

/// What answered a request locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalCause {
    NegativeCache,
    Bucket,
}

/// The first step: answer locally, or ask Sluice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// No descriptor: nothing to check.
    Pass,
    Reject {
        reply: LocalReply,
        cause: LocalCause,
    },
    Remote,
}

/// Sluice's decision, or the failure mode's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    Reject(LocalReply),
    /// The request is invalid: Sluice refused it as malformed, or rejected it with a problem
    /// document of kind `invalid`.
    Invalid(LocalReply),
    /// No usable answer: `reply` is the failure-closed reply, `None` lets the request through.
    Failed {
        failure: Failure,
        reply: Option<LocalReply>,
    },
}

/// What an allowed request carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowed {
    /// For the client's response: Sluice's `response_headers_to_add` and rate-limit headers.
    pub response_headers: Vec<(String, String)>,
    /// For the upstream request: Sluice's `request_headers_to_add` and the remaining quota.
    pub request_headers: Vec<(String, String)>,
    pub statuses: Vec<DescriptorStatus>,
}

/// Answers from the negative cache, then from the token buckets, when `store` is available.
pub fn start(
    config: &Config,
    descriptors: &[Descriptor],
    store: Option<&dyn SharedStore>,
    now_ns: u64,
) -> Start {
    if descriptors.is_empty() {
        return Start::Pass;
    }
    let Some(store) = store else {
        return Start::Remote;
    };
    if config.negative_cache_max_ms > 0 {
        for d in descriptors {
            let fp = negative::fingerprint(&config.domain, &d.entries);
            let key = slot_key("n", fp, config.shared_slots);
            if let Some((wait_ms, status)) = negative::lookup(store, &key, fp, now_ns) {
                let reply = headers::made_up_reply(
                    status,
                    "rate limit exceeded",
                    Some(wait_ms),
                    Vec::new(),
                );
                return Start::Reject {
                    reply,
                    cause: LocalCause::NegativeCache,
                };
            }
        }
    }
    for d in descriptors {
        let Some(spec) = config
            .descriptors
            .get(d.def)
            .and_then(|def| def.local.as_ref())
        else {
            continue;
        };
        let fp = bucket::fingerprint(&config.domain, &d.entries, spec);
        let key = slot_key("b", fp, config.shared_slots);
        if let Take::Rejected { wait_ms } = bucket::take(store, &key, fp, spec, now_ns) {
            let reply =
                headers::made_up_reply(429, "local rate limit exceeded", Some(wait_ms), Vec::new());
            return Start::Reject {
                reply,
                cause: LocalCause::Bucket,
            };
        }
    }
    Start::Remote
}

/// Turns Sluice's answer (or the failure to get one) into the verdict, and records OVER_LIMIT
/// descriptors in the negative cache.
pub fn finish(
    config: &Config,
    descriptors: &[Descriptor],
    answer: Result<Answer, Failure>,
    store: Option<&dyn SharedStore>,
    now_ns: u64,
) -> Verdict {
    if let Ok(Answer {
        refused: Some(message),
        ..
    }) = &answer
    {
        let detail = format!(
            "the rate-limit service refused the request: {}",
            bounded(message, MAX_DETAIL_BYTES)
        );
        return Verdict::Invalid(headers::invalid_reply(
            config.invalid_request_status,
            &detail,
        ));
    }
    let answer = answer.and_then(|a| {
        if a.statuses.len() != descriptors.len() {
            return Err(Failure::new(
                ErrorKind::Malformed,
                format!(
                    "{} statuses for {} descriptors",
                    a.statuses.len(),
                    descriptors.len()
                ),
            ));
        }
        match a.overall {
            Code::Ok | Code::OverLimit => Ok(a),
            other => Err(Failure::new(
                ErrorKind::Malformed,
                format!("overall code {other:?}"),
            )),
        }
    });
    let answer = match answer {
        Ok(a) => a,
        Err(failure) => {
            let reply = match config.failure_mode {
                FailureMode::Allow => None,
                FailureMode::Deny { status } => Some(headers::made_up_reply(
                    status,
                    "the rate-limit service did not answer",
                    None,
                    Vec::new(),
                )),
            };
            return Verdict::Failed { failure, reply };
        }
    };
    let style = headers::rate_limit_headers(config.header_style, &answer.statuses);
    if answer.overall == Code::OverLimit {
        let wait_ms = headers::over_limit_wait_ms(&answer.statuses)
            .or(answer.problem.retry_after_s.map(|s| s.saturating_mul(1000)));
        let status = answer
            .problem
            .status
            .filter(|s| (400..=599).contains(s))
            .unwrap_or(429);
        let cacheable = !answer.problem.concurrency && !answer.problem.invalid;
        if let (Some(store), Some(wait), true) = (store, wait_ms, cacheable) {
            remember(
                config,
                descriptors,
                &answer.statuses,
                wait,
                status,
                store,
                now_ns,
            );
        }
        let reply = if answer.body.is_empty() {
            headers::made_up_reply(
                status,
                "rate limit exceeded",
                wait_ms,
                merged(answer.response_headers, style),
            )
        } else {
            let mut h = merged(answer.response_headers, style);
            if let Some(ms) = wait_ms {
                headers::merge(
                    &mut h,
                    vec![(
                        "retry-after".into(),
                        headers::ceil_secs(ms).max(1).to_string(),
                    )],
                );
            }
            LocalReply {
                status,
                headers: h,
                body: answer.body,
            }
        };
        return if answer.problem.invalid {
            Verdict::Invalid(reply)
        } else {
            Verdict::Reject(reply)
        };
    }
    let mut request_headers = answer.request_headers;
    if let Some(name) = &config.request_headers.remaining {
        let remaining = answer
            .statuses
            .iter()
            .filter(|s| s.current_limit.is_some())
            .map(|s| s.limit_remaining)
            .min();
        if let Some(r) = remaining {
            headers::merge(&mut request_headers, vec![(name.clone(), r.to_string())]);
        }
    }
    Verdict::Allow(Allowed {
        response_headers: merged(answer.response_headers, style),
        request_headers,
        statuses: answer.statuses,
    })
}

fn merged(
    mut sluice: Vec<(String, String)>,
    derived: Vec<(String, String)>,
) -> Vec<(String, String)> {
    headers::merge(&mut sluice, derived);
    sluice
}

/// Each OVER_LIMIT descriptor is cached for its own wait (the request's longest when it has
/// none), capped by `negative_cache_max_ms`.
fn remember(
    config: &Config,
    descriptors: &[Descriptor],
    statuses: &[DescriptorStatus],
    request_wait_ms: u64,
    status: u16,
    store: &dyn SharedStore,
    now_ns: u64,
) {
    if config.negative_cache_max_ms == 0 {
        return;
    }
    for (d, s) in descriptors
        .iter()
        .zip(statuses)
        .filter(|(_, s)| s.code == Code::OverLimit)
    {
        let wait_ms = s
            .duration_until_reset_ms
            .unwrap_or(request_wait_ms)
            .min(config.negative_cache_max_ms);
        if wait_ms == 0 {
            continue;
        }
        let fp = negative::fingerprint(&config.domain, &d.entries);
        let until = now_ns.saturating_add(wait_ms.saturating_mul(1_000_000));
        negative::insert(
            store,
            &slot_key("n", fp, config.shared_slots),
            fp,
            until,
            status,
        );
    }
}

/// The most of Sluice's message a client is shown.
const MAX_DETAIL_BYTES: usize = 256;

/// `text` cut to at most `max` bytes, on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

/// The value for the tenant request header: the first entry with the configured key, when it
/// can be a header value. Entry values come from the client (a percent-decoded query parameter,
/// a JWT claim, host metadata) and may hold any character; one with CR or LF would add headers of
/// the client's choosing to the upstream request, so a value with a control character sets no
/// header, and the header is removed as when no entry has the key.
pub fn tenant_value<'a>(config: &Config, descriptors: &'a [Descriptor]) -> Option<&'a str> {
    let (_, key) = config.request_headers.tenant.as_ref()?;
    descriptors
        .iter()
        .flat_map(|d| d.entries.iter())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| headers::is_field_value(v))
}

#[cfg(test)]
mod tests;
