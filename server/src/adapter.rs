//! What every transport adapter ([`crate::grpc`], `/json` and `/auth/{domain}` in
//! [`crate::http`]) does around a check, in one place: the check's trace span, the count of its
//! result in `sluice_requests_total`, and the message (and log line) of a store failure. The
//! adapters then only turn the decision or the error into their wire's answer.
//!
//! Boundary: sees the limiter's request and decision types, never a wire type.

use std::sync::Arc;
use std::time::Duration;

use crate::limiter::{CheckError, CheckRequest, Code, Decision, RateLimiter};
use crate::metrics::RequestCounters;
use crate::storage::{Store, StoreError};
use crate::trace::{CheckSpan, HeaderCarrier};

/// Runs `request` through `limiter`: traced as `name` (continuing the trace context in
/// `headers`) when tracing is on, and counted in `counters` whatever the result. `caller_wait`
/// is how long the caller waits for the answer, if it said (a queued request gives up in time).
pub async fn check<S: Store>(
    limiter: &Arc<RateLimiter<S>>,
    counters: &RequestCounters,
    name: &'static str,
    headers: &http::HeaderMap,
    request: &CheckRequest,
    caller_wait: Option<Duration>,
) -> Result<Decision, CheckError> {
    let span = crate::trace::enabled()
        .then(|| CheckSpan::start(name, &HeaderCarrier(headers), &request.domain));
    let result = if limiter.options().explain_log && tracing::enabled!(tracing::Level::DEBUG) {
        limiter
            .check_explained(request, caller_wait)
            .await
            .map(|(decision, explanation)| {
                let json = serde_json::to_string(&explanation).unwrap_or_default();
                tracing::debug!(transport = name, explanation = %json, "decision explained");
                decision
            })
    } else {
        limiter.check_within(request, caller_wait).await
    };
    if let Some(span) = span {
        span.finish(&result);
    }
    let counter = match &result {
        Ok(d) if d.overall == Code::Ok => &counters.ok,
        Ok(_) => &counters.over_limit,
        Err(CheckError::Invalid(_)) => &counters.invalid,
        Err(CheckError::Unusable(_)) => &counters.unusable,
        Err(CheckError::Store(_)) => &counters.error,
    };
    counter.inc();
    result
}

/// The message a store failure is answered with, logged once here (with whether it looks
/// transient) so every adapter reports it alike.
pub fn store_failure(e: &StoreError) -> String {
    tracing::warn!(error = %e, transient = e.is_transient(), "counter store failed");
    format!("rate-limit counters unavailable: {e}")
}
