//! Sluice server: an external rate-limit service for Envoy and other proxies.
//!
//! The path of one check, each step naming the module that owns it:
//!
//! 1. A transport adapter decodes the request: [`grpc`] for Envoy's
//!    `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, [`http`] for `POST /json`.
//!    Only these modules see wire types.
//! 2. [`limiter::RateLimiter::check`] validates the request's shape and bounds.
//! 3. Each descriptor is matched against the live rule set ([`descriptor`] over the immutable tree
//!    built by [`config`], swapped atomically on reload). A rule holds one limit or several
//!    (`rate_limits`), each with its algorithm, window and burst.
//! 4. Every limit of every matched descriptor becomes one [`storage::Hit`] of one
//!    [`storage::Batch`]: a counter key ([`storage::keys`]), a [`algorithm::Policy`] and a delta.
//! 5. A [`storage::Store`] applies the batch atomically, stepping each counter with the pure
//!    [`algorithm`] math (fixed window, sliding window, token bucket, calendar windows) on its own
//!    clock: by default all-or-nothing, so a rejected request is charged nowhere
//!    ([`storage::memory`] in process with the injected [`clock`], [`storage::redis`] with one Lua
//!    script per request that mirrors the math on Redis's clock).
//! 6. The limiter turns the readings into per-descriptor statuses (each from its most
//!    constraining limit), the overall code, rate-limit headers in the configured style, the
//!    RFC 9457 problem document of a rejection, and [`metrics`]; the adapter encodes the answer.
//!
//! [`settings`] reads flags and environment once; [`server`] binds, serves and drains, with
//! [`transport`] serving HTTP/2 for the gRPC listener.

pub mod algorithm;
pub mod clock;
pub mod config;
pub mod descriptor;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod server;
pub mod settings;
pub mod storage;
pub mod transport;
