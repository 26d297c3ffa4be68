//! `--local-batch`: fixed windows decided from a local view of the shared count, with the hits
//! flushed to the shared store in batches, so a busy counter costs a few store calls per window
//! instead of one per check.
//!
//! **The view.** For each fixed-window counter this replica touches, it keeps the window (by its
//! own clock), the count the shared store last reported for it, and its own hits the store has
//! not acknowledged yet (`pending`, waiting for the next flush, and `in_flight`, in a flush that has
//! not answered). A request is decided locally, with no store call, when every hit is a fixed
//! window with a view of the current window, costs nothing negative, and the request is
//! all-or-nothing: each hit is stepped from `shared + pending + in_flight` with the same
//! [`algorithm`] math and [`Verdict`] as the stores, so a request charges all its local counters
//! or none. A rejection from the view (the count already over) costs no store call either, until
//! the window ends: the view is this layer's L1.
//!
//! **The allowance.** A replica admits locally only while its unacknowledged hits on a counter
//! stay within `q = max(1, floor(limit × share))`, the share of `--replicas N` (1/N) or
//! `--local-share`. A request that would go past it, the first request of a window on this replica
//! (no view yet), and every other request (sliding windows, token buckets, concurrency and
//! fair-share pools, refunds, `--charge-rejected`) go to the shared store as usual, through the
//! budget, breaker, L1 cache and failure policy; the counts they read refresh the view.
//!
//! **The flush.** Every interval, the pending hits of all counters go to the shared store in one
//! call per [`CHUNK`] counters with [`Admission::Reconcile`] (counted in full, past the limit if
//! need be), and the counts the store answers become the views' shared counts. A flush that fails
//! (store down, breaker open, budget passed) puts its hits back and the next interval retries
//! them; a flush is never answered by a failure policy. A flush that timed out may still have run
//! in Redis: its retry then counts those hits twice, so the count errs high, never low. Hits whose
//! window ended before they reached the store are dropped (counted in
//! `local_batch_expired_hits`): the window they belong to is over and the store would not count
//! them in it.
//!
//! **The bound.** With N replicas, in any fixed window the hits admitted for one counter are at
//! most `limit + N × q`. Take the replica k whose view, at its last local admission of the window,
//! came from the latest store answer C (by the store's order). Every other replica's hits are
//! either in C (acknowledged before its own last admission, so by an answer no later) or
//! unacknowledged at its last admission, at most q; k's own are in C or unacknowledged with
//! `C + unacknowledged ≤ limit`, or, when k's last admission was the store's own decision, in C
//! (≤ limit) plus at most q unacknowledged. So admitted ≤ limit + N × q: with `--replicas N` at
//! most twice the limit, with the default share of 1, `(N + 1) × limit`. It assumes the replicas'
//! clocks agree with the store's; a skew moves up to its length of hits across a window edge.
//! During a store outage a replica admits at most q more per counter and window locally, then the
//! failure policy decides.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::failover::{Failover, FailureMode};
use super::local_share::Share;
use crate::algorithm::lease::Lease;
use crate::algorithm::{self, Algorithm, MICROS_PER_SEC, Micros, Policy, Reading, State};
use crate::clock::Clock;
use crate::storage::backend::memory::MemoryStore;
use crate::storage::{Admission, Batch, Hit, Outcome, Store, StoreError, Verdict};

mod flush;

pub use flush::CHUNK;

