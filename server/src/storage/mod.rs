//! Counter storage: one call per request, carrying every counter the request touches.
//!
//! The limiter turns a request into a [`Batch`] of [`Hit`]s (one per limit of each limited
//! descriptor, each with its algorithm, window and limit as a [`Policy`]) and a store applies the
//! whole batch atomically, so concurrent requests never overshoot a limit and, by default, a
//! rejected request consumes nothing anywhere. Stores never see descriptors: keys arrive already
//! encoded by [`keys`].
//!
//! What a hit does to its counter is [`crate::algorithm::step_with`], the same pure function in
//! every backend (the Redis script mirrors it). A store's own job is atomicity and the clock: it
//! reads each counter once, steps the hits in batch order (a key repeated in the batch sees the
//! earlier hits applied), decides with [`rejects`], and writes the new states only if the batch is
//! charged ([`Verdict::writes`] says which: an `overflow: parent` pair charges one of its two
//! counters).
//! A rejected batch writes nothing, except the arrivals fair-share pools record
//! ([`crate::algorithm::uncharged`]).
//!
//! The shape of this folder is the stack a batch passes through:
//!
//! - [`backend`]: where counters live: [`backend::memory`] (sharded, the embedded default) and
//!   [`backend::redis`] (one Lua script per request). Both must pass the conformance suite in
//!   `server/tests/store_conformance.rs`.
//! - [`layer`]: what wraps the shared backend, outermost first: [`layer::local_batch`]
//!   (`--local-batch`), then [`layer::failover`] with the [`layer::l1`] over-limit cache, the
//!   [`layer::breaker`], the time budget and the domain's [`FailureMode`] when Redis cannot answer
//!   (`local` decides from this replica's share, [`layer::local_share`], and reconciles before
//!   deciding against Redis again).
//! - [`stack`]: composes them in that order; [`AnyStore`] is the result, one store for the
//!   limiter whichever backend was configured (`any`).
//! - [`keys`]: the counter-key schema every backend stores under.
//!
//! Boundary: never sees descriptors, rules or settings: keys arrive encoded, limits as
//! [`crate::algorithm::Policy`]; backends never import layers.

mod any;
pub mod backend;
pub mod keys;
pub mod layer;
pub mod stack;

use std::future::Future;

use crate::algorithm::lease::Lease;
pub use crate::algorithm::queue::{Op as QueueOp, Outcome as QueueOutcome};
use crate::algorithm::{Claim, Policy, Reading};
pub use any::AnyStore;
pub use layer::failover::FailureMode;

/// How a hit takes part in the admission decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Over the limit rejects the request.
    Enforce,
    /// Counted, never rejects (`shadow_mode`).
    Shadow,
    /// `quota_mode`: rejects only when every quota hit of the request is over.
    Quota,
    /// The parent budget of the hit at position `of` in the batch (`overflow: parent`): when
    /// that hit is over its own limit and this one fits, the hit counts as within its limit and
    /// this one is charged instead of it. Never rejects by itself.
    Overflow { of: usize },
}

/// What to charge when the request is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Sluice's default: a rejected request is charged nowhere.
    AllOrNothing,
    /// envoyproxy/ratelimit's behaviour (`--charge-rejected`): every hit is charged, whatever the
    /// outcome.
    ChargeAll,
    /// Hits that were already let through elsewhere (a replica's local share during a store
    /// outage) and must now be counted: every hit is charged in full, a token bucket going into
    /// debt beyond its burst ([`crate::algorithm::force`]).
    Reconcile,
    /// Takes back a charge made at `at` (µs since the epoch, the time the charging store decided
    /// with): the hits are the charge's refunds, stepped at `at` so that a fixed window refunds
    /// only the window it charged and a sliding window the sub-window it charged. Expiry still
    /// follows the store's clock. Used to keep a request that spans Redis Cluster slots
    /// all-or-nothing (`storage::backend::redis::cluster`).
    Undo { at: crate::algorithm::Micros },
    /// Decides as [`Admission::AllOrNothing`] would and writes nothing, not even a fair-share
    /// pool's arrivals: what a request would get now, for `explain`. Never answered by a failure
    /// policy or a cache: a dry run reads the store or fails.
    DryRun,
}

impl Admission {
    /// Whether the batch is charged whatever its readings say.
    pub fn charges_always(self) -> bool {
        !matches!(self, Admission::AllOrNothing | Admission::DryRun)
    }
}

/// One counter touched by a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The encoded counter key (see [`keys::KeySchema::counter_key`]).
    pub key: Vec<u8>,
    /// How the counter counts: algorithm, window, limit, burst.
    pub policy: Policy,
    /// Positive to consume, 0 to look without consuming, negative to refund
    /// (`is_negative_hits`). A refund never goes below empty and never rejects.
    pub delta: i64,
    pub role: Role,
    /// The lease or tenant the hit is for (concurrency and fair-share pools); `Claim::None` for
    /// the other algorithms.
    pub claim: Claim,
}

/// A request's hits and how to admit them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub hits: Vec<Hit>,
    pub admission: Admission,
}

/// What the store saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Each hit's reading, in batch order.
    pub readings: Vec<Reading>,
    /// Whether the new states were written. Always true under [`Admission::ChargeAll`].
    pub charged: bool,
}

/// The admission rule every backend applies (the Redis Lua script mirrors it): rejected when an
/// enforced hit is over (and not rescued by its overflow), or when the request has quota hits and
/// all of them are over.
pub fn rejects(hits: &[Hit], readings: &[Reading]) -> bool {
    Verdict::of(hits, readings).rejected
}

