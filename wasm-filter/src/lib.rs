//! The Sluice proxy-wasm filter: asks Sluice (`envoy.service.ratelimit.v3.RateLimitService`, over
//! gRPC or Sluice's HTTP `/json`) before letting a request through, answers clients far over their
//! limit locally, and puts the back-pressure signals on every response.
//!
//! The crate is a host-agnostic core, built and unit-tested natively, plus thin proxy-wasm glue
//! that only exists in the `.wasm`. The path of one request, each step naming its module:
//!
//! 1. [`config`] parses and validates the plugin configuration (JSON) once per worker VM; a bad
//!    one makes `on_configure` fail with one log line naming the field.
//! 2. [`descriptor`] builds the request's descriptors from its headers, path, query, remote address
//!    ([`address`]), host properties and bearer-token claims ([`jwt`]) through the
//!    [`descriptor::RequestData`] trait. As in Envoy, a descriptor is dropped when one of its
//!    actions finds its value absent; a value present but unusable (not UTF-8, over the bounds)
//!    makes the request [`descriptor::Invalid`], refused with a problem document, so malformed
//!    input never bypasses a limit.
//! 3. [`check::start`] answers locally when it can: the [`negative`] cache (Sluice said OVER_LIMIT
//!    with a wait that has not passed) and the per-descriptor token [`bucket`]s, both kept in
//!    proxy-wasm shared data through the compare-and-swap [`shared::SharedStore`], so every
//!    worker VM of the proxy sees the same state.
//! 4. Otherwise the glue sends the check: [`proto`] encodes a `RateLimitRequest` by hand for gRPC,
//!    [`json`] builds Sluice's proto3 JSON for HTTP.
//! 5. [`check::finish`] decodes the answer ([`proto`] / [`json`], bounded, never trusting the
//!    bytes) into a [`check::Verdict`]: allowed with the headers to add ([`headers`]), rejected
//!    with a local reply (the problem document's status, `Retry-After`, rate-limit headers,
//!    Sluice's headers and body), invalid when Sluice refused the check as malformed (only
//!    client values can make it so; never `failure_mode`), or a failure that `failure_mode`
//!    turns into a pass or a reply.
//! 6. After the response, [`charge`] turns the response size or a response header into a second
//!    `ShouldRateLimit` with per-descriptor `hits_addend`, sent without delaying the response.
//! 7. A request that took a concurrency [`lease`] renews it every half TTL while the stream is
//!    open (on the root context's ticks) and releases it when the stream ends.
//! 8. With a `reports` block, a request let through upstream is timed to its response headers;
//!    its [`report`]s (latency, status, per reported descriptor) wait in the worker's buffer and
//!    the root context posts them to Sluice's `POST /reports` in batches on its ticks, for
//!    adaptive limits. Requests the filter refused are never reported.
//!
//! [`value`] reads and writes the JSON all of this needs, without floating point.
//! [`metrics`] names the counters the glue defines through proxy-wasm metrics.
//!
//! Nothing here may panic: a panic (or a trap) kills the VM for every request on that worker, so
//! `unwrap`, `expect`, `panic!` and indexing that can panic are denied crate-wide, and the glue
//! keeps off the SDK conveniences that panic on unexpected host statuses.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Tests may fail loudly; the non-test build (which clippy also checks) may not.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod address;
pub mod bucket;
pub mod charge;
pub mod check;
pub mod config;
pub mod descriptor;
pub mod headers;
pub mod json;
pub mod jwt;
pub mod lease;
pub mod metrics;
pub mod negative;
pub mod proto;
pub mod report;
pub mod shared;
pub mod value;

#[cfg(target_arch = "wasm32")]
mod glue;
