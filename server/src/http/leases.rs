//! The lease API for SDKs and jobs that do not sit behind a proxy: acquire (optionally waiting),
//! renew, release, and list a pool's holders. Each call is a check through the limiter, so a
//! lease is subject to every limit its descriptors match, exactly as through `ShouldRateLimit`.
//!
//! ```text
//! POST /leases/acquire  {"domain": "d", "descriptors": [{"entries": [...]}], "wait_ms": 5000}
//!   200 {"lease_id": "…", "ttl_seconds": 60}        (+ x-sluice-lease-id / -ttl headers)
//!   429 problem document with Retry-After          (still full when the wait ran out)
//!   (a pool with a `queue` waits its turn in it, up to `wait_ms` or, without one, the
//!   queue's `max_wait_ms`; a pool without one is asked again until `wait_ms` runs out)
//! POST /leases/renew    {"domain", "descriptors", "lease_id"}  200 as acquire, or 429
//! POST /leases/release  {"domain", "descriptors", "lease_id"}  204
//!   (404 for a domain not in the rule set, 400 for descriptors that match no pool)
//! POST /leases/holders  {"domain", "descriptors"}             200 {"pools": [...]}
//! ```
//!
//! Holders are listed with the first 8 hex digits of their ids only: an id is what entitles its
//! holder to renew and release, so the full ids are for the admin API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{HttpState, add_headers, body, error};
use crate::algorithm::lease::LeaseId;
use crate::limiter::headers::PROBLEM_CONTENT_TYPE;
use crate::limiter::{CheckError, CheckRequest, Code, Decision, Descriptor, Entry};
use crate::storage::Store;

/// The first wait between attempts of a waiting acquire, doubled up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    domain: String,
    descriptors: Vec<LeaseDescriptor>,
    #[serde(default)]
    lease_id: Option<String>,
    /// Acquire only: how long to keep trying while the pool is full.
    #[serde(default)]
    wait_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseDescriptor {
    entries: Vec<LeaseEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseEntry {
    key: String,
    #[serde(default)]
    value: String,
}

pub(super) async fn handle<S: Store>(
    State(state): State<Arc<HttpState<S>>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cap = state.limiter.options().bounds.max_bytes * 4;
    let body = match body::read(&headers, body, cap).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let request: LeaseRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("invalid request JSON: {e}"),
            );
        }
    };
    // A domain the rule set does not know has no pools: answering 204 to a release there would
    // tell a client whose configuration is wrong that all is well.
    if state.limiter.rules().domain(&request.domain).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("domain '{}' is not in the rule set", request.domain),
        );
    }
    let result = match action.as_str() {
        "acquire" => acquire(&state, request).await,
        "renew" => renew(&state, request).await,
        "release" => release(&state, request).await,
        "holders" => holders(&state, request).await,
        other => Err(error(
            StatusCode::NOT_FOUND,
            format!("no lease action '{other}': acquire, renew, release or holders"),
        )),
    };
    result.unwrap_or_else(|answer| answer)
}

fn check_request(r: &LeaseRequest, lease: Option<&str>, release: bool) -> CheckRequest {
    CheckRequest {
        domain: r.domain.clone(),
        descriptors: r
            .descriptors
            .iter()
            .map(|d| Descriptor {
                entries: d
                    .entries
                    .iter()
                    .map(|e| Entry {
                        key: e.key.clone(),
                        value: e.value.clone(),
                    })
                    .collect(),
                lease: lease.map(str::to_owned),
                negative_hits: release,
                ..Descriptor::default()
            })
            .collect(),
        hits_addend: 0,
    }
}

fn failed(e: CheckError) -> Response {
    match e {
        CheckError::Invalid(msg) | CheckError::Unusable(msg) => error(StatusCode::BAD_REQUEST, msg),
        CheckError::Store(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::adapter::store_failure(&e),
        ),
    }
}

/// 200 with the lease, the rejection's problem document, or 400 when no pool was involved.
fn answer(decision: &Decision) -> Response {
    let mut response = match (&decision.lease, &decision.rejection) {
        (Some(grant), _) => axum::Json(serde_json::json!({
            "lease_id": grant.id.to_string(),
            "ttl_seconds": grant.ttl.as_secs(),
        }))
        .into_response(),
        (None, Some(rejection)) => (
            StatusCode::from_u16(rejection.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
            rejection.body(),
        )
            .into_response(),
        (None, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the descriptors match no concurrency pool: there is no lease to hold".into(),
            );
        }
    };
    add_headers(&mut response, &decision.response_headers);
    response
}

