//! `/auth/{domain}`: a check whose descriptors come from the request's headers, through the
//! domain's `http_descriptors`, for NGINX `auth_request` and other proxies that ask over HTTP.
//!
//! NGINX passes on only 2xx, 401 and 403 from an auth subrequest (anything else becomes its own
//! 500, which a proxy configured to fail open lets through), so everything the client caused is
//! answered as a refusal, and only Sluice's own trouble as an error:
//!
//! | case | status | headers |
//! |---|---|---|
//! | allowed (or no descriptor could be built) | 200 | rate-limit headers of the configured style |
//! | over the limit | 403 (or 401, `--auth-over-limit-status`) | the same, `Retry-After`, `Sluice-Status` (the rule's status, 429 unless `over_limit_status`) and `Sluice-Problem` (the RFC 9457 document, compact, ASCII) |
//! | the client's request cannot be used: a header value that is not UTF-8, a cost that is not a number, values past the request bound, a body too large or too slow | 403 (or 401) | `Sluice-Status: 400` (413, 408 for the body), `Sluice-Problem` with `kind: "invalid"` |
//! | a domain without `http_descriptors` (a configuration error) | 404 | |
//! | the counter store failed | 500 | |
//!
//! `auth_request_set` copies the headers into variables, so the location that answers a 403 can
//! reply 429 (or the rule's status) with the problem document as its body. The request body is
//! ignored: the headers carry everything.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{HttpState, add_headers, body, error};
use crate::config::{EntrySource, HttpDescriptor};
use crate::limiter::headers::PROBLEM_CONTENT_TYPE;
use crate::limiter::{CheckError, CheckRequest, Code, Decision, Descriptor, Rejection};
use crate::storage::Store;

/// The rejecting rule's own status, for proxies that answer the client themselves.
pub const STATUS_HEADER: &str = "sluice-status";
/// The problem document of a rejection, on one line.
pub const PROBLEM_HEADER: &str = "sluice-problem";

pub(super) async fn check<S: Store>(
    State(state): State<Arc<HttpState<S>>>,
    Path(domain): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let counters = &state.counters;
    let refuse = |status: u16, detail: &str| {
        counters.unusable.inc();
        refusal(status, detail, state.auth_over_limit_status)
    };
    let cap = state.limiter.options().bounds.max_bytes * 4;
    if let Err(answer) = body::discard(&headers, body, cap).await {
        let detail = match answer.status() {
            StatusCode::PAYLOAD_TOO_LARGE => "the request body is larger than Sluice reads",
            StatusCode::REQUEST_TIMEOUT => "the request body did not arrive in time",
            _ => "the request body could not be read",
        };
        return refuse(answer.status().as_u16(), detail);
    }
    let descriptors = {
        let rules = state.limiter.rules();
        let Some(mapping) = rules.http_descriptors.get(&domain) else {
            counters.invalid.inc();
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "domain '{domain}' has no `http_descriptors` in the rule set, so no \
                     descriptor can be built from this request's headers"
                ),
            );
        };
        match from_headers(mapping, &headers) {
            Ok(d) => d,
            Err(msg) => return refuse(400, &msg),
        }
    };
    if descriptors.is_empty() {
        // Every descriptor lacked a header: nothing to limit, as with Envoy.
        counters.ok.inc();
        return StatusCode::OK.into_response();
    }
    let request = CheckRequest {
        domain,
        descriptors,
        hits_addend: 0,
    };
    let result = crate::adapter::check(
        &state.limiter,
        counters,
        "/auth/{domain}",
        &headers,
        &request,
        super::caller_wait(&headers),
    )
    .await;
    match result {
        Ok(decision) => answer(&decision, state.auth_over_limit_status),
        // Counted by the check; refused like the other unusable requests.
        Err(CheckError::Invalid(msg) | CheckError::Unusable(msg)) => {
            refusal(400, &msg, state.auth_over_limit_status)
        }
        Err(CheckError::Store(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            crate::adapter::store_failure(&e),
        ),
    }
}

