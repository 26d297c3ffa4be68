//! `POST /admin/explain`: what a request would get now, and why ([`crate::limiter::explain`]).
//! The body is a `POST /json` body (the reference's JSON of a `RateLimitRequest`); nothing is
//! charged. An unknown domain, malformed JSON or a request a check would refuse is 400 with the
//! reason; a store that cannot be read is 503.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AdminState;
use crate::http::{body, error, json};
use crate::limiter::CheckError;
use crate::limiter::explain::ExplainError;
use crate::storage::Store;

pub(super) async fn explain<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let cap = state.limiter.options().bounds.max_bytes * 4;
    let bytes = match body::read(&headers, b, cap).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let request = match json::parse_request(&bytes) {
        Ok(r) => r,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    match state.limiter.explain(&request).await {
        Ok(explanation) => axum::Json(explanation).into_response(),
        Err(ExplainError::Check(CheckError::Store(e))) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("counter store unavailable: {e}"),
        ),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