async fn acquire<S: Store>(state: &HttpState<S>, r: LeaseRequest) -> Result<Response, Response> {
    if r.lease_id.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "acquire takes no `lease_id`: Sluice generates it".into(),
        ));
    }
    let max = state.lease_max_wait;
    let wait = Duration::from_millis(r.wait_ms.unwrap_or(0));
    if wait > max {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("`wait_ms` must be at most {}", max.as_millis()),
        ));
    }
    let request = check_request(&r, None, false);
    let deadline = Instant::now() + wait;
    let mut pause = POLL_FIRST;
    loop {
        // A pool with a queue waits in it (up to `wait_ms`, or its `max_wait_ms` when the request
        // gives none); one without is polled below.
        let left = r
            .wait_ms
            .map(|_| deadline.saturating_duration_since(Instant::now()));
        let decision = state
            .limiter
            .check_within(&request, left)
            .await
            .map_err(failed)?;
        let pool_full = decision.overall == Code::OverLimit
            && decision.rejection.as_ref().is_some_and(|r| {
                r.problem.get("algorithm").and_then(|a| a.as_str()) == Some("concurrency")
            });
        let left = deadline.saturating_duration_since(Instant::now());
        // Only a full pool is worth waiting for: a rate limit's answer already says when. Less
        // than one pause left (a queued pool has just waited out the time) is not worth another
        // attempt either.
        if !pool_full || left < POLL_FIRST {
            return Ok(answer(&decision));
        }
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// The request's lease id, or the reason for a 400.
fn lease_id(r: &LeaseRequest) -> Result<String, String> {
    match &r.lease_id {
        Some(id) if LeaseId::parse(id).is_some() => Ok(id.clone()),
        Some(_) => Err(
            "`lease_id` is not a lease id (32 lower-case hex digits, as acquire returned it)"
                .into(),
        ),
        None => Err("`lease_id` is required".into()),
    }
}

async fn renew<S: Store>(state: &HttpState<S>, r: LeaseRequest) -> Result<Response, Response> {
    let id = lease_id(&r).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let decision = state
        .limiter
        .check(&check_request(&r, Some(&id), false))
        .await
        .map_err(failed)?;
    Ok(answer(&decision))
}

async fn release<S: Store>(state: &HttpState<S>, r: LeaseRequest) -> Result<Response, Response> {
    let id = lease_id(&r).map_err(|why| error(StatusCode::BAD_REQUEST, why))?;
    let decision = state
        .limiter
        .check(&check_request(&r, Some(&id), true))
        .await
        .map_err(failed)?;
    if decision.statuses.iter().all(|s| s.current_limit.is_none()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "the descriptors match no concurrency pool: there is no lease to release".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn holders<S: Store>(state: &HttpState<S>, r: LeaseRequest) -> Result<Response, Response> {
    let [d] = &r.descriptors[..] else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "holders takes exactly one descriptor".into(),
        ));
    };
    let entries: Vec<Entry> = d
        .entries
        .iter()
        .map(|e| Entry {
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect();
    let pools = state
        .limiter
        .holders(&r.domain, &entries)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(axum::Json(serde_json::json!({
        "pools": pools_json(&pools, now_micros(), false),
    }))
    .into_response())
}

pub(crate) fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Pools and holders as JSON; ids in full only for the admin API.
pub(crate) fn pools_json(
    pools: &[(
        crate::limiter::inspect::CounterView,
        Vec<crate::algorithm::lease::Lease>,
    )],
    now: u64,
    full_ids: bool,
) -> serde_json::Value {
    pools
        .iter()
        .map(|(view, leases)| {
            let holders: Vec<serde_json::Value> = leases
                .iter()
                .map(|l| {
                    let id = l.id.to_string();
                    serde_json::json!({
                        "lease_id": if full_ids { id } else { format!("{}…", &id[..8]) },
                        "expires_in_seconds":
                            Duration::from_micros(l.expires_at.saturating_sub(now)).as_secs_f64(),
                    })
                })
                .collect();
            serde_json::json!({
                "rule": view.rule,
                "name": view.name,
                "capacity": view.limit,
                "in_use": leases.len(),
                "lease_ttl_seconds": view.window_seconds,
                "holders": holders,
            })
        })
        .collect()
}
