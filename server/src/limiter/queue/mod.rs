//! Waiting for a turn in a pool's queue ([`crate::algorithm::queue`]): a request whose
//! descriptor acquires a lease in a concurrency pool with a `queue` takes a ticket, and is
//! answered when the ticket is granted, or refused just before its wait runs out.
//!
//! 1. **Enqueue.** The ticket's id is the lease id the request would take; its wait is the
//!    smaller of the rule's `max_wait_ms` and the caller's own deadline, less [`ANSWER_MARGIN`]
//!    to answer within it. A ticket granted at once (the queue was empty and a slot free) goes
//!    straight to step 3; a full queue (or a tenant of weight 0) is refused at once, as a full
//!    pool is.
//! 2. **Wait.** Only a request that nothing else refuses waits: a dry run of its other limits
//!    comes first, and a rate or quota that refuses it answers at once. Then the request sleeps
//!    until its pool's queue may have moved: a grant made here ([`Waiting::wake`]) or by another
//!    replica (the store's change feed), the soonest lease or ticket expiry, or
//!    [`POLL_EVERY`] (in case a change message was lost); then it polls its ticket.
//! 3. **Admit.** The request's batch runs as usual with the granted lease, which it renews, so
//!    its other limits are charged all-or-nothing with it. If another limit refuses it now, the
//!    lease is given back at once.
//! 4. **Give up.** Out of time, the ticket is withdrawn (releasing the lease if it was granted in
//!    between) while the request is decided as it would be without a queue, under a new lease id:
//!    over the limit, with the pool's `Retry-After`. A caller that goes away (a cancelled gRPC call, a closed
//!    connection) drops the wait, and [`Withdraw`] withdraws the ticket in the background: no
//!    lease is ever granted to a caller that is gone.
//!
//! A release through a batch on a queued pool dispatches the queue right after
//! ([`RateLimiter::dispatch_released`]), so a freed slot goes to the next ticket, not to whoever
//! asks first. A request without a caller to wait for it ([`RateLimiter::check`]) still queues,
//! with no wait: it is granted only if nobody is ahead of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::answer::Planned;
use super::{CheckError, CheckRequest, Decision, RateLimiter, explain};
use crate::algorithm::lease::LeaseId;
use crate::algorithm::queue::{Op, Status, Waiter};
use crate::algorithm::{Algorithm, Claim, Policy};
use crate::config::QueueSpec;
use crate::metrics::{OutcomeLabels, RuleLabels, Shared, WeightLabels};
use crate::storage::{Admission, Store};

mod waking;
use waking::Registration;
pub(super) use waking::Waiting;

/// Kept back from a wait to refuse the request in time: the withdrawal and the check that
/// refuses it, sent together (one store round trip), with room for a busy scheduler.
pub const ANSWER_MARGIN: Duration = Duration::from_millis(20);
/// The longest a waiter sleeps without looking at its ticket.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The hit of `planned` that acquires a lease in a pool with a queue, if one does (the first).
pub(super) fn queued_acquire(planned: &Planned) -> Option<usize> {
    planned
        .limited
        .iter()
        .zip(&planned.batch.hits)
        .position(|(l, h)| {
            l.spec().queue.is_some()
                && l.overflow_of.is_none()
                && h.delta > 0
                && matches!(
                    (h.policy.algorithm, &h.claim),
                    (Algorithm::Concurrency, Claim::Lease(_))
                        | (Algorithm::FairShare, Claim::Tenant(_))
                )
                && h.role == crate::storage::Role::Enforce
        })
}

/// A waiter's ticket while it waits: if the wait is dropped before it ends (its caller went
/// away), the ticket is withdrawn in the background and counted as `withdrawn`.
struct Withdraw<S: Store> {
    owner: Option<Arc<RateLimiter<S>>>,
    key: Vec<u8>,
    policy: Policy,
    ticket: LeaseId,
    /// The rule's waiters gauge, while this one is counted in it.
    waiting: Option<Gauge>,
    withdrawn: Counter,
}

impl<S: Store> Withdraw<S> {
    /// The wait ended here: no longer counted as waiting.
    fn settle(&mut self) {
        if let Some(gauge) = self.waiting.take() {
            gauge.dec();
        }
    }

    /// Whatever happens to the ticket now is handled where the wait ended.
    fn disarm(mut self) {
        self.settle();
        self.owner = None;
    }
}

impl<S: Store> Drop for Withdraw<S> {
    fn drop(&mut self) {
        if self.waiting.is_some() {
            self.withdrawn.inc();
        }
        self.settle();
        let Some(owner) = self.owner.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (key, policy, ticket) = (std::mem::take(&mut self.key), self.policy, self.ticket);
        runtime.spawn(async move {
            let _ = owner.queue_op(&key, &policy, &Op::Withdraw(ticket)).await;
        });
    }
}

