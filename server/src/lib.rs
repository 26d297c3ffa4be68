//! Sluice server: an external rate-limit service for Envoy and other proxies.
//!
//! The path of one check, each step naming the module that owns it:
//!
//! 0. A [`listener`] accepts the connection within its bounds (a connection cap that evicts the
//!    idlest, timeouts for what a client leaves half-sent or idle, a per-connection buffer
//!    budget; `docs/security.md`).
//! 1. A transport adapter decodes the request: [`grpc`] for Envoy's
//!    `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit` (framed on HTTP/2 by
//!    [`transport`], one task per connection and no task per call), [`http`] for `POST /json`
//!    (served by [`http::serve`]). Only these modules see wire types. Values a client controls
//!    that cannot be counted (too long, not UTF-8) are answered as refusals, never as errors a
//!    proxy would fail open on.
//! 2. [`limiter::RateLimiter::check`] validates the request's shape and bounds.
//! 3. Each descriptor is matched against the live rule set ([`config::matcher`] over the immutable tree
//!    built by [`config`], swapped atomically on reload). A rule holds one limit or several
//!    (`rate_limits`), each with its algorithm, window and burst, or a pool: a concurrency pool
//!    of leases or a weighted fair-share pool; `overflow: parent` links a rule to its parent's
//!    budget. A `sluice.lease_id` entry is taken out of the descriptor before matching
//!    ([`limiter::lease`]).
//! 4. Every limit of every matched descriptor becomes one [`storage::Hit`] of one
//!    [`storage::Batch`]: a counter key ([`storage::keys`]), a [`algorithm::Policy`], a delta and,
//!    for pools, a [`algorithm::Claim`] (the request's lease id, or the tenant and its weight).
//! 5. A [`storage::Store`] applies the batch atomically, stepping each counter with the pure
//!    [`algorithm`] math (fixed window, sliding window, token bucket, calendar windows, leases,
//!    fair share) on its own clock: by default all-or-nothing, so a rejected request is charged
//!    nowhere ([`storage::Verdict`]; [`storage::backend::memory`] in process with the injected [`clock`],
//!    [`storage::backend::redis`] with a Lua script that mirrors the math on Redis's clock, one call per
//!    request or, under load, per batch of concurrent requests decided one after another:
//!    [`storage::backend::redis::batcher`]), behind [`storage::layer::failover`]; with `--local-batch`,
//!    [`storage::layer::local_batch`] first decides fixed windows from a local view of Redis's count and
//!    flushes their hits to Redis in batches).
//! 6. The limiter turns the readings into per-descriptor statuses (each from its most
//!    constraining limit), the overall code, rate-limit headers in the configured style, the
//!    lease the request now holds, the RFC 9457 problem document of a rejection, and [`metrics`];
//!    the adapter encodes the answer (the lease also as gRPC dynamic metadata).
//!
//! [`settings`] reads flags and environment once; [`server`] binds, serves and drains, with
//! [`transport`] serving HTTP/2 for the gRPC listener (`ShouldRateLimit` itself, the health
//! service through tonic-health). Warnings a client can trigger go through [`log_throttle`].

pub mod adapter;
pub mod admin;
pub mod algorithm;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod listener;
pub mod log_throttle;
pub mod metrics;
pub mod overrides;
pub mod server;
pub mod settings;
pub mod storage;
pub mod trace;
