//! The admin API, under `/admin/` on the HTTP listener, off unless `--admin-token-file` names a
//! file of bearer tokens.
//!
//! Every request must carry `Authorization: Bearer <token>`; the token is compared with each
//! configured one through their BLAKE3 hashes (fixed length, constant-time equality), so neither
//! its length nor its first differing byte shows in the timing. A request without a valid token is
//! answered 401 and logged with its method, path and peer, and changes nothing.
//!
//! [`api`] has the endpoints (counters, reset, top consumers, lease holders, overrides, audit);
//! [`cli`] is `sluice admin`, a client of the same endpoints.
//!
//! Boundary: reaches counters, leases and top consumers only through
//! [`crate::limiter::RateLimiter`], and overrides through [`crate::overrides`]; it never touches
//! the gRPC listener or start-up.

pub mod api;
pub mod cli;
mod explain;
mod trials;
pub mod ui;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};

use crate::limiter::RateLimiter;
use crate::log_throttle::LogThrottle;
use crate::overrides::OverrideStore;
use crate::storage::Store;

/// Header a caller may set to name the person behind the token in the audit log.
pub const ACTOR_HEADER: &str = "x-sluice-actor";

/// The configured admin tokens, by name.
pub struct AdminTokens {
    tokens: Vec<(String, blake3::Hash)>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("AdminTokens")
            .field("names", &names)
            .finish()
    }
}

/// The shortest token accepted: guessing must stay out of reach.
const MIN_TOKEN_BYTES: usize = 16;

impl AdminTokens {
    /// One token per line, as `name:token` or a bare token (named `admin`); blank lines and
    /// `#` comments are skipped. Tokens need at least 16 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((name, token)) if !name.is_empty() && !name.contains(' ') => {
                    (name.to_owned(), token.trim())
                }
                _ => ("admin".to_owned(), line),
            };
            if token.len() < MIN_TOKEN_BYTES {
                return Err(format!(
                    "line {}: the token of '{name}' has {} bytes; at least {MIN_TOKEN_BYTES} are needed",
                    n + 1,
                    token.len()
                ));
            }
            tokens.push((name, blake3::hash(token.as_bytes())));
        }
        if tokens.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(Self { tokens })
    }

    /// Reads the tokens in `path`, warning when the file is readable by others than its owner:
    /// anyone who can read it can change every replica's limits.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = %format!("{mode:o}"),
                    "the admin token file is readable by others than its owner: make it 0600 \
                     (0400 in a Kubernetes Secret volume's defaultMode)"
                );
            }
        }
        Self::parse(&text)
    }

    /// The name of the token `presented` matches. Every configured token is compared, whatever
    /// matched, through fixed-length hashes whose equality is constant-time.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let hash = blake3::hash(presented.as_bytes());
        let mut found = None;
        for (name, expected) in &self.tokens {
            if *expected == hash {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// What the admin handlers share.
pub struct AdminState<S> {
    pub limiter: Arc<RateLimiter<S>>,
    pub tokens: AdminTokens,
    pub overrides: Arc<OverrideStore>,
    /// Refused requests are logged at most once per interval: anyone who can reach the port can
    /// send them.
    pub refused_log: LogThrottle,
}

impl<S: Store> AdminState<S> {
    pub fn new(
        limiter: Arc<RateLimiter<S>>,
        tokens: AdminTokens,
        overrides: Arc<OverrideStore>,
    ) -> Self {
        Self {
            limiter,
            tokens,
            overrides,
            refused_log: LogThrottle::new(std::time::Duration::from_secs(10)),
        }
    }

    /// The name of the token `headers` carry, when it is a configured one.
    pub fn authorized(&self, headers: &axum::http::HeaderMap) -> Option<&str> {
        self.tokens.check(bearer_token(headers)?)
    }
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive (RFC
/// 9110 section 11.1).
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who made an authenticated request: the token's name, plus the actor header when given.
#[derive(Debug, Clone)]
pub struct Who(pub String);

/// The admin routes, to be nested under `/admin` on the HTTP listener.
pub fn router<S: Store>(state: Arc<AdminState<S>>) -> Router {
    Router::new()
        .route("/counters", post(api::inspect::<S>))
        .route("/counters/reset", post(api::reset::<S>))
        .route("/top", get(api::top::<S>))
        .route("/leases", post(api::leases::<S>))
        .route(
            "/overrides",
            get(api::list_overrides::<S>).put(api::set_override::<S>),
        )
        .route("/overrides/{id}", delete(api::delete_override::<S>))
        .route("/audit", get(api::audit::<S>))
        .route("/explain", post(explain::explain::<S>))
        .route("/trials", post(trials::trials::<S>))
        .fallback(api::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authenticate::<S>,
        ))
        .with_state(state)
}

async fn authenticate<S: Store>(
    State(state): State<Arc<AdminState<S>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = bearer_token(request.headers());
    let name = presented.and_then(|t| state.tokens.check(t));
    let Some(name) = name else {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".into());
        let reason = if presented.is_some() {
            "wrong token"
        } else {
            "no bearer token"
        };
        state
            .limiter
            .metrics()
            .admin_refused
            .get_or_create(&crate::metrics::ReasonLabels { reason })
            .inc();
        // Nested under `/admin`, which the router strips from the path.
        crate::warn_throttled!(
            state.refused_log,
            method = %request.method(),
            path = %format!("/admin{}", request.uri().path()),
            peer = %peer,
            reason,
            "admin request refused"
        );
        let mut response = (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": format!("admin API: {reason}; send Authorization: Bearer <token>")
            })),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice-admin\""),
        );
        return response;
    };
    let actor = request
        .headers()
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| !a.is_empty());
    let who = match actor {
        Some(actor) => format!("{name} ({actor})"),
        None => name.to_owned(),
    };
    request.extensions_mut().insert(Who(who));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_by_name_and_length() {
        let t = AdminTokens::parse(
            "# ops team\nalice:0123456789abcdef-alice\n\n  sixteen-bytes-ok  \n",
        )
        .unwrap();
        assert_eq!(t.check("0123456789abcdef-alice"), Some("alice"));
        assert_eq!(t.check("sixteen-bytes-ok"), Some("admin"));
        assert_eq!(t.check("0123456789abcdef-alic"), None);
        assert_eq!(t.check(""), None);
        let err = AdminTokens::parse("bob:short\n").unwrap_err();
        assert!(
            err.contains("line 1") && err.contains("at least 16"),
            "{err}"
        );
        assert!(AdminTokens::parse("# nothing\n").is_err());
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let with = |v: &str| {
            let mut h = axum::http::HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            bearer_token(&h).map(str::to_owned)
        };
        for v in ["Bearer t0k", "bearer t0k", "BEARER  t0k ", "bEaReR\tt0k"] {
            assert_eq!(with(v).as_deref(), Some("t0k"), "{v:?}");
        }
        assert_eq!(with("Basic dXNlcg=="), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(bearer_token(&axum::http::HeaderMap::new()), None);
    }
}
