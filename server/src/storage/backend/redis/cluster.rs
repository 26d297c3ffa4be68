//! A request whose counters live in several Redis Cluster hash slots.
//!
//! A Lua script may only touch keys of one slot, so such a request cannot be one script. It runs
//! as one script per slot, **concurrently**, and stays all-or-nothing in two steps:
//!
//! 1. **Charge.** Each slot's script decides its own hits and charges them unless one of its
//!    enforced hits is over. Quota hits are sent as shadow hits (counted, never rejecting on their
//!    own), since "every quota hit is over" can only be judged across slots.
//! 2. **Decide and undo.** The request is judged on every reading with the real roles
//!    ([`crate::storage::rejects`]). If it is rejected, every slot that charged is sent an undo
//!    ([`Admission::Undo`]): the same hits refunded, stepped at the instant the charge was
//!    stepped, so a fixed window takes back exactly its window and a sliding window its sub-window.
//!    Undos run in the background: the answer does not wait for them.
//!
//! **What is atomic.** Each slot's part: no other request sees or changes its counters in
//! between. Across slots, a charged part is visible to other requests until its undo lands (one
//! round trip): they may be rejected because of units that are then given back. So the refund
//! window can only reject more, never admit more: no enforced limit is ever exceeded, since each
//! charge is checked atomically in its own slot. The one overshoot is a token bucket's: an undo
//! restores its debt, but a bucket that would have stood full during the refund window regains up
//! to one refund window of refill (`algorithm/tests.rs` bounds it). If an undo cannot be delivered
//! (the slot's node fails in between), its units stay charged: counts err high.
//!
//! Concurrency pools, fair-share pools and overflow pairs need their counters in one slot (a
//! domain's `shard_by`); a request that would spread them is refused with that reason.
//!
//! Refunds in a request that also charges are applied only once the request is admitted (a
//! second concurrent round), so a rejected request refunds nothing, as on one node. Requests that
//! charge whatever their readings (`--charge-rejected`, reconciliation, undos) need no undo and
//! take one round.

use std::collections::HashMap;

use futures::future::join_all;
use redis::cluster_routing::Slot;

use super::RedisStore;
use crate::algorithm::{Algorithm, Reading};
use crate::storage::{Admission, Batch, Hit, Outcome, Role, StoreError, rejects};

