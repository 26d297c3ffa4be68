//! What wraps the shared backend, in the order a check's batch passes through it (Redis only:
//! the memory store needs none of it):
//!
//! 1. [`local_batch`] (`--local-batch`, off by default): fixed windows decided from a local view of
//!    the shared count, their hits flushed in batches; everything else passes on.
//! 2. [`failover`]: the [`l1`] over-limit cache answers what it knows is over; the [`breaker`]
//!    keeps calls away from a failing store; the call itself is bounded by the time budget; when
//!    the store cannot answer, the domain's failure policy does ([`local_share`] for `local`,
//!    reconciled into the store once it is back).
//! 3. the backend ([`super::backend`]).
//!
//! [`super::stack`] composes them in this order.

pub mod breaker;
pub mod failover;
pub mod l1;
pub mod local_batch;
pub mod local_share;
