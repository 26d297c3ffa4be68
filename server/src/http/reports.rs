//! `POST /reports`: clients and proxies report the latency and status of responses from the
//! upstreams adaptive limits protect ([`crate::adaptive`]).
//!
//! ```text
//! POST /reports {"domain": "d", "reports": [
//!     {"descriptor": [{"key": "upstream", "value": "payments"}], "latency_ms": 12.5, "status": 200}, ...]}
//!   200 {"accepted": 1, "unmatched": 0, "dropped": 0}
//!   400 {"error": "..."}   (the whole batch is refused, nothing is counted)
//!   413                    (a body over 1 MiB)
//! ```
//!
//! A batch holds at most [`MAX_BATCH`] reports. A report that does not parse, or claims an
//! impossible latency (negative, over an hour) or status (outside 100..=599), makes the whole
//! batch 400: a client sending nonsense is told so, and nothing it sent moves a limit.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{HttpState, body, error};
use crate::adaptive::Report;
use crate::storage::Store;

/// The most reports one batch may hold.
pub const MAX_BATCH: usize = 5_000;
/// The most entries a report's descriptor may have (the depth of the deepest rule there can be).
const MAX_ENTRIES: usize = 64;
/// The largest body.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    domain: String,
    reports: Vec<WireReport>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireReport {
    descriptor: Vec<WireEntry>,
    latency_ms: f64,
    status: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    key: String,
    value: String,
}

/// The reports of a body, or why it is refused.
pub fn parse(body: &[u8]) -> Result<(String, Vec<Report>), String> {
    let batch: Batch = serde_json::from_slice(body)
        .map_err(|e| format!("the report batch does not parse: {e}"))?;
    if batch.reports.len() > MAX_BATCH {
        return Err(format!(
            "a batch holds at most {MAX_BATCH} reports, found {}",
            batch.reports.len()
        ));
    }
    let mut reports = Vec::with_capacity(batch.reports.len());
    for (i, r) in batch.reports.into_iter().enumerate() {
        if r.descriptor.len() > MAX_ENTRIES {
            return Err(format!("report {i}: too many descriptor entries"));
        }
        let report = Report {
            entries: r.descriptor.into_iter().map(|e| (e.key, e.value)).collect(),
            latency_ms: r.latency_ms,
            status: r.status,
        };
        report.check().map_err(|e| format!("report {i}: {e}"))?;
        reports.push(report);
    }
    Ok((batch.domain, reports))
}

pub(super) async fn handle<S: Store>(
    State(state): State<Arc<HttpState<S>>>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let Some(reports) = state.reports.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "reports are not taken by this instance".into(),
        );
    };
    let body = match body::read(&headers, b, MAX_BODY).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let (domain, batch) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(why) => {
            reports.refused(1);
            return error(StatusCode::BAD_REQUEST, why);
        }
    };
    let tally = reports.record(&state.limiter.rules(), &domain, &batch);
    axum::Json(serde_json::json!({
        "accepted": tally.accepted,
        "unmatched": tally.unmatched,
        "dropped": tally.dropped,
    }))
    .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batches_and_what_is_refused_about_them() {
        let (domain, reports) = parse(
            br#"{"domain": "d", "reports": [{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 12.5, "status": 200}]}"#,
        )
        .unwrap();
        assert_eq!(domain, "d");
        assert_eq!(reports[0].latency_ms, 12.5);
        let one = |r: &str| format!(r#"{{"domain": "d", "reports": [{r}]}}"#);
        let cases = [
            ("nonsense".to_owned(), "does not parse"),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": -1, "status": 200}"#,
                ),
                "report 0: `latency_ms` must be between 0",
            ),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 3600001, "status": 200}"#,
                ),
                "`latency_ms`",
            ),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 1, "status": 600}"#,
                ),
                "`status` must be an HTTP status",
            ),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 1, "status": 70000}"#,
                ),
                "does not parse",
            ),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": "fast", "status": 200}"#,
                ),
                "does not parse",
            ),
            (
                one(r#"{"descriptor": [], "latency_ms": 1, "status": 200}"#),
                "at least one entry",
            ),
            (
                one(
                    r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 1, "status": 200, "extra": 1}"#,
                ),
                "unknown field",
            ),
        ];
        for (body, why) in cases {
            let e = parse(body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{body}: {e}");
        }
        let r = r#"{"descriptor": [{"key": "k", "value": "v"}], "latency_ms": 1, "status": 200}"#;
        let many = format!(
            r#"{{"domain": "d", "reports": [{}]}}"#,
            vec![r; MAX_BATCH + 1].join(",")
        );
        assert!(
            parse(many.as_bytes())
                .unwrap_err()
                .contains("at most 5000 reports")
        );
    }
}
