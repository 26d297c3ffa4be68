//! The rate-limit service: a decoded `ShouldRateLimit` request in, an answer or a status out. The
//! only module that sees the service's generated proto types; it converts them to and from the
//! limiter's. [`super::listener`] frames the messages on HTTP/2.
//!
//! A request whose values cannot be counted (over the byte bound, or not UTF-8, which prost
//! refuses to decode: [`super::lenient`]) is answered OVER_LIMIT with a problem document of status 400,
//! never with an error: those values come from the proxy's client, and Envoy lets a request
//! through on an error whenever it fails open.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    self, DescriptorStatus as PbStatus,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::{
    Duration as PbDuration, Struct as PbStruct, Value as PbValue, value::Kind as PbKind,
};
use prost::Message;
use tonic::Status;

use crate::config::Unit;
use crate::limiter::{
    CheckError, CheckRequest, Code, Decision, Descriptor, LeaseGrant, LimitOverride, RateLimiter,
};
use crate::metrics::RequestCounters;
use crate::storage::Store;

/// The rate-limit service: a decoded request in, an answer or a status out.
pub struct RlsService<S> {
    limiter: Arc<RateLimiter<S>>,
    counters: RequestCounters,
}

impl<S: Store> RlsService<S> {
    pub fn new(limiter: Arc<RateLimiter<S>>) -> Self {
        let counters = limiter.metrics().request_counters("grpc");
        Self { limiter, counters }
    }

    /// The largest request message the transport reads. It sits well above the configured
    /// request bound, so an oversized request is normally refused by the handler's own check, with
    /// its size in the message; past this cap the transport refuses it unread.
    pub fn max_message_bytes(&self) -> usize {
        self.limiter.options().bounds.max_message_bytes()
    }

    /// A request refused before it could be decoded (framing, size, compression): counted with
    /// the other invalid requests.
    pub fn refuse(&self, status: Status) -> Status {
        self.counters.invalid.inc();
        status
    }

    /// One `ShouldRateLimit` call; `metadata` is the call's request headers (trace context).
    pub async fn should_rate_limit(
        &self,
        metadata: &http::HeaderMap,
        request: RateLimitRequest,
    ) -> Result<RateLimitResponse, Status> {
        let bound = self.limiter.options().bounds.max_bytes;
        let counters = &self.counters;
        // Entries are bounded by the limiter; this bounds everything else a message can carry.
        let size = request.encoded_len();
        if size > bound * 2 {
            counters.invalid.inc();
            return Err(Status::invalid_argument(format!(
                "request is {size} bytes; at most {} are accepted",
                bound * 2
            )));
        }
        let check = from_proto(request).inspect_err(|_| {
            counters.invalid.inc();
        })?;
        let result = crate::adapter::check(
            &self.limiter,
            counters,
            "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            metadata,
            &check,
            grpc_timeout(metadata),
        )
        .await;
        match result {
            Ok(decision) => Ok(to_proto(decision)),
            Err(CheckError::Unusable(reason)) => {
                Ok(self.unusable(check.descriptors.len(), &reason))
            }
            Err(e) => Err(to_status(&e)),
        }
    }

    /// The answer for a message prost could not decode: a refusal when only its text is bad
    /// (see the `lenient` module), `INVALID_ARGUMENT` otherwise.
    pub fn undecodable(
        &self,
        bytes: &[u8],
        error: &prost::DecodeError,
    ) -> Result<RateLimitResponse, Status> {
        match super::lenient::descriptors_if_only_text_is_bad(bytes) {
            Some(descriptors) => {
                self.counters.unusable.inc();
                Ok(self.unusable(
                    descriptors,
                    "a descriptor entry's key or value (or the domain) is not UTF-8",
                ))
            }
            None => Err(self.refuse(Status::invalid_argument(format!(
                "cannot decode the RateLimitRequest: {error}"
            )))),
        }
    }

    /// The answer for a message larger than the transport reads, refused unread: OVER_LIMIT
    /// without statuses (the descriptors were never seen; Envoy acts on the overall code).
    pub fn oversized(&self, len: usize) -> RateLimitResponse {
        self.counters.unusable.inc();
        self.unusable(
            0,
            &format!(
                "request is {len} bytes; at most {} are read",
                self.max_message_bytes()
            ),
        )
    }

