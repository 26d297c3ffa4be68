//! The HTTP adapter: `POST /json` (the reference's proto3-JSON check), `/auth/{domain}` (a check
//! built from the request's headers, for NGINX `auth_request` and other proxies that ask over
//! HTTP), `GET /healthcheck`, `GET /rlconfig` and `GET /metrics`.
//!
//! [`json`] owns the proto3-JSON wire types, [`auth`] the header mapping and the answer NGINX can
//! act on, [`body`] the bounded reading of request bodies (413 with a reason when too large),
//! [`leases`] the lease API, [`listener`] the listener itself (HTTP/1.1 and h2c within the listener
//! bounds), [`reports`] the latency and status reports of adaptive limits. The admin API (`/admin/`) is [`crate::admin`], merged in when on.
//!
//! Boundary: owns the HTTP wire types; checks go through [`crate::adapter`] to the limiter, and it
//! never reads settings, the gRPC module or start-up code.

mod auth;
pub(crate) mod body;
pub mod json;
pub(crate) mod leases;
pub mod listener;
pub mod reports;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::limiter::RateLimiter;
use crate::metrics::RequestCounters;
use crate::storage::Store;

/// Whether a request's headers carry an admin token.
pub type Authorize = Arc<dyn Fn(&axum::http::HeaderMap) -> bool + Send + Sync>;

/// What the HTTP handlers share.
pub struct HttpState<S> {
    pub limiter: Arc<RateLimiter<S>>,
    /// False once shutdown starts, so load balancers stop sending before the listener closes.
    pub ready: Arc<AtomicBool>,
    counters: RequestCounters,
    /// What `/auth/{domain}` answers an over-limit request with: 403 or 401.
    auth_over_limit_status: u16,
    /// The longest `wait_ms` a lease acquire may ask for.
    lease_max_wait: std::time::Duration,
    /// When the admin API is on: whether a request carries an admin token, which lets
    /// `/rlconfig` show runtime overrides in full.
    admin_token: Option<Authorize>,
    /// `--ready-when-store-down`: readiness holds while the store cannot answer.
    ready_when_store_down: bool,
    /// Where `POST /reports` adds what clients report for adaptive limits.
    reports: Option<Arc<crate::adaptive::Reports>>,
}

impl<S: Store> HttpState<S> {
    pub fn new(limiter: Arc<RateLimiter<S>>, ready: Arc<AtomicBool>) -> Self {
        let counters = limiter.metrics().request_counters("http");
        Self {
            limiter,
            ready,
            counters,
            auth_over_limit_status: 403,
            lease_max_wait: std::time::Duration::from_secs(30),
            admin_token: None,
            ready_when_store_down: false,
            reports: None,
        }
    }

    /// Takes reports for adaptive limits on `POST /reports` (404 without).
    pub fn with_reports(mut self, reports: Arc<crate::adaptive::Reports>) -> Self {
        self.reports = Some(reports);
        self
    }

    /// Whether `/healthcheck` stays 200 while the counter store cannot answer.
    pub fn with_ready_when_store_down(mut self, ready: bool) -> Self {
        self.ready_when_store_down = ready;
        self
    }

    /// How to tell a request with an admin token, which unlocks the override details of
    /// `/rlconfig` (the admin API's own check, handed down: this module does not import it).
    pub fn with_admin_token(mut self, authorize: Option<Authorize>) -> Self {
        self.admin_token = authorize;
        self
    }

    /// The longest a lease acquire may wait for a slot (30 s unless set).
    pub fn with_lease_max_wait(mut self, wait: std::time::Duration) -> Self {
        self.lease_max_wait = wait;
        self
    }

    /// 403 (the default) or 401: the refusals NGINX's `auth_request` passes on.
    pub fn with_auth_over_limit_status(mut self, status: u16) -> Self {
        self.auth_over_limit_status = status;
        self
    }
}

pub fn router<S: Store>(state: Arc<HttpState<S>>) -> Router {
    Router::new()
        .route("/json", post(json::check::<S>))
        // Any method: `auth_request` subrequests keep the client's method.
        .route("/auth/{domain}", any(auth::check::<S>))
        .route("/healthcheck", get(healthcheck::<S>))
        .route("/rlconfig", get(rlconfig::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/leases/{action}", post(leases::handle::<S>))
        .route("/reports", post(reports::handle::<S>))
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The header in which an HTTP caller says how long it waits for an answer, in milliseconds (a
/// request queued for a pool gives up in time to answer within it).
pub const WAIT_HEADER: &str = "x-sluice-wait-ms";

/// The caller's wait from [`WAIT_HEADER`]; a value that is not a whole number is ignored.
fn caller_wait(headers: &axum::http::HeaderMap) -> Option<std::time::Duration> {
    let ms: u64 = headers.get(WAIT_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(std::time::Duration::from_millis(ms))
}

/// Adds a decision's headers for the client (rate-limit headers, `Retry-After`). The content type
/// is the response's own.
fn add_headers(response: &mut Response, headers: &[(String, String)]) {
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-type") {
            continue;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            response.headers_mut().append(k, v);
        }
    }
}

/// 503 once shutdown has started; 200 when the store answers; when it does not, 500, or with
/// `--ready-when-store-down` 200 saying so (the failure policies answer checks meanwhile).
async fn healthcheck<S: Store>(State(state): State<Arc<HttpState<S>>>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match state.limiter.store().ping().await {
        Ok(()) => (StatusCode::OK, "OK\n").into_response(),
        Err(e) if state.ready_when_store_down => (
            StatusCode::OK,
            format!("OK; counter store unavailable ({e}): the failure policies answer checks\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("counter store unavailable: {e}\n"),
        )
            .into_response(),
    }
}

/// The rules, and the runtime overrides in force. Overrides name tenants (descriptor values),
/// the token and person that set them and why, so anyone who can reach the port sees only how
/// many there are; a request with an admin token sees them in full (as `/admin/overrides` shows).
async fn rlconfig<S: Store>(
    State(state): State<Arc<HttpState<S>>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let rules = state.limiter.rules();
    let overrides = state.limiter.overrides();
    let authorized = state
        .admin_token
        .as_ref()
        .is_some_and(|authorized| authorized(&headers));
    let shown = match overrides.overrides().count() {
        0 => String::new(),
        _ if authorized => overrides.dump.clone(),
        n => format!(
            "# runtime overrides: {n} in force; their targets and authors are shown with an \
             admin token (Authorization: Bearer) or on /admin/overrides\n"
        ),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}{shown}", rules.dump),
    )
        .into_response()
}

async fn metrics<S: Store>(State(state): State<Arc<HttpState<S>>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.limiter.metrics().encode(),
    )
        .into_response()
}
