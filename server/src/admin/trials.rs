//! `POST /admin/trials`: a value's trial period (`limiter::trial`), and ending or extending it.
//!
//! ```text
//! {"domain", "descriptor": [{"key", "value"}], "action": "status"}
//!   200 {"trial": {rule, shadow_for_seconds, first_seen_ms, ends_ms, left_seconds}}
//! {"domain", "descriptor", "action": "end"}
//!   200 {"override": …}   an `enforce` override until the trial would have ended; audited
//! {"domain", "descriptor", "action": "extend", "ttl_seconds": N}
//!   200 {"override": …}   a `shadow` override for N seconds; audited
//! ```
//!
//! Both changes are runtime overrides (they show in `GET /admin/overrides`, reach every replica
//! and can be removed as any other); the audit log names them `trial.end` and `trial.extend`.
//! Ending a trial that never started, or one already over, is 400: there is nothing to end.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::{
    EntryJson, admin_error, audit_log, entries, json_body, now_ms, refresh, unavailable,
};
use super::{AdminState, Who};
use crate::http::error;
use crate::overrides::{self, AuditEntry, Mode, OverrideRequest, TargetEntry};
use crate::storage::Store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrialRequest {
    domain: String,
    descriptor: Vec<EntryJson>,
    action: Action,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Action {
    Status,
    End,
    Extend,
}

pub(super) async fn trials<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let r: TrialRequest = match json_body(&headers, b).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let status = match state
        .limiter
        .trial_status(&r.domain, &entries(&r.descriptor))
        .await
    {
        Ok(status) => status,
        Err(e) => return admin_error(e),
    };
    let (mode, ttl, action) = match (r.action, r.ttl_seconds) {
        (Action::Status, _) => {
            return axum::Json(serde_json::json!({ "trial": status })).into_response();
        }
        (Action::End, _) if status.left_seconds == 0 => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "no trial to end: this value of {} {}",
                    status.rule,
                    if status.first_seen_ms.is_some() {
                        "is enforced already"
                    } else {
                        "has not been seen"
                    }
                ),
            );
        }
        (Action::End, _) => (Mode::Enforce, status.left_seconds, "trial.end"),
        (Action::Extend, Some(ttl)) => (Mode::Shadow, ttl, "trial.extend"),
        (Action::Extend, None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`extend` needs `ttl_seconds`: how long the value stays in shadow mode".into(),
            );
        }
    };
    let request = OverrideRequest {
        domain: r.domain,
        descriptor: r
            .descriptor
            .into_iter()
            .map(|e| TargetEntry {
                key: e.key,
                value: Some(e.value),
                prefix: None,
            })
            .collect(),
        limit: None,
        limit_name: None,
        concurrency: None,
        weight: None,
        mode: Some(mode),
        ttl_seconds: Some(ttl),
        reason: r.reason,
    };
    let o = match overrides::validate(request, &state.limiter.rules(), &who.0, now_ms()) {
        Ok(o) => o,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let entry = AuditEntry {
        before: serde_json::to_value(&status).unwrap_or_default(),
        ..AuditEntry::about(
            &o,
            action,
            &who.0,
            o.set_at,
            serde_json::to_value(&o).unwrap_or_default(),
        )
    };
    match state.overrides.put(&o, &entry).await {
        Ok(_) => {
            audit_log(&entry);
            refresh(&state).await;
            axum::Json(serde_json::json!({ "trial": status, "override": o })).into_response()
        }
        Err(e) => unavailable(e),
    }
}