/// A batch's admission decision, as every backend computes it from the hits' readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The request is refused ([`rejects`]).
    pub rejected: bool,
    /// Per hit, whether it is over its own limit but rescued by an overflow hit that fits. Empty
    /// when the batch has no overflow hits (the common case allocates nothing).
    pub rescued: Vec<bool>,
}

impl Verdict {
    pub fn of(hits: &[Hit], readings: &[Reading]) -> Self {
        let mut rescued = Vec::new();
        for (h, r) in hits.iter().zip(readings) {
            if let Role::Overflow { of } = h.role
                && !r.over
                && readings.get(of).is_some_and(|own| own.over)
            {
                rescued.resize(hits.len(), false);
                rescued[of] = true;
            }
        }
        let rejected = decide(
            hits.iter()
                .zip(readings)
                .enumerate()
                .map(|(i, (h, r))| (h.role, r.over && !rescued.get(i).copied().unwrap_or(false))),
        );
        Self { rejected, rescued }
    }

    pub fn is_rescued(&self, i: usize) -> bool {
        self.rescued.get(i).copied().unwrap_or(false)
    }

    /// Whether the new states are written: always under charge-all, else when admitted.
    pub fn charged(&self, admission: Admission) -> bool {
        match admission {
            Admission::DryRun => false,
            _ => admission.charges_always() || !self.rejected,
        }
    }

    /// Whether a charged batch writes hit `i`'s new state. A rescued hit leaves its own counter
    /// as it was (its overflow pays), and an overflow hit is charged only for the hit it rescues
    /// (under charge-all, for any hit over its own limit). A rejected request never takes a lease,
    /// even under charge-all: no one would release it.
    pub fn writes(
        &self,
        hits: &[Hit],
        readings: &[Reading],
        admission: Admission,
        i: usize,
    ) -> bool {
        let hit = &hits[i];
        if hit.policy.algorithm == crate::algorithm::Algorithm::Concurrency
            && hit.delta > 0
            && self.rejected
        {
            return false;
        }
        match hit.role {
            Role::Overflow { of } => {
                self.is_rescued(of)
                    || (admission.charges_always() && readings.get(of).is_some_and(|r| r.over))
            }
            _ => !self.is_rescued(i),
        }
    }
}

/// [`rejects`] over `(role, over the limit)` pairs, for callers that judge hits under other roles
/// than the store did (global shadow mode).
pub fn decide(hits: impl IntoIterator<Item = (Role, bool)>) -> bool {
    let mut any_quota = false;
    let mut all_quota_over = true;
    for (role, over) in hits {
        match role {
            Role::Enforce if over => return true,
            Role::Enforce | Role::Shadow | Role::Overflow { .. } => {}
            Role::Quota => {
                any_quota = true;
                all_quota_over &= over;
            }
        }
    }
    any_quota && all_quota_over
}

/// Store failures. Every variant is reported to Envoy as `UNAVAILABLE`, so `failure_mode_deny`
/// decides; `is_transient` tells logs and metrics whether retrying could help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("store timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("store replied with an error: {0}")]
    Server(String),
    #[error("store reply did not have the expected shape: {0}")]
    Protocol(String),
    #[error("circuit breaker open: the store failed repeatedly and is not being called")]
    CircuitOpen,
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable(_) | StoreError::Timeout(_) | StoreError::CircuitOpen
        )
    }

    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unreachable(_) => "unreachable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Server(_) => "server",
            StoreError::Protocol(_) => "protocol",
            StoreError::CircuitOpen => "circuit_open",
        }
    }
}

/// A counter backend.
pub trait Store: Send + Sync + 'static {
    /// Apply `batch` atomically: no other batch observes or changes these counters in between.
    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<Outcome, StoreError>> + Send;

    /// [`apply`](Self::apply) for a domain whose failure policy is `on_failure` (`None`: the
    /// process default). Only a store that can fail over to a policy uses it
    /// ([`layer::failover::Failover`]); the others apply the batch.
    fn apply_or(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send {
        let _ = on_failure;
        self.apply(batch)
    }

    /// Whether the store answers (for `/healthcheck`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live leases of the concurrency pool at `key`, soonest expiry first (the admin and
    /// lease APIs list a pool's holders with it).
    fn holders(&self, key: &[u8]) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send;

    /// Applies `op` atomically to the queue of the concurrency pool at `key` and to the pool
    /// itself ([`crate::algorithm::queue::apply`]), on the store's clock.
    fn queue(
        &self,
        key: &[u8],
        policy: &Policy,
        op: &QueueOp,
    ) -> impl Future<Output = Result<QueueOutcome, StoreError>> + Send {
        let _ = (key, policy, op);
        async { Err(StoreError::Server("this store keeps no queues".into())) }
    }

    /// When the trial key `key` was first asked about, and the store's now (`limiter::trial`).
    /// A new key is set to now and kept for `keep` when `create` allows, else reported as never
    /// seen (`first` 0).
    fn first_seen(
        &self,
        key: &[u8],
        keep: std::time::Duration,
        create: bool,
    ) -> impl Future<Output = Result<FirstSeen, StoreError>> + Send {
        let _ = (key, keep, create);
        async { Err(StoreError::Server("this store keeps no trials".into())) }
    }

    /// Pool keys whose queues changed elsewhere (another replica granted or dropped tickets), for
    /// the waiters here to look again. `None` when every change happens in this process.
    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        None
    }
}

/// When a trial key was first seen and the store's now, in µs since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstSeen {
    /// 0: never seen, and not recorded (it was not allowed to be).
    pub first: crate::algorithm::Micros,
    pub now: crate::algorithm::Micros,
    /// This call recorded it.
    pub created: bool,
}