/// The descriptors the mapping yields for `headers`. A descriptor with a missing or empty header
/// is left out; a header sent more than once counts with its first value.
fn from_headers(
    mapping: &[HttpDescriptor],
    headers: &HeaderMap,
) -> Result<Vec<Descriptor>, String> {
    let value = |name: &str| -> Result<Option<String>, String> {
        match headers.get(name) {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => std::str::from_utf8(v.as_bytes())
                .map(|s| Some(s.trim().to_owned()))
                .map_err(|_| format!("header {name} is not valid UTF-8")),
        }
    };
    let mut out = Vec::with_capacity(mapping.len());
    'descriptors: for d in mapping {
        let mut entries = Vec::with_capacity(d.entries.len());
        for e in &d.entries {
            let v = match &e.source {
                EntrySource::Value(v) => v.clone(),
                EntrySource::Header(h) => match value(h)? {
                    Some(v) if !v.is_empty() => v,
                    _ => continue 'descriptors,
                },
            };
            entries.push((e.key.clone(), v));
        }
        let hits_addend = match &d.hits_addend_header {
            None => None,
            Some(h) => match value(h)? {
                None => None,
                Some(v) => Some(v.parse::<u64>().map_err(|_| {
                    format!("header {h} must be a whole number of hits, found {v:?}")
                })?),
            },
        };
        out.push(Descriptor::from_parts(entries, None, hits_addend, false));
    }
    Ok(out)
}

/// A refusal of a request the client made unusable: the deny status NGINX acts on, with the
/// status the client should see (`Sluice-Status`) and a problem document saying why.
fn refusal(status: u16, detail: &str, deny_status: u16) -> Response {
    let mut rejection = crate::limiter::problem::unusable(detail);
    rejection.status = status;
    rejection
        .problem
        .insert("status".into(), serde_json::json!(status));
    refused(deny_status, &rejection)
}

fn answer(decision: &Decision, over_limit_status: u16) -> Response {
    if decision.overall == Code::Ok {
        let mut response = StatusCode::OK.into_response();
        add_headers(&mut response, &decision.response_headers);
        return response;
    }
    let mut response = match &decision.rejection {
        Some(r) => refused(over_limit_status, r),
        None => StatusCode::from_u16(over_limit_status)
            .unwrap_or(StatusCode::FORBIDDEN)
            .into_response(),
    };
    add_headers(&mut response, &decision.response_headers);
    response
}

/// `deny_status` (403 or 401) with the rejection's problem document as the body and, for
/// `auth_request_set`, its status in `Sluice-Status` and the document in `Sluice-Problem`.
fn refused(deny_status: u16, rejection: &Rejection) -> Response {
    let body = rejection.body();
    let deny = StatusCode::from_u16(deny_status).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = (
        deny,
        [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)],
        body.clone(),
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(
        HeaderName::from_static(STATUS_HEADER),
        rejection.status.into(),
    );
    if let Ok(v) = HeaderValue::try_from(ascii_json(&body)) {
        h.insert(HeaderName::from_static(PROBLEM_HEADER), v);
    }
    response
}

/// JSON text with every non-ASCII character written as `\uXXXX`, so it is a valid header value
/// everywhere. Non-ASCII only ever occurs inside strings, where the escape means the same.
fn ascii_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_ascii() {
            out.push(ch);
        } else {
            let mut units = [0u16; 2];
            for u in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::HttpEntry;

    fn mapping() -> Vec<HttpDescriptor> {
        let header = |k: &str, h: &str| HttpEntry {
            key: k.into(),
            source: EntrySource::Header(h.into()),
        };
        vec![
            HttpDescriptor {
                entries: vec![header("app_id", "x-app-id")],
                hits_addend_header: None,
            },
            HttpDescriptor {
                entries: vec![header("org", "x-org"), header("team", "x-team")],
                hits_addend_header: None,
            },
            HttpDescriptor {
                entries: vec![HttpEntry {
                    key: "generic_key".into(),
                    source: EntrySource::Value("uploads".into()),
                }],
                hits_addend_header: Some("x-bytes".into()),
            },
        ]
    }

    #[test]
    fn a_descriptor_with_a_missing_header_is_left_out() {
        let mut h = HeaderMap::new();
        h.insert("x-app-id", "web".parse().unwrap());
        h.insert("x-org", "acme".parse().unwrap());
        h.insert("x-team", "".parse().unwrap());
        let d = from_headers(&mapping(), &h).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].entries[0].value, "web");
        assert_eq!(d[1].entries[0].key, "generic_key");
        assert_eq!(d[1].hits_addend, None);
    }

    #[test]
    fn the_cost_header_must_be_a_number() {
        let mut h = HeaderMap::new();
        h.insert("x-bytes", "2048".parse().unwrap());
        assert_eq!(
            from_headers(&mapping(), &h).unwrap()[0].hits_addend,
            Some(2048)
        );
        h.insert("x-bytes", "2k".parse().unwrap());
        let e = from_headers(&mapping(), &h).unwrap_err();
        assert!(e.contains("x-bytes"), "{e}");
    }

    #[test]
    fn header_json_is_ascii() {
        assert_eq!(
            ascii_json(r#"{"a":"é😀"}"#),
            r#"{"a":"\u00e9\ud83d\ude00"}"#
        );
    }
}