/// A shared store that tells whether an answer came from the store itself, rather than from a
/// cache or a failure policy (only the store's own counts may refresh a view).
pub trait Shared: Store {
    fn decide(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> impl Future<Output = (Result<Outcome, StoreError>, bool)> + Send;
}

impl<S: Store> Shared for Failover<S> {
    fn decide(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> impl Future<Output = (Result<Outcome, StoreError>, bool)> + Send {
        Failover::decide(self, batch, on_failure)
    }
}

impl Shared for Arc<MemoryStore> {
    async fn decide(
        &self,
        batch: &Batch,
        _: Option<FailureMode>,
    ) -> (Result<Outcome, StoreError>, bool) {
        (Ok(self.apply_now(batch)), true)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// How often pending hits are flushed.
    pub interval: Duration,
    /// This replica's share of each limit: its allowance between acknowledgements.
    pub share: Share,
    /// Most counters with a view; past it, new counters are decided by the store.
    pub max_counters: usize,
}

/// What this replica knows of one fixed-window counter.
#[derive(Debug, Clone, Copy)]
struct View {
    policy: Policy,
    /// The window's start, in seconds.
    start: u64,
    shared: u64,
    pending: u64,
    in_flight: u64,
}

impl View {
    fn count(&self) -> u64 {
        self.shared + self.pending + self.in_flight
    }
}

#[derive(Default)]
struct Metrics {
    flushes: Counter,
    flushed_hits: Counter,
    flush_failures: Counter,
    admits: Counter,
    rejects: Counter,
    expired_hits: Counter,
}

/// The shared store with fixed windows counted locally between flushes.
pub struct Batched<S> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    shared: S,
    clock: Arc<dyn Clock>,
    options: BatchOptions,
    views: Mutex<HashMap<Vec<u8>, View>>,
    metrics: Metrics,
}

fn micros(clock: &dyn Clock) -> Micros {
    clock.now().as_micros() as Micros
}

fn window_start(policy: &Policy, at: Micros) -> u64 {
    policy.period.window_at(at / MICROS_PER_SEC).0
}

/// The start of the window a store answer sent at `sent` counted in: the store's window ends
/// `reset` after it ran, which is no earlier than `sent`.
fn answered_window(policy: &Policy, sent: Micros, reading: &Reading) -> u64 {
    window_start(policy, (sent + reading.reset).saturating_sub(1))
}

impl<S: Shared> Batched<S> {
    /// Wraps `shared`, registers the metrics, and spawns the flush task (it ends with the store).
    pub fn new(
        shared: S,
        options: BatchOptions,
        clock: Arc<dyn Clock>,
        registry: &mut Registry,
    ) -> Self {
        let inner = Arc::new(Inner {
            shared,
            clock,
            options,
            views: Mutex::new(HashMap::new()),
            metrics: Metrics::default(),
        });
        let m = &inner.metrics;
        for (name, help, counter) in [
            (
                "local_batch_flushes",
                "Flush calls to the shared store that succeeded",
                &m.flushes,
            ),
            (
                "local_batch_flushed_hits",
                "Locally admitted hits flushed to the shared store",
                &m.flushed_hits,
            ),
            (
                "local_batch_flush_failures",
                "Flush calls that failed; their hits are retried",
                &m.flush_failures,
            ),
            (
                "local_batch_admits",
                "Checks admitted from the local view without a store call",
                &m.admits,
            ),
            (
                "local_batch_rejects",
                "Checks rejected from the local view without a store call",
                &m.rejects,
            ),
            (
                "local_batch_expired_hits",
                "Locally admitted hits whose window ended before a flush took them",
                &m.expired_hits,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        tokio::spawn(flush::flush_loop(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Flushes pending hits now (tests; the background task does it every interval). Returns the
    /// hits flushed, or the first failure (its hits and the rest stay pending).
    pub async fn flush(&self) -> Result<u64, StoreError> {
        self.inner.flush().await
    }

    /// Hits admitted locally and not acknowledged by the shared store.
    pub fn unacknowledged(&self) -> u64 {
        let views = self.inner.views.lock();
        views.values().map(|v| v.pending + v.in_flight).sum()
    }

    pub fn shared(&self) -> &S {
        &self.inner.shared
    }
}

impl<S: Shared> Inner<S> {
    async fn apply_or(
        &self,
        batch: &Batch,
        mode: Option<FailureMode>,
    ) -> Result<Outcome, StoreError> {
        if let Some(outcome) = self.local(batch) {
            return Ok(outcome);
        }
        let sent = micros(&*self.clock);
        let (result, from_store) = self.shared.decide(batch, mode).await;
        if let (Ok(outcome), true) = (&result, from_store) {
            self.learn(batch, outcome, sent);
        }
        result
    }

    /// The answer from the views, when they can give it.
    fn local(&self, batch: &Batch) -> Option<Outcome> {
        let hits = &batch.hits;
        let batchable = |h: &Hit| h.policy.algorithm == Algorithm::FixedWindow && h.delta >= 0;
        if batch.admission != Admission::AllOrNothing
            || hits.is_empty()
            || !hits.iter().all(batchable)
        {
            return None;
        }
        let now = micros(&*self.clock);
        let mut views = self.views.lock();
        let mut steps: Vec<algorithm::Step> = Vec::with_capacity(hits.len());
        for (i, hit) in hits.iter().enumerate() {
            // A key repeated in the batch sees the earlier hit applied, as in the stores.
            let state = match hits[..i].iter().rposition(|h| h.key == hit.key) {
                Some(j) => steps[j].next.clone(),
                None => {
                    let view = views.get(&hit.key)?;
                    let start = window_start(&hit.policy, now);
                    if view.start != start {
                        return None;
                    }
                    State::Window {
                        start,
                        count: view.count(),
                    }
                }
            };
            steps.push(algorithm::step(&hit.policy, &state, now, hit.delta));
        }
        let readings: Vec<Reading> = steps.iter().map(|s| s.reading).collect();
        let verdict = Verdict::of(hits, &readings);
        let charged = verdict.charged(batch.admission);
        if charged {
            let mut adds: Vec<(&Hit, u64)> = Vec::new();
            for (i, hit) in hits.iter().enumerate() {
                if hit.delta == 0 || !verdict.writes(hits, &readings, batch.admission, i) {
                    continue;
                }
                match adds.iter_mut().find(|(h, _)| h.key == hit.key) {
                    Some((_, n)) => *n += hit.delta as u64,
                    None => adds.push((hit, hit.delta as u64)),
                }
            }
            // Past the allowance, the store decides (see the module doc for why).
            let within = adds.iter().all(|(h, n)| {
                let q = self.options.share.policy(&h.policy).limit;
                views
                    .get(&h.key)
                    .is_some_and(|v| v.pending + v.in_flight + n <= q)
            });
            if !within {
                return None;
            }
            for (h, n) in adds {
                if let Some(v) = views.get_mut(&h.key) {
                    v.pending += n;
                    v.policy = h.policy;
                }
            }
            self.metrics.admits.inc();
        } else {
            self.metrics.rejects.inc();
        }
        Some(Outcome { readings, charged })
    }

    /// Refreshes the views of the fixed windows in `batch` from the store's answer (sent at `sent`).
    fn learn(&self, batch: &Batch, outcome: &Outcome, sent: Micros) {
        let now = micros(&*self.clock);
        let verdict = Verdict::of(&batch.hits, &outcome.readings);
        let mut views = self.views.lock();
        for (i, (hit, r)) in batch.hits.iter().zip(&outcome.readings).enumerate() {
            if hit.policy.algorithm != Algorithm::FixedWindow {
                continue;
            }
            let start = window_start(&hit.policy, now);
            if answered_window(&hit.policy, sent, r) != start {
                continue;
            }
            let written = outcome.charged
                && verdict.writes(&batch.hits, &outcome.readings, batch.admission, i);
            let count = if written { r.used_after } else { r.used_before };
            let fresh = View {
                policy: hit.policy,
                start,
                shared: count,
                pending: 0,
                in_flight: 0,
            };
            let room = views.len() < self.options.max_counters;
            match views.get_mut(&hit.key) {
                // Counts only grow within a window, but answers may arrive out of order; a refund
                // is the one way down.
                Some(v) if v.start == start && hit.delta < 0 => v.shared = count,
                Some(v) if v.start == start => v.shared = v.shared.max(count),
                Some(v) => {
                    self.metrics.expired_hits.inc_by(v.pending);
                    *v = fresh;
                }
                None if room => {
                    views.insert(hit.key.clone(), fresh);
                }
                None => {}
            }
        }
    }
}

impl<S: Shared> Store for Batched<S> {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        self.inner.apply_or(batch, None).await
    }

    async fn apply_or(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> Result<Outcome, StoreError> {
        self.inner.apply_or(batch, on_failure).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.shared.ping().await
    }

    async fn holders(&self, key: &[u8]) -> Result<Vec<Lease>, StoreError> {
        self.inner.shared.holders(key).await
    }

    async fn queue(
        &self,
        key: &[u8],
        policy: &crate::algorithm::Policy,
        op: &crate::storage::QueueOp,
    ) -> Result<crate::storage::QueueOutcome, StoreError> {
        self.inner.shared.queue(key, policy, op).await
    }

    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        self.inner.shared.queue_changes()
    }

    async fn first_seen(
        &self,
        key: &[u8],
        keep: std::time::Duration,
        create: bool,
    ) -> Result<crate::storage::FirstSeen, StoreError> {
        self.inner.shared.first_seen(key, keep, create).await
    }
}

#[cfg(test)]
mod tests;
