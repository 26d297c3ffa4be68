//! The admin endpoints (all JSON; paths under `/admin`):
//!
//! | method, path | body / query | answer |
//! |---|---|---|
//! | `POST /counters` | `{"domain", "descriptor": [{"key", "value"}]}` | every limit: used, remaining, reset, algorithm |
//! | `POST /counters/reset` | the same | the counters before and after; audited |
//! | `GET /top?rule=RULE&limit=N` | | the rule's heaviest consumers on this instance (no `rule`: the rules tracked) |
//! | `POST /leases` | as `/counters` | each pool's holders, with full lease ids |
//! | `GET /overrides` | | every override stored, with whether it is in force |
//! | `PUT /overrides` | an [`OverrideRequest`] | the override and what it replaced; audited |
//! | `DELETE /overrides/{id}` | | the override removed; audited |
//! | `GET /audit?limit=N` | | the latest changes, newest first |
//! | `POST /explain` | a `POST /json` body | what the request would get now, and why ([`super::explain`]) |
//! | `POST /trials` | `{"domain", "descriptor", "action": "status"\|"end"\|"extend"}` | a value's trial period; ending or extending it is an audited override ([`super::trials`]) |
//!
//! Bad input (malformed JSON, a field of the wrong type, an unknown domain or rule, a field that
//! does not apply to the rule) is 400 with the reason, and changes nothing. A store that cannot
//! be reached is 503.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{AdminState, Who};
use crate::http::{body, error, leases};
use crate::limiter::Entry;
use crate::limiter::inspect::AdminError;
use crate::overrides::{self, AuditEntry, OverrideRequest};
use crate::storage::Store;

/// The largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// A descriptor, as the counter endpoints take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorQuery {
    pub domain: String,
    pub descriptor: Vec<EntryJson>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntryJson {
    pub key: String,
    #[serde(default)]
    pub value: String,
}

/// A descriptor's entries as the limiter takes them.
pub(super) fn entries(descriptor: &[EntryJson]) -> Vec<Entry> {
    descriptor
        .iter()
        .map(|e| Entry {
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect()
}

impl DescriptorQuery {
    fn entries(&self) -> Vec<Entry> {
        entries(&self.descriptor)
    }

    fn target(&self) -> serde_json::Value {
        serde_json::json!({ "domain": self.domain, "descriptor": self.descriptor })
    }
}

pub(super) async fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    b: Body,
) -> Result<T, Response> {
    let bytes = body::read(headers, b, MAX_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request JSON: {e}"),
        )
    })
}

pub(super) fn admin_error(e: AdminError) -> Response {
    match e {
        AdminError::Check(crate::limiter::CheckError::Store(s)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("counter store unavailable: {s}"),
        ),
        other => error(StatusCode::BAD_REQUEST, other.to_string()),
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

pub(super) fn now_ms() -> u64 {
    leases::now_micros() / 1000
}

pub(super) async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such admin endpoint: counters, counters/reset, top, leases, overrides, audit, \
         explain, trials"
            .into(),
    )
}

pub(super) async fn inspect<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let q: DescriptorQuery = match json_body(&headers, b).await {
        Ok(q) => q,
        Err(answer) => return answer,
    };
    match state.limiter.inspect(&q.domain, &q.entries()).await {
        Ok(counters) => axum::Json(serde_json::json!({
            "domain": q.domain,
            "descriptor": q.descriptor,
            "counters": counters,
        }))
        .into_response(),
        Err(e) => admin_error(e),
    }
}

pub(super) async fn reset<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let q: DescriptorQuery = match json_body(&headers, b).await {
        Ok(q) => q,
        Err(answer) => return answer,
    };
    let entries = q.entries();
    let before = match state.limiter.reset(&q.domain, &entries).await {
        Ok(b) => b,
        Err(e) => return admin_error(e),
    };
    let after = match state.limiter.inspect(&q.domain, &entries).await {
        Ok(a) => a,
        Err(e) => return admin_error(e),
    };
    let entry = AuditEntry {
        at: now_ms(),
        who: who.0,
        action: "counters.reset".into(),
        target: q.target(),
        after: serde_json::to_value(&after).unwrap_or_default(),
        before: serde_json::to_value(&before).unwrap_or_default(),
    };
    audit_log(&entry);
    if let Err(e) = state.overrides.record(&entry).await {
        tracing::warn!(error = %e, "the counter reset is not in the shared audit log");
    }
    axum::Json(serde_json::json!({ "before": before, "after": after })).into_response()
}

/// Every change goes to the log too, whatever the store does with it.
pub(super) fn audit_log(entry: &AuditEntry) {
    tracing::info!(
        target: "sluice::audit",
        who = %entry.who,
        action = %entry.action,
        target_ = %entry.target,
        before = %entry.before,
        after = %entry.after,
        "admin change"
    );
}

