//! gRPC: Envoy's `envoy.service.ratelimit.v3.RateLimitService` on its own listener.
//!
//! - [`listener`]: accepts connections (within [`crate::listener`]'s bounds) and serves HTTP/2 on
//!   each with `h2`, one task per connection and no task per call; [`unary`] reads a call's one
//!   message and writes its answer, [`bridge`] hands `grpc.health.v1.Health` to tonic-health,
//!   [`keepalive`] pings silent peers, [`coalesce`] batches the answers' writes.
//! - [`service`]: the rate-limit service itself, between the wire's proto types and the
//!   limiter's; [`lenient`] tells a request whose only fault is text that is not UTF-8 (refused)
//!   from a malformed one (`INVALID_ARGUMENT`).
//!
//! Boundary: the only module that sees Envoy's proto types; it calls the limiter through
//! [`crate::adapter`] and never reads settings or starts anything.

mod bridge;
mod coalesce;
mod keepalive;
mod lenient;
pub mod listener;
pub mod service;
pub(crate) mod unary;

pub use listener::{CallBody, Routes, TonicService, serve};
pub use service::{RlsService, to_status};