/// How a wait ended, for the answer and the metrics.
enum End {
    Granted,
    /// Decide as without a queue (refused at once, timed out, or the store could not queue).
    Plain(&'static str),
}

/// Runs `planned`, whose hit `at` acquires in a queued pool, through the queue.
pub(super) async fn wait<S: Store>(
    limiter: &RateLimiter<S>,
    owner: Option<&Arc<RateLimiter<S>>>,
    request: &CheckRequest,
    planned: Planned,
    at: usize,
    caller_wait: Option<Duration>,
    explain: Option<&mut Vec<explain::Explained>>,
) -> Result<Decision, CheckError> {
    let started = Instant::now();
    let l = &planned.limited[at];
    let spec: QueueSpec = l.spec().queue.unwrap_or(QueueSpec {
        max_wait: Duration::ZERO,
        max_depth: 0,
    });
    let rule = Shared(l.rule.stat_key.clone());
    let value = request.descriptors[l.index]
        .entries
        .last()
        .map_or("", |e| e.value.as_str());
    let (tenant, weight) = match &l.spec().share {
        Some(share) => (limiter.keys().tenant_id(value), share.weight_of(value)),
        None => (Vec::new(), 1),
    };
    let hit = &planned.batch.hits[at];
    let (key, policy) = (hit.key.clone(), hit.policy);
    // A concurrency ticket's id is the lease it is granted; a fair-share ticket gets its own.
    let ticket = match &hit.claim {
        Claim::Lease(id) => *id,
        _ => match LeaseId::generate() {
            Ok(id) => id,
            Err(_) => return plain(limiter, request, planned, explain).await,
        },
    };
    let fair_share = policy.algorithm == Algorithm::FairShare;
    // Without a caller to wait for the answer there is no time to wait.
    let budget = match owner {
        None => Duration::ZERO,
        Some(_) => caller_wait
            .map_or(spec.max_wait, |w| w.min(spec.max_wait))
            .saturating_sub(ANSWER_MARGIN),
    };
    let stats = &limiter.metrics.queues;
    let labels = RuleLabels { rule: rule.clone() };
    let waiting = stats.waiting.get_or_create(&labels).clone();
    waiting.inc();
    let registration = limiter.waiting.register(&key);
    limiter.waiting.follow(&limiter.store);
    let mut guard = Withdraw {
        owner: owner.cloned(),
        key: key.clone(),
        policy,
        ticket,
        waiting: Some(waiting),
        withdrawn: stats
            .waits
            .get_or_create(&OutcomeLabels {
                rule: rule.clone(),
                outcome: "withdrawn",
            })
            .clone(),
    };
    let enqueue = Op::Enqueue {
        waiter: Waiter {
            id: ticket,
            tenant,
            weight,
            cost: hit.delta.max(1) as u64,
            wait: budget.as_micros() as u64,
        },
        max_depth: spec.max_depth,
    };
    // Who waits, per tenant, is counted with the rule's top consumers, as `<rule>/queued`.
    let waits = || {
        if let Some(top) = &limiter.top {
            let entries = request.descriptors[planned.limited[at].index]
                .entries
                .iter();
            let name: Arc<str> = format!("{}/queued", rule.0).into();
            top.record(
                &name,
                entries.map(|e| (e.key.as_str(), e.value.as_str())),
                1,
            );
        }
    };
    let end = queue_up(
        limiter,
        &planned,
        at,
        (&key, &policy),
        &enqueue,
        started + budget,
        (&registration, waits),
    )
    .await;
    guard.settle();
    drop(registration);
    let outcome = match end {
        End::Granted => "granted",
        End::Plain(why) => why,
    };
    stats
        .waits
        .get_or_create(&OutcomeLabels {
            rule: rule.clone(),
            outcome,
        })
        .inc();
    stats
        .wait_seconds
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let withdraw = || async {
        let _ = limiter.queue_op(&key, &policy, &Op::Withdraw(ticket)).await;
    };
    if !matches!(end, End::Granted) {
        guard.disarm();
        if matches!(outcome, "full" | "unweighted" | "oversized" | "error") {
            return plain(limiter, request, planned, explain).await;
        }
        // Withdrawn even when it looks gone: it may have been granted after the last look, and
        // then the lease is released and passed on. The request is decided at the same time,
        // in one round trip, under a new lease id, so it never renews the lease being withdrawn
        // (it takes a slot only if one is free and nobody waits for it).
        let mut planned = planned;
        if let (false, Ok(fresh)) = (fair_share, LeaseId::generate()) {
            planned.batch.hits[at].claim = Claim::Lease(fresh);
        }
        let (_, decision) = tokio::join!(withdraw(), plain(limiter, request, planned, explain));
        return decision;
    }
    stats
        .grants
        .get_or_create(&WeightLabels { rule, weight })
        .inc();
    // The lease is held (the batch renews it), or the fair-share units are charged (the batch
    // only looks at the pool): the other limits are charged with it.
    let mut planned = planned;
    if fair_share {
        planned.batch.hits[at].delta = 0;
    }
    let outcome = limiter
        .store
        .apply_or(&planned.batch, planned.on_failure)
        .await;
    let refused = match &outcome {
        Ok(o) => crate::storage::rejects(&planned.batch.hits, &o.readings),
        Err(_) => true,
    };
    if refused {
        // Another limit refuses it now, or the store failed: the slot goes to the next ticket.
        withdraw().await;
    }
    guard.disarm();
    Ok(limiter.answer(request, planned, &outcome?, false, explain, None))
}

/// Enqueues and waits until granted, refused or out of time (`until`).
async fn queue_up<S: Store>(
    limiter: &RateLimiter<S>,
    planned: &Planned,
    at: usize,
    (key, policy): (&[u8], &Policy),
    enqueue: &Op,
    until: Instant,
    (registration, waits): (&Registration, impl FnOnce()),
) -> End {
    let mut notified = std::pin::pin!(registration.notify.notified());
    notified.as_mut().enable();
    let Ok(mut out) = limiter.queue_op(key, policy, enqueue).await else {
        return End::Plain("error");
    };
    match out.status {
        Status::Granted => return End::Granted,
        Status::Full => return End::Plain("full"),
        Status::Unweighted => return End::Plain("unweighted"),
        Status::Oversized => return End::Plain("oversized"),
        Status::Gone => return End::Plain("timed_out"),
        Status::Waiting { .. } if Instant::now() >= until => return End::Plain("timed_out"),
        Status::Waiting { .. } => {}
    }
    // A request another limit refuses never waits.
    let mut dry = planned.batch.clone();
    dry.admission = Admission::DryRun;
    dry.hits[at].delta = 0;
    match limiter.store.apply(&dry).await {
        Ok(o) if crate::storage::rejects(&dry.hits, &o.readings) => return End::Plain("refused"),
        Ok(_) => {}
        Err(_) => return End::Plain("error"),
    }
    waits();
    let ticket = enqueue.ticket();
    loop {
        let moves_in = match out.moves_in {
            0 => POLL_EVERY,
            us => Duration::from_micros(us).min(POLL_EVERY),
        };
        let wake_at = (Instant::now() + moves_in).min(until);
        tokio::select! {
            () = notified.as_mut() => {}
            () = tokio::time::sleep_until(wake_at.into()) => {}
        }
        notified.set(registration.notify.notified());
        notified.as_mut().enable();
        if Instant::now() >= until {
            return End::Plain("timed_out");
        }
        out = match limiter.queue_op(key, policy, &Op::Poll(ticket)).await {
            Ok(out) => out,
            Err(_) => return End::Plain("error"),
        };
        match out.status {
            Status::Granted => return End::Granted,
            Status::Waiting { .. } => {}
            _ => return End::Plain("timed_out"),
        }
    }
}

/// Decides `planned` as if its pool had no queue.
async fn plain<S: Store>(
    limiter: &RateLimiter<S>,
    request: &CheckRequest,
    planned: Planned,
    explain: Option<&mut Vec<explain::Explained>>,
) -> Result<Decision, CheckError> {
    let outcome = limiter
        .store
        .apply_or(&planned.batch, planned.on_failure)
        .await?;
    Ok(limiter.answer(request, planned, &outcome, false, explain, None))
}

impl<S: Store> RateLimiter<S> {
    /// After a batch that released leases in queued pools (or refunded units to a queued
    /// fair-share pool): hands what freed to the queues' next tickets (the store tells other
    /// replicas; this one's waiters are woken here).
    pub(super) async fn dispatch_released(&self, planned: &Planned) {
        for (l, hit) in planned.limited.iter().zip(&planned.batch.hits) {
            if hit.delta >= 0 || l.spec().queue.is_none() {
                continue;
            }
            // Polling a ticket nobody holds only dispatches.
            let nobody = Op::Poll(LeaseId([0; 16]));
            let _ = self.queue_op(&hit.key, &hit.policy, &nobody).await;
        }
    }

    /// Runs `op` on the queue of the pool at `key`, and wakes this replica's waiters there when
    /// it granted tickets (theirs may be among them; the store tells the other replicas').
    async fn queue_op(
        &self,
        key: &[u8],
        policy: &Policy,
        op: &Op,
    ) -> Result<crate::storage::QueueOutcome, crate::storage::StoreError> {
        let out = self.store.queue(key, policy, op).await?;
        if !out.granted.is_empty() {
            self.waiting.wake(key);
        }
        Ok(out)
    }
}
