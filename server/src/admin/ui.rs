//! The operator console at `/admin/ui`: one static page (HTML, CSS and script compiled into the
//! binary, no external assets) that talks to the admin API. The page itself holds no data and is
//! served without the token; every call it makes carries the token the operator types, in the
//! `Authorization` header only. A strict Content-Security-Policy allows nothing but this page's own
//! files and calls to this server; every value is rendered as text.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const HTML: &str = include_str!("console/index.html");
const CSS: &str = include_str!("console/console.css");
const JS: &str = include_str!("console/console.js");

/// Allows the page's own script and style and calls to this origin; nothing inline, no frames.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, nested under `/admin/ui`.
pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/console.css",
            get(|| async { page(CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/console.js",
            get(|| async { page(JS, "text/javascript; charset=utf-8") }),
        )
}

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}
