//! Sluice server: an external rate-limit service for Envoy and other proxies.
//!
//! # The path of one check
//!
//! Each step names the module that owns it; a step only calls the steps after it.
//!
//! 1. **Listener.** [`grpc::listener`] (Envoy's `RateLimitService` over HTTP/2, one task per
//!    connection and none per call) or [`http::listener`] (HTTP/1.1 and h2c) accepts the
//!    connection within the bounds both share in [`listener`]: a connection cap that closes the
//!    idlest, timeouts for whatever a client leaves half-sent or idle, a per-connection buffer
//!    budget (`docs/security.md`), TLS with certificate rotation ([`listener::tls`]), and for
//!    gRPC a Unix-socket option and connection ageing.
//! 2. **Adapter.** The wire's request becomes a [`limiter::CheckRequest`]: [`grpc::service`] for
//!    `ShouldRateLimit`, [`http`] for `POST /json`, `/auth/{domain}` (descriptors from headers)
//!    and the lease API. Only these modules see wire types. [`adapter`] wraps every check the same
//!    way (its [`trace`] span, its count in [`metrics`], the message of a store failure). Values a
//!    client sends that cannot be counted (too long, not UTF-8) are refused as over the limit,
//!    never answered as an error a fail-open proxy would let through.
//! 3. **Limiter.** [`limiter::RateLimiter::check`] validates the request's shape and bounds
//!    ([`limiter::request`]), then matches each descriptor against the live rule set
//!    ([`config::matcher`] over the immutable tree [`config`] built from YAML, swapped whole on
//!    reload) with the runtime [`overrides`] in force applied on top of the rules they target
//!    ("why isn't my YAML limit used?": `GET /admin/overrides`). A `sluice.lease_id` entry is taken
//!    out first ([`limiter::lease`]). Every limit of every matched descriptor becomes one
//!    [`storage::Hit`] of one [`storage::Batch`] (`limiter::plan`): a counter key
//!    ([`storage::keys`]), an [`algorithm::Policy`], a delta and, for pools, an
//!    [`algorithm::Claim`] (the lease id, or the tenant and its weight). A request that acquires
//!    in a pool with a `queue` first takes a ticket and waits its turn ([`limiter::queue`]: the
//!    weighted fair order is [`algorithm::queue`], applied by the store with the pool). A rule
//!    with a `trial` decides a value it sees for the first time in shadow mode for a while
//!    ([`limiter::trial`]).
//! 4. **Storage layers.** With Redis, the batch passes the layers [`storage::stack`] composes, in
//!    this order: [`storage::layer::local_batch`] (`--local-batch`: fixed windows decided from a
//!    local view, flushed in batches), then [`storage::layer::failover`] (the
//!    [`storage::layer::l1`] over-limit cache, the [`storage::layer::breaker`], the time budget,
//!    and the domain's failure policy when Redis cannot answer, `local` deciding from
//!    [`storage::layer::local_share`]). The memory store needs none of them.
//! 5. **Backend.** A [`storage::Store`] applies the batch atomically: by default all-or-nothing,
//!    so a rejected request is charged nowhere ([`storage::Verdict`]).
//!    [`storage::backend::memory`] works in process on the injected [`clock`];
//!    [`storage::backend::redis`] runs one Lua script per request, or per batch of concurrent
//!    requests ([`storage::backend::redis::batcher`]), on Redis's clock.
//! 6. **Algorithm.** Each counter steps through the pure [`algorithm`] math (fixed and sliding
//!    windows, token bucket, calendar windows, leases, fair share); the Redis script mirrors it
//!    operation for operation.
//! 7. **Answer.** The limiter turns the readings into per-descriptor statuses, each from its most
//!    constraining limit, and the overall code ([`limiter::decision`]), rate-limit headers
//!    ([`limiter::headers`]), the lease the request holds, the RFC 9457 problem document of a
//!    rejection ([`limiter::problem`]) and per-rule counts ([`metrics`]); the adapter encodes it.
//!    When the domain (or `--notifications`) takes quota notifications, a limit that crossed the
//!    near-limit ratio or refused the request raises an event through [`notify::Notifier`]: a
//!    de-duplication check and, for a new event, a `try_send` to a bounded queue; delivery
//!    happens elsewhere.
//!
//! # Around the path
//!
//! - [`server`] is start-up and shutdown: it reads [`settings`] (flags and environment, once),
//!   loads the rules and watches them (or takes them from a control plane over [`xds`]), opens
//!   the counter store and the override store, starts the tasks that keep overrides and health
//!   current and the notifier ([`notify`]), binds both listeners, and drains on SIGTERM.
//! - [`admin`] is the admin API under `/admin/` (counters, resets, top consumers from
//!   `limiter::top`, lease holders, overrides and their audit log, and explain: a check run dry,
//!   [`limiter::explain`], with the matcher's walk from [`config::walk`]), `sluice admin`, its
//!   CLI, and the operator console at `/admin/ui` ([`admin::ui`]).
//! - [`adaptive`] moves the limits that declare `adaptive` between their bounds: clients report
//!   latencies and statuses (`POST /reports`, [`http`]), each replica aggregates them per rule
//!   per interval in a fixed-size histogram, the fleet adds them up in Redis or etcd, one replica
//!   per interval applies the control law ([`adaptive::law`]) and writes the limit as an override
//!   by `adaptive` through [`overrides`], which every replica applies. The check path never
//!   touches it. [`adaptive::standing`] does the same for fair-share weights: the tenants a pool
//!   refused past their guarantee ([`limiter::standing`]) window after window are penalised, and
//!   restored once they behave.
//! - [`notify`] delivers quota notifications (near limit, quota exhausted, pool full, the Redis
//!   breaker opening and closing, overrides about to lapse, adaptive changes) off the request path: a dispatcher
//!   task routes each event to its domain's and the global sinks, a task per sink POSTs signed
//!   webhooks with retries or appends to a Redis stream (`docs/notifications.md`).
//! - [`log_throttle`] keeps warnings a client can trigger from becoming a flood of log lines.
//!
//! # Layering
//!
//! Imports point down this list only, and no import cycle crosses a folder;
//! `scripts/check-layers.py` checks both on every test run:
//!
//! | module | owns | may not touch |
//! |---|---|---|
//! | [`server`] | start-up wiring, drain, health | (top) |
//! | [`settings`] | flags and environment → typed settings | start-up itself, listeners, adapters |
//! | [`admin`] | the admin API and CLI | the gRPC listener |
//! | [`grpc`], [`http`] | wire types, listeners, adapters | settings, start-up |
//! | [`adapter`] | span, count and store-failure message of a check | wire types |
//! | [`trace`] | OpenTelemetry spans | everything but the limiter's decision types |
//! | [`listener`] | connection bounds shared by both listeners | what a connection carries |
//! | [`adaptive`] | reports, their fleet-wide aggregate, the controller, standing | the limiter's check (it reads only the limiter's record of refused tenants), wire types, settings |
//! | [`limiter`] | the transport-free check | wire types, settings, tracing |
//! | [`notify`] | quota notifications: events, de-duplication, sinks | the limiter, settings, listeners |
//! | [`overrides`] | runtime overrides and their stores | the limiter, settings |
//! | [`xds`] | rules from a control plane, loaded as files are | the limiter, listeners |
//! | [`config`] | rule files, the rule tree, matching | the limiter, overrides |
//! | [`storage`] | counters: layers and backends | descriptors, rules, settings |
//! | [`algorithm`], [`metrics`], [`file_watch`], [`clock`] | the math, Prometheus families, watched files, time | everything above |
//!
//! The `fuzz` entry points (the `fuzz` feature, which `fuzz/` turns on, and tests) drive the
//! adapters on arbitrary bytes.

pub mod adapter;
pub mod adaptive;
pub mod admin;
pub mod algorithm;
pub mod clock;
pub mod config;
pub mod file_watch;
// Entry points for the fuzz targets in `fuzz/`: not part of the API.
#[cfg(any(test, feature = "fuzz"))]
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod listener;
pub mod log_throttle;
pub mod metrics;
pub mod notify;
pub mod overrides;
pub mod server;
pub mod settings;
pub mod storage;
pub mod trace;
pub mod xds;