    /// OVER_LIMIT for every descriptor, with the problem document as the body Envoy sends; or,
    /// under the global shadow mode (which never refuses), OK.
    fn unusable(&self, descriptors: usize, reason: &str) -> RateLimitResponse {
        if self.limiter.options().global_shadow_mode {
            let ok = rate_limit_response::Code::Ok as i32;
            return RateLimitResponse {
                overall_code: ok,
                statuses: vec![
                    PbStatus {
                        code: ok,
                        ..Default::default()
                    };
                    descriptors
                ],
                ..Default::default()
            };
        }
        let over = rate_limit_response::Code::OverLimit as i32;
        let rejection = crate::limiter::problem::unusable(reason);
        RateLimitResponse {
            overall_code: over,
            statuses: vec![
                PbStatus {
                    code: over,
                    ..Default::default()
                };
                descriptors
            ],
            raw_body: rejection.body().into_bytes(),
            response_headers_to_add: vec![HeaderValue {
                key: "content-type".into(),
                value: crate::limiter::headers::PROBLEM_CONTENT_TYPE.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// The one place errors become gRPC codes.
pub fn to_status(e: &CheckError) -> Status {
    match e {
        // Adapters answer `Unusable` as a refusal; this is only for callers that cannot.
        CheckError::Invalid(msg) | CheckError::Unusable(msg) => {
            Status::invalid_argument(msg.clone())
        }
        // UNAVAILABLE, not UNKNOWN: it is what Envoy's `failure_mode_deny` acts on, and it tells
        // clients the call may succeed later.
        CheckError::Store(err) => Status::unavailable(crate::adapter::store_failure(err)),
    }
}

fn from_proto(request: RateLimitRequest) -> Result<CheckRequest, Status> {
    let descriptors = request
        .descriptors
        .into_iter()
        .enumerate()
        .map(|(i, d)| descriptor_from_proto(i, d))
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(CheckRequest {
        domain: request.domain,
        descriptors,
        hits_addend: request.hits_addend,
    })
}

fn descriptor_from_proto(index: usize, d: RateLimitDescriptor) -> Result<Descriptor, Status> {
    let limit = d
        .limit
        .map(|o| {
            LimitOverride::new(
                index,
                o.requests_per_unit,
                Unit::from_override_unit(o.unit),
                o.unit,
            )
        })
        .transpose()
        .map_err(Status::invalid_argument)?;
    Ok(Descriptor::from_parts(
        d.entries.into_iter().map(|e| (e.key, e.value)),
        limit,
        d.hits_addend.map(|v| v.value),
        d.is_negative_hits,
    ))
}

fn code_to_proto(code: Code) -> i32 {
    match code {
        Code::Ok => rate_limit_response::Code::Ok as i32,
        Code::OverLimit => rate_limit_response::Code::OverLimit as i32,
    }
}

/// The lease a request holds, as dynamic metadata for the next filter (Envoy puts it in the rate
/// limit filter's namespace): `lease_id` and `lease_ttl_seconds`.
fn lease_metadata(grant: &LeaseGrant) -> PbStruct {
    let value = |kind| PbValue { kind: Some(kind) };
    PbStruct {
        fields: [
            (
                "lease_id".to_owned(),
                value(PbKind::StringValue(grant.id.to_string())),
            ),
            (
                "lease_ttl_seconds".to_owned(),
                value(PbKind::NumberValue(grant.ttl.as_secs() as f64)),
            ),
        ]
        .into_iter()
        .collect(),
    }
}

fn to_proto(decision: Decision) -> RateLimitResponse {
    RateLimitResponse {
        dynamic_metadata: decision.lease.as_ref().map(lease_metadata),
        // Envoy answers a rejected request with this body; its `content-type` is among the
        // headers.
        raw_body: decision
            .rejection
            .map(|r| r.body().into_bytes())
            .unwrap_or_default(),
        overall_code: code_to_proto(decision.overall),
        statuses: decision
            .statuses
            .into_iter()
            .map(|s| PbStatus {
                code: code_to_proto(s.code),
                current_limit: s.current_limit.map(|l| rate_limit_response::RateLimit {
                    name: l.name.unwrap_or_default(),
                    requests_per_unit: l.requests_per_unit,
                    unit: l.unit.proto_response_unit(),
                }),
                limit_remaining: s.limit_remaining,
                duration_until_reset: s.duration_until_reset.map(|d| PbDuration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
                quota: None,
            })
            .collect(),
        response_headers_to_add: decision
            .response_headers
            .into_iter()
            .map(|(key, value)| HeaderValue {
                key,
                value,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The call's deadline from its `grpc-timeout` header: 1 to 8 digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). A header that does not parse is ignored, as gRPC servers do.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<std::time::Duration> {
    use std::time::Duration;
    let text = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at_checked(text.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
