//! Sluice server: an external rate-limit service for Envoy and other proxies.
//!
//! The path of one check, each step naming the module that owns it:
//!
//! 1. A transport adapter decodes the request: [`grpc`] for Envoy's
//!    `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, [`http`] for `POST /json`.
//!    Only these modules see wire types.
//! 2. [`limiter::RateLimiter::check`] validates the request's shape and bounds.
//! 3. Each descriptor is matched against the live rule set ([`descriptor`] over the immutable tree
//!    built by [`config`], swapped atomically on reload).
//! 4. The matched limits become one [`storage::Batch`]: a counter key per limit
//!    ([`storage::keys`]), its fixed window from the injected [`clock`], its limit and delta.
//! 5. A [`storage::Store`] applies the batch atomically: by default all-or-nothing, so a rejected
//!    request is charged nowhere ([`storage::memory`] in process, [`storage::redis`] with one Lua
//!    script per request).
//! 6. The limiter turns the counters into per-descriptor statuses, the overall code, rate-limit
//!    headers and [`metrics`]; the adapter encodes the answer.
//!
//! [`settings`] reads flags and environment once; [`server`] binds, serves and drains.

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
