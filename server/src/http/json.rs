//! `POST /json`: the reference's check in proto3 JSON. 200 when allowed; a rejection answers with
//! the rejecting limit's status and the RFC 9457 problem document, with the reference's fields as
//! extension members; 400 for a malformed request, 413 for an oversized one, 500 when the
//! counter store fails.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use super::{HttpState, add_headers, body, error};
use crate::config::Unit;
use crate::limiter::headers::PROBLEM_CONTENT_TYPE;
use crate::limiter::{CheckError, CheckRequest, Code, Decision, Descriptor, LimitOverride};
use crate::storage::Store;

pub(super) async fn check<S: Store>(
    State(state): State<Arc<HttpState<S>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let counters = &state.counters;
    let cap = state.limiter.options().bounds.max_bytes * 4;
    let body = match body::read(&headers, body, cap).await {
        Ok(b) => b,
        Err(answer) => {
            counters.invalid.inc();
            return answer;
        }
    };
    let request: JsonRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            counters.invalid.inc();
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request JSON: {e}"),
            );
        }
    };
    let request = match request.into_check() {
        Ok(r) => r,
        Err(msg) => {
            counters.invalid.inc();
            return error(StatusCode::BAD_REQUEST, msg);
        }
    };
    let result = crate::adapter::check(
        &state.limiter,
        counters,
        "POST /json",
        &headers,
        &request,
        super::caller_wait(&headers),
    )
    .await;
    match result {
        Ok(decision) => {
            let json = JsonResponse::from(&decision);
            let (status, body, content_type) = match &decision.rejection {
                None => {
                    let status = match decision.overall {
                        Code::Ok => StatusCode::OK,
                        Code::OverLimit => StatusCode::TOO_MANY_REQUESTS,
                    };
                    (status, serde_json::to_value(&json), "application/json")
                }
                Some(rejection) => {
                    // The problem document, with the reference's proto3-JSON fields as extension
                    // members, so clients of either shape read it. The status is the rule's.
                    let status = StatusCode::from_u16(rejection.status)
                        .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
                    let body = serde_json::to_value(&json).map(|v| {
                        let mut doc = rejection.problem.clone();
                        if let serde_json::Value::Object(fields) = v {
                            doc.extend(fields);
                        }
                        serde_json::Value::Object(doc)
                    });
                    (status, body, PROBLEM_CONTENT_TYPE)
                }
            };
            let body = match body {
                Ok(b) => b.to_string(),
                Err(e) => {
                    counters.error.inc();
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("cannot encode the answer: {e}"),
                    );
                }
            };
            let mut response =
                (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
            // Proxies in front copy these to the client.
            add_headers(&mut response, &decision.response_headers);
            response
        }
        // A 400 for what the request carries, as the reference answers what it cannot use; the
        // wasm filter, which builds these requests from its client's data, refuses its request
        // on it.
        Err(CheckError::Invalid(msg) | CheckError::Unusable(msg)) => {
            error(StatusCode::BAD_REQUEST, msg)
        }
        Err(CheckError::Store(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::adapter::store_failure(&e),
        ),
    }
}