/// `name=value&…` of a query string, percent-decoded; only `allowed` names. The error is the
/// reason for a 400.
fn query(raw: Option<String>, allowed: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let text = raw.unwrap_or_default();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name)?, percent_decode(value)?);
        if !allowed.contains(&name.as_str()) {
            return Err(format!(
                "unknown query parameter '{name}'; expected: {}",
                allowed.join(", ")
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bad = || format!("malformed query text '{text}'");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// A `limit` parameter: a whole number.
fn limit_of(params: &[(String, String)], default: usize) -> Result<usize, String> {
    match params.iter().find(|(n, _)| n == "limit") {
        None => Ok(default),
        Some((_, v)) => v
            .parse()
            .map_err(|_| format!("`limit` must be a whole number, found '{v}'")),
    }
}

pub(super) async fn top<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (params, limit) =
        match query(raw, &["rule", "limit"]).and_then(|p| limit_of(&p, 10).map(|l| (p, l))) {
            Ok(found) => found,
            Err(why) => return error(StatusCode::BAD_REQUEST, why),
        };
    let Some(top) = state.limiter.top_consumers() else {
        return error(
            StatusCode::NOT_FOUND,
            "top consumers are not tracked".into(),
        );
    };
    let Some((_, rule)) = params.into_iter().find(|(n, _)| n == "rule") else {
        return axum::Json(serde_json::json!({ "rules": top.rules() })).into_response();
    };
    match top.top(&rule, limit.min(crate::limiter::top::SLOTS)) {
        Some((consumers, total)) => axum::Json(serde_json::json!({
            "rule": rule,
            "total_hits": total,
            "consumers": consumers,
        }))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no traffic recorded for rule '{rule}' on this instance"),
        ),
    }
}

pub(super) async fn leases<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let q: DescriptorQuery = match json_body(&headers, b).await {
        Ok(q) => q,
        Err(answer) => return answer,
    };
    match state.limiter.holders(&q.domain, &q.entries()).await {
        Ok(pools) => axum::Json(serde_json::json!({
            "pools": leases::pools_json(&pools, leases::now_micros(), true),
        }))
        .into_response(),
        Err(e) => admin_error(e),
    }
}

pub(super) async fn list_overrides<S: Store>(State(state): State<Arc<AdminState<S>>>) -> Response {
    match state.overrides.load().await {
        Ok(mut list) => {
            list.sort_by(|a, b| a.id.cmp(&b.id));
            let now = now_ms() / 1000;
            let items: Vec<serde_json::Value> = list
                .iter()
                .map(|o| {
                    let mut v = serde_json::to_value(o).unwrap_or_default();
                    v["in_force"] = serde_json::Value::Bool(!o.lapsed(now));
                    v
                })
                .collect();
            axum::Json(serde_json::json!({
                "store": state.overrides.name(),
                "overrides": items,
            }))
            .into_response()
        }
        Err(e) => unavailable(e),
    }
}

pub(super) async fn set_override<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Extension(who): Extension<Who>,
    headers: HeaderMap,
    b: Body,
) -> Response {
    let request: OverrideRequest = match json_body(&headers, b).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let o = match overrides::validate(request, &state.limiter.rules(), &who.0, now_ms()) {
        Ok(o) => o,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    let entry = AuditEntry::about(
        &o,
        "override.set",
        &who.0,
        o.set_at,
        serde_json::to_value(&o).unwrap_or_default(),
    );
    match state.overrides.put(&o, &entry).await {
        Ok(before) => {
            audit_log(&AuditEntry {
                before: serde_json::to_value(&before).unwrap_or_default(),
                ..entry
            });
            refresh(&state).await;
            axum::Json(serde_json::json!({ "override": o, "before": before })).into_response()
        }
        Err(e) => unavailable(e),
    }
}

pub(super) async fn delete_override<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    Extension(who): Extension<Who>,
    Path(id): Path<String>,
) -> Response {
    let entry = AuditEntry {
        at: now_ms(),
        who: who.0,
        action: "override.delete".into(),
        target: serde_json::json!({ "id": id }),
        after: serde_json::Value::Null,
        before: serde_json::Value::Null,
    };
    match state.overrides.delete(&id, &entry).await {
        Ok(Some(before)) => {
            audit_log(&AuditEntry {
                before: serde_json::to_value(&before).unwrap_or_default(),
                ..entry
            });
            refresh(&state).await;
            axum::Json(serde_json::json!({ "deleted": before })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no override with id '{id}'")),
        Err(e) => unavailable(e),
    }
}

/// This instance applies its own change at once; the others follow through the store.
pub(super) async fn refresh<S: Store>(state: &AdminState<S>) {
    match state.overrides.load().await {
        Ok(list) => {
            state.limiter.set_overrides(list);
        }
        Err(e) => tracing::warn!(error = %e, "cannot reload overrides after a change"),
    }
}

pub(super) async fn audit<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let limit = match query(raw, &["limit"]).and_then(|p| limit_of(&p, 50)) {
        Ok(l) => l.clamp(1, crate::overrides::backend::AUDIT_KEPT),
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    match state.overrides.audit(limit).await {
        Ok(entries) => axum::Json(serde_json::json!({ "entries": entries })).into_response(),
        Err(e) => unavailable(e),
    }
}