/// Hit positions grouped by slot, in first-seen order.
fn by_slot(hits: &[Hit], pick: impl Fn(&Hit) -> bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<Slot, usize> = HashMap::new();
    for (i, hit) in hits.iter().enumerate().filter(|(_, h)| pick(h)) {
        let slot = Slot::for_key(&hit.key);
        let g = *index.entry(slot).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups
}

/// One script per slot, concurrently; readings back in batch order.
async fn run_slots(
    store: &RedisStore,
    hits: &[Hit],
    groups: &[Vec<usize>],
    admission: Admission,
) -> Vec<Result<(Vec<usize>, Outcome, u64), StoreError>> {
    let calls = groups.iter().map(|group| {
        let part: Vec<Hit> = group.iter().map(|&i| hits[i].clone()).collect();
        async move {
            store
                .run(&part, admission)
                .await
                .map(|(outcome, at)| (group.clone(), outcome, at))
        }
    });
    join_all(calls).await
}

pub(super) async fn apply_across_slots(
    store: &RedisStore,
    batch: &Batch,
) -> Result<Outcome, StoreError> {
    let hits = &batch.hits;
    // Leases, fair shares and overflow pairs are judged with the state of more than one counter
    // or hold what an undo could not give back as it was (a renewed lease): their counters must
    // share a slot.
    if hits.iter().any(|h| {
        matches!(h.role, Role::Overflow { .. })
            || matches!(
                h.policy.algorithm,
                Algorithm::Concurrency | Algorithm::FairShare
            )
    }) {
        return Err(StoreError::Server(
            "a request with a concurrency pool, a fair-share pool or an overflow pair has \
             counters in several Redis Cluster hash slots: name the domain's tenant key in \
             `shard_by` so they share one"
                .into(),
        ));
    }
    if batch.admission.charges_always() || batch.admission == Admission::DryRun {
        let groups = by_slot(hits, |_| true);
        let mut readings = vec![None; hits.len()];
        for result in run_slots(store, hits, &groups, batch.admission).await {
            let (group, outcome, _) = result?;
            place(&mut readings, &group, &outcome);
        }
        return Ok(Outcome {
            readings: complete(hits, readings),
            charged: batch.admission != Admission::DryRun,
        });
    }

    // Round one: charges and looks; refunds wait for the decision (as looks for now).
    let round_one: Vec<Hit> = hits
        .iter()
        .map(|h| Hit {
            delta: h.delta.max(0),
            role: if h.role == Role::Quota {
                Role::Shadow
            } else {
                h.role
            },
            ..h.clone()
        })
        .collect();
    let groups = by_slot(&round_one, |_| true);
    let results = run_slots(store, &round_one, &groups, Admission::AllOrNothing).await;
    let mut readings = vec![None; hits.len()];
    let mut charged_parts = Vec::new();
    let mut failure = None;
    for result in results {
        match result {
            Ok((group, outcome, at)) => {
                place(&mut readings, &group, &outcome);
                if outcome.charged {
                    charged_parts.push((group, outcome, at));
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    let readings = complete(hits, readings);
    let rejected = failure.is_some() || rejects(hits, &readings);
    if rejected {
        undo(store, &round_one, charged_parts);
        if let Some(e) = failure {
            return Err(e);
        }
        return Ok(Outcome {
            readings,
            charged: false,
        });
    }

    // Admitted: apply the refunds, concurrently per slot.
    let mut readings = readings;
    let refund_groups = by_slot(hits, |h| h.delta < 0);
    if !refund_groups.is_empty() {
        for result in run_slots(store, hits, &refund_groups, Admission::ChargeAll).await {
            let (group, outcome, _) = result?;
            for (&i, r) in group.iter().zip(&outcome.readings) {
                readings[i] = *r;
            }
        }
    }
    Ok(Outcome {
        readings,
        charged: true,
    })
}

/// Every reading; a hit whose slot failed (the request then fails) reads as untouched.
fn complete(hits: &[Hit], readings: Vec<Option<Reading>>) -> Vec<Reading> {
    hits.iter()
        .zip(readings)
        .map(|(h, r)| {
            r.unwrap_or(Reading {
                used_before: 0,
                used_after: 0,
                capacity: h.policy.capacity(),
                over: false,
                wait: 0,
                reset: 0,
                borrowing: false,
            })
        })
        .collect()
}

fn place(readings: &mut [Option<Reading>], group: &[usize], outcome: &Outcome) {
    for (&i, r) in group.iter().zip(&outcome.readings) {
        readings[i] = Some(*r);
    }
}

/// Takes back what each charged part charged, in the background. A hit took units when its
/// delta was positive and its counter counts over-limit hits or it was within the limit (a token
/// bucket never lends what it does not have).
fn undo(store: &RedisStore, hits: &[Hit], parts: Vec<(Vec<usize>, Outcome, u64)>) {
    for (group, outcome, at) in parts {
        let refunds: Vec<Hit> = group
            .iter()
            .zip(&outcome.readings)
            .filter(|&(&i, r)| {
                let h = &hits[i];
                h.delta > 0 && (h.policy.algorithm.counts_over_limit_hits() || !r.over)
            })
            .map(|(&i, _)| Hit {
                delta: -hits[i].delta,
                ..hits[i].clone()
            })
            .collect();
        if refunds.is_empty() {
            continue;
        }
        let store = store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.run(&refunds, Admission::Undo { at }).await {
                tracing::warn!(
                    error = %e,
                    keys = refunds.len(),
                    "cannot undo a rejected request's charge in one slot; its units stay counted"
                );
            }
        });
    }
}
