//! The shared store behind a time budget, a circuit breaker, the L1 over-limit cache and a
//! failure policy, so every check is answered within the budget whatever Redis does.
//!
//! A check goes, in order:
//! 1. to the [`l1`](super::l1) cache: a request rejected by a counter known to be over the limit
//!    (until its window resets or its wait passes) is answered without a store call;
//! 2. to the [`breaker`](super::breaker): while it is open, the store is not called at all;
//! 3. to the shared store, bounded by the budget (`--store-budget-ms`, 10 ms by default: half of
//!    Envoy's default 20 ms timeout, leaving room for the network and the rest of the check). A
//!    call that fails or takes longer counts as a failure for the breaker;
//! 4. when the store was not called or failed: to the domain's failure policy ([`FailureMode`],
//!    `failure_mode` in the rule file, else `--failure-mode`).
//!
//! | policy | answer |
//! |---|---|
//! | `allow` | OK; statuses show every limit untouched (full remaining) |
//! | `deny` | with `--deny-with over_limit`: OVER_LIMIT for every limit that enforces, retry in 1 s. With `--deny-with unavailable` (the default): gRPC `UNAVAILABLE`, so Envoy's `failure_mode_deny` decides, as it would for the reference |
//! | `local` | decided from this replica's share of each limit ([`super::local_share`]), reconciled into the shared counters once the store is back |
//!
//! A call that timed out may still run in Redis later (a hung server works through its backlog
//! when it resumes): the count then errs high, never low.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod recovery;
mod store;

use super::breaker::{Breaker, BreakerConfig, BreakerState, Permit};
use super::l1::OverLimitCache;
use super::local_share::LocalShare;
use crate::algorithm::{MICROS_PER_SEC, Reading};
use crate::storage::{Admission, Batch, Outcome, Store, StoreError, rejects};
pub use recovery::PROBE_EVERY;

/// What a domain's checks get while the shared store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureMode {
    Allow,
    Deny,
    Local,
}

impl FailureMode {
    pub const ALL: [FailureMode; 3] = [FailureMode::Allow, FailureMode::Deny, FailureMode::Local];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Allow => "allow",
            FailureMode::Deny => "deny",
            FailureMode::Local => "local",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

/// How `deny` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyWith {
    /// gRPC `UNAVAILABLE` (HTTP 500 on `/json`): Envoy's `failure_mode_deny` decides.
    Unavailable,
    /// OVER_LIMIT from Sluice itself, whatever Envoy is configured to do on errors.
    OverLimit,
}

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// The longest a check waits for the shared store.
    pub budget: Duration,
    /// For domains without a `failure_mode`.
    pub default_mode: FailureMode,
    pub deny_with: DenyWith,
    pub breaker: BreakerConfig,
    /// Bound on health pings and on handing local hits over.
    pub slow_timeout: Duration,
}

impl Default for FailoverOptions {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(10),
            default_mode: FailureMode::Deny,
            deny_with: DenyWith::Unavailable,
            breaker: BreakerConfig::default(),
            slow_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DecisionLabels {
    mode: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
}

struct Metrics {
    decisions: Family<DecisionLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    latency: Histogram,
}

/// The shared store with everything that keeps answers fast when it is not.
pub struct Failover<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    shared: S,
    options: FailoverOptions,
    breaker: Breaker,
    l1: Option<OverLimitCache>,
    local: Arc<LocalShare>,
    metrics: Metrics,
    reconcile_now: Arc<tokio::sync::Notify>,
}