// Proto3 JSON: parsers accept the proto field name and its lowerCamelCase form; 64-bit integers
// may arrive as strings; enums as names or numbers.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(default)]
    domain: String,
    #[serde(default)]
    descriptors: Vec<JsonDescriptor>,
    #[serde(default, alias = "hitsAddend", deserialize_with = "uint")]
    hits_addend: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDescriptor {
    #[serde(default)]
    entries: Vec<JsonEntry>,
    #[serde(default)]
    limit: Option<JsonOverride>,
    #[serde(default, alias = "hitsAddend", deserialize_with = "opt_uint")]
    hits_addend: Option<u64>,
    #[serde(default, alias = "isNegativeHits")]
    is_negative_hits: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEntry {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOverride {
    #[serde(default, alias = "requestsPerUnit", deserialize_with = "uint")]
    requests_per_unit: u64,
    #[serde(default)]
    unit: serde_json::Value,
}

/// A `POST /json` body (the reference's proto3 JSON of a `RateLimitRequest`) as a check request;
/// the error says what is wrong. The admin API's explain takes the same body.
pub fn parse_request(body: &[u8]) -> Result<CheckRequest, String> {
    let request: JsonRequest =
        serde_json::from_slice(body).map_err(|e| format!("invalid request JSON: {e}"))?;
    request.into_check()
}

impl JsonRequest {
    fn into_check(self) -> Result<CheckRequest, String> {
        let hits_addend = u32::try_from(self.hits_addend)
            .map_err(|_| format!("hits_addend {} does not fit in uint32", self.hits_addend))?;
        let descriptors = self
            .descriptors
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let limit = d
                    .limit
                    .map(|o| {
                        let requests_per_unit =
                            u32::try_from(o.requests_per_unit).map_err(|_| {
                                format!(
                                    "descriptor {i} limit requests_per_unit does not fit in uint32"
                                )
                            })?;
                        LimitOverride::new(i, requests_per_unit, override_unit(&o.unit), &o.unit)
                    })
                    .transpose()?;
                Ok(Descriptor::from_parts(
                    d.entries.into_iter().map(|e| (e.key, e.value)),
                    limit,
                    d.hits_addend,
                    d.is_negative_hits,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CheckRequest {
            domain: self.domain,
            descriptors,
            hits_addend,
        })
    }
}

fn override_unit(v: &serde_json::Value) -> Option<Unit> {
    match v {
        serde_json::Value::Number(n) => Unit::from_override_unit(i32::try_from(n.as_i64()?).ok()?),
        serde_json::Value::String(s) if !s.eq_ignore_ascii_case("week") => Unit::parse(s),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(u64),
    Str(String),
}

fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match NumOrString::deserialize(d)? {
        NumOrString::Num(n) => Ok(n),
        NumOrString::Str(s) => s
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an unsigned integer"))),
    }
}

fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    uint(d).map(Some)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResponse {
    overall_code: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<JsonStatus>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    response_headers_to_add: Vec<JsonHeader>,
    /// The lease the request holds, as gRPC's `dynamic_metadata`.
    #[serde(skip_serializing_if = "Option::is_none")]
    dynamic_metadata: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonStatus {
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current_limit: Option<JsonLimit>,
    #[serde(skip_serializing_if = "is_zero")]
    limit_remaining: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_until_reset: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLimit {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    requests_per_unit: u32,
    unit: &'static str,
}

#[derive(Debug, Serialize)]
struct JsonHeader {
    key: String,
    value: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::OverLimit => "OVER_LIMIT",
    }
}

impl From<&Decision> for JsonResponse {
    fn from(d: &Decision) -> Self {
        JsonResponse {
            overall_code: code_name(d.overall),
            statuses: d
                .statuses
                .iter()
                .map(|s| JsonStatus {
                    code: code_name(s.code),
                    current_limit: s.current_limit.as_ref().map(|l| JsonLimit {
                        name: l.name.clone(),
                        requests_per_unit: l.requests_per_unit,
                        unit: l.unit.as_str(),
                    }),
                    limit_remaining: s.limit_remaining,
                    // proto3 JSON writes a Duration as seconds with an `s` suffix.
                    duration_until_reset: s.duration_until_reset.map(|d| {
                        if d.subsec_nanos() == 0 {
                            format!("{}s", d.as_secs())
                        } else {
                            format!("{:.9}s", d.as_secs_f64())
                        }
                    }),
                })
                .collect(),
            response_headers_to_add: d
                .response_headers
                .iter()
                .map(|(key, value)| JsonHeader {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            dynamic_metadata: d.lease.as_ref().map(|g| {
                serde_json::json!({
                    "lease_id": g.id.to_string(),
                    "lease_ttl_seconds": g.ttl.as_secs(),
                })
            }),
        }
    }
}