impl<S: Store> Failover<S> {
    /// Wraps `shared`; registers the metrics of every part in `registry`. Spawns the task that
    /// hands local hits over, which ends with the store.
    pub fn new(
        shared: S,
        options: FailoverOptions,
        l1: Option<OverLimitCache>,
        local: LocalShare,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics {
            decisions: Family::default(),
            failures: Family::default(),
            // 100 µs .. ~1.6 s.
            latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 15)),
        };
        registry.register(
            "store_call_duration_seconds",
            "Time of each call to the shared counter store, failed and timed-out calls included",
            metrics.latency.clone(),
        );
        registry.register(
            "store_failures",
            "Calls to the shared counter store that failed or exceeded the time budget, by kind",
            metrics.failures.clone(),
        );
        registry.register(
            "failure_mode_decisions",
            "Checks decided by a failure policy because the shared store could not answer, by \
             policy and answer",
            metrics.decisions.clone(),
        );
        let breaker = Breaker::new(options.breaker);
        breaker.register(registry);
        local.register(registry);
        if let Some(l1) = &l1 {
            l1.register(registry);
        }
        let inner = Arc::new(Inner {
            shared,
            options,
            breaker,
            l1,
            local: Arc::new(local),
            metrics,
            reconcile_now: Arc::new(tokio::sync::Notify::new()),
        });
        let weak = Arc::downgrade(&inner);
        inner.breaker.on_change(move |state| {
            if state == BreakerState::Closed
                && let Some(inner) = weak.upgrade()
            {
                inner.reconcile_now.notify_one();
            }
        });
        tokio::spawn(recovery::reconcile_loop(
            Arc::downgrade(&inner),
            Arc::clone(&inner.reconcile_now),
        ));
        tokio::spawn(recovery::probe_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// Calls `listener` with the breaker's new state on every change ([`Breaker::on_change`]).
    pub fn on_breaker_change(&self, listener: impl Fn(BreakerState) + Send + Sync + 'static) {
        self.inner.breaker.on_change(listener);
    }

    pub fn shared(&self) -> &S {
        &self.inner.shared
    }

    /// Hands local hits over now (tests; the background task does it by itself).
    pub async fn reconcile(&self) -> Result<u64, StoreError> {
        self.inner
            .local
            .reconcile(&self.inner.shared, self.inner.options.slow_timeout)
            .await
    }

    /// [`Store::apply_or`], telling whether the shared store itself answered.
    pub async fn decide(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> (Result<Outcome, StoreError>, bool) {
        self.inner.decide(batch, on_failure).await
    }

    /// Local counters not handed over yet.
    pub fn pending_reconciliation(&self) -> usize {
        self.inner.local.pending()
    }
}

impl<S: Store> Inner<S> {
    /// The answer to `batch`, and whether the shared store gave it (not the L1 cache or a
    /// failure policy). Hits already let through ([`Admission::Reconcile`]) are never answered
    /// by a policy: they fail, so their caller keeps them.
    async fn decide(
        &self,
        batch: &Batch,
        mode: Option<FailureMode>,
    ) -> (Result<Outcome, StoreError>, bool) {
        if batch.admission == Admission::DryRun {
            let budget = self.options.budget;
            let result = match tokio::time::timeout(budget, self.shared.apply(batch)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout(budget)),
            };
            return (result, true);
        }
        if let Some(l1) = &self.l1
            && let Some(outcome) = l1.answer(batch, Instant::now())
        {
            return (Ok(outcome), false);
        }
        let now = Instant::now();
        // Only while closed: the probes make the trials (see `recovery`), so no check is decided
        // against the store's counts before an outage's local hits are handed over.
        let permit = self.breaker.permit_call();
        let error = if permit == Permit::Refused {
            StoreError::CircuitOpen
        } else {
            let budget = self.options.budget;
            let result = match tokio::time::timeout(budget, self.shared.apply(batch)).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::Timeout(budget)),
            };
            let done = Instant::now();
            self.metrics
                .latency
                .observe(done.duration_since(now).as_secs_f64());
            self.breaker.record(done, permit, result.is_ok());
            match result {
                Ok(outcome) => {
                    if let Some(l1) = &self.l1 {
                        l1.learn(batch, &outcome, now);
                    }
                    if mode.unwrap_or(self.options.default_mode) == FailureMode::Local {
                        self.local.saw(batch, &outcome);
                    }
                    return (Ok(outcome), true);
                }
                Err(e) => {
                    self.metrics
                        .failures
                        .get_or_create(&FailureLabels { kind: e.kind() })
                        .inc();
                    e
                }
            }
        };
        if batch.admission == Admission::Reconcile {
            return (Err(error), false);
        }
        let mode = mode.unwrap_or(self.options.default_mode);
        (self.fallback(batch, mode, error), false)
    }

    fn fallback(
        &self,
        batch: &Batch,
        mode: FailureMode,
        error: StoreError,
    ) -> Result<Outcome, StoreError> {
        let (outcome, result) = match (mode, self.options.deny_with) {
            (FailureMode::Allow, _) => (Ok(synthetic(batch, false)), "ok"),
            (FailureMode::Deny, DenyWith::Unavailable) => (Err(error), "unavailable"),
            (FailureMode::Deny, DenyWith::OverLimit) => {
                let outcome = synthetic(batch, true);
                let result = if rejects(&batch.hits, &outcome.readings) {
                    "over_limit"
                } else {
                    "ok"
                };
                (Ok(outcome), result)
            }
            (FailureMode::Local, _) => {
                let outcome = self.local.apply(batch);
                let result = if rejects(&batch.hits, &outcome.readings) {
                    "over_limit"
                } else {
                    "ok"
                };
                (Ok(outcome), result)
            }
        };
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                mode: mode.as_str(),
                result,
            })
            .inc();
        outcome
    }
}

/// Readings for an answer the store did not give: nothing used, or every limit used up with a
/// retry in one second.
fn synthetic(batch: &Batch, over: bool) -> Outcome {
    let wait = if over { MICROS_PER_SEC } else { 0 };
    Outcome {
        readings: batch
            .hits
            .iter()
            .map(|h| {
                let capacity = h.policy.capacity();
                let used = if over { capacity } else { 0 };
                Reading {
                    used_before: used,
                    used_after: used,
                    capacity,
                    over,
                    wait,
                    reset: wait,
                    borrowing: false,
                }
            })
            .collect(),
        charged: false,
    }
}
