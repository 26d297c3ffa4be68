//! Weighted fair queueing in front of a pool: a request that finds a concurrency pool full, or
//! that a fair-share pool refuses, takes a ticket and waits for its turn instead of being refused
//! at once.
//!
//! **Order.** Each ticket gets a virtual finish tag, as in weighted fair queueing:
//! `finish = max(V, last finish of its tenant) + cost × SCALE / weight`, where `V`, the queue's
//! virtual time, is the tag of the last ticket granted, and the cost is one lease, or the units a
//! fair-share request asks for. Tickets are granted in `(finish, id)` order. So within one tenant
//! tickets are first come, first served; across tenants each is served in proportion to its
//! weight while it keeps tickets queued (weights 2:1 with both backlogged get grants 2:1); and a
//! tenant with one waiter is served before another tenant's 50th, whose tags have run ahead. A
//! tenant with weight 0 cannot queue. While a tenant has tickets its tag only grows, so no ticket
//! of a tenant with positive weight starves: every ticket queued after it ends up with a larger
//! tag.
//!
//! **Grants.** Every operation on a queue first drops tickets past their deadline (a waiter that
//! went away without withdrawing, a replica that died) and then *dispatches* ([`seats`]): while a
//! concurrency pool has a free slot, its head ticket is granted a lease with the ticket's id and
//! a full TTL; a fair-share pool grants, in tag order, every ticket its share rules admit now
//! (a tenant's later tickets wait behind its first refused one), charging the units at once. A
//! waiter learns its fate by polling its ticket: still queued (with its rank), granted, or gone
//! (past its deadline or withdrawn). Because every acquire on a pool with a queue goes through
//! [`apply`], a request arriving while others wait queues behind them: nobody jumps the queue
//! when a slot frees or a window refills.
//!
//! **Withdraw.** A waiter whose caller gave up removes its ticket; if the ticket was granted in
//! the meantime, the lease is released or the units refunded (and passed to the next ticket), so
//! nothing is left held that nobody will use.
//!
//! **State.** The tickets in `(finish, id)` order with their deadlines, `V`, and the finish tag
//! of each tenant whose tag is ahead of `V` (a tag at or behind `V` makes no difference, so a store
//! may forget it at any time). An empty queue is no state at all: `V` starts again from 0.
//!
//! The Redis script (`storage/backend/redis/queue.lua`) mirrors this operation for operation:
//! tickets in a sorted set scored by their tags (members are the ids in hex, whose byte order is
//! the ids' order), deadlines in a second one, tags in a hash; for a fair-share pool, each
//! ticket's cost, weight and tenant in another hash, and the grants in a set scored by deadline.

use super::lease::LeaseId;
use super::{Micros, Policy, State};
use seats::Seats;

mod seats;

/// The virtual time one slot costs a tenant of weight 1.
pub const SCALE: u64 = 1_000_000;
/// The deepest queue a rule may declare.
pub const MAX_DEPTH: u64 = 10_000;
/// The longest wait a rule may declare, in milliseconds.
pub const MAX_WAIT_MS: u64 = 60_000;

/// A queued request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub finish: u64,
    /// Also the id of the lease it is granted (a concurrency pool).
    pub id: LeaseId,
    /// Dropped from the queue at this instant.
    pub deadline: Micros,
    /// What a fair-share pool is charged when it is granted (1 for a concurrency pool).
    pub cost: u64,
    pub tenant: Vec<u8>,
    pub weight: u32,
}

/// A fair-share ticket granted and charged, until its waiter's check has run (or its deadline,
/// for a waiter that went away: the units then stay charged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: LeaseId,
    pub cost: u64,
    pub tenant: Vec<u8>,
    pub weight: u32,
    pub until: Micros,
}

/// One pool's queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queue {
    /// The virtual time: the finish tag of the last ticket granted.
    pub vtime: u64,
    /// In `(finish, id)` order.
    pub tickets: Vec<Ticket>,
    /// Tenants (as a hit names them) whose finish tag is ahead of `vtime`.
    pub tags: Vec<(Vec<u8>, u64)>,
    /// Fair-share grants not yet withdrawn or expired, in grant order.
    pub granted: Vec<Grant>,
}

impl Queue {
    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty() && self.granted.is_empty()
    }
}

/// Who wants to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub id: LeaseId,
    pub tenant: Vec<u8>,
    pub weight: u32,
    /// Units a fair-share pool is asked for (a concurrency pool's ticket is one lease, whatever
    /// this says).
    pub cost: u64,
    /// How long the ticket stays queued, from the store's `now`: the store's clock sets the
    /// deadline, so replicas whose clocks differ from the store's still agree on it.
    pub wait: Micros,
}

/// An operation on a pool's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Queue a ticket (unless the queue holds `max_depth` already) and dispatch.
    Enqueue { waiter: Waiter, max_depth: u64 },
    /// How is this ticket doing? (Dispatches first.)
    Poll(LeaseId),
    /// The waiter gave up: remove its ticket, or give back what it was granted (a lease is
    /// released, a fair-share charge refunded).
    Withdraw(LeaseId),
}

impl Op {
    pub fn ticket(&self) -> LeaseId {
        match self {
            Op::Enqueue { waiter, .. } => waiter.id,
            Op::Poll(id) | Op::Withdraw(id) => *id,
        }
    }
}

/// Where the operation's ticket stands afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Its lease is live in the pool, or its fair-share units are charged.
    Granted,
    /// Queued, with this many tickets ahead of it.
    Waiting { ahead: u64 },
    /// Not queued: the queue was full.
    Full,
    /// Not queued: its tenant's weight is 0.
    Unweighted,
    /// Not queued: it asks a fair-share pool for more than its whole capacity.
    Oversized,
    /// Neither queued nor granted: withdrawn, or dropped at its deadline.
    Gone,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Granted => "granted",
            Status::Waiting { .. } => "waiting",
            Status::Full => "full",
            Status::Unweighted => "unweighted",
            Status::Oversized => "oversized",
            Status::Gone => "gone",
        }
    }
}

/// What an operation saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// Tickets granted by this operation, in grant order: their waiters can be told.
    pub granted: Vec<LeaseId>,
    /// Tickets queued afterwards.
    pub depth: u64,
    /// How long from now until the queue can next move without a release: until the soonest
    /// expiry of a lease (a concurrency pool) or the window's end (a fair-share pool), or of a
    /// ticket, while tickets are queued (0 when none are).
    pub moves_in: Micros,
}

/// Applies `op` at `now` to a pool (its `policy` and `state`: a concurrency pool's leases or a
/// fair-share pool's shares) and its `queue`; returns the pool's and the queue's new states and
/// the outcome. A concurrency pool's state drops expired leases.
pub fn apply(
    policy: &Policy,
    pool: &State,
    queue: &Queue,
    now: Micros,
    op: &Op,
) -> (State, Queue, Outcome) {
    let mut seats = Seats::of(policy, pool, now);
    let mut q = queue.clone();
    q.tickets.retain(|t| t.deadline > now);
    q.granted.retain(|g| g.until > now);
    let id = op.ticket();
    let mut refused = None;
    match op {
        Op::Enqueue { waiter, max_depth } => {
            // Enqueueing a ticket already queued or granted only looks at it.
            let known = q.tickets.iter().any(|t| t.id == id) || seats.holds(&q, &id);
            let cost = seats.cost_of(waiter);
            if known {
                // Nothing to add.
            } else if waiter.weight == 0 {
                refused = Some(Status::Unweighted);
            } else if !seats.can_ever_fit(cost) {
                refused = Some(Status::Oversized);
            } else if q.tickets.len() as u64 >= *max_depth {
                refused = Some(Status::Full);
            } else {
                let tag = q
                    .tags
                    .iter()
                    .find(|(t, _)| *t == waiter.tenant)
                    .map_or(0, |&(_, f)| f);
                let step = cost.saturating_mul(SCALE) / u64::from(waiter.weight);
                let finish = q.vtime.max(tag).saturating_add(step);
                let ticket = Ticket {
                    finish,
                    id,
                    deadline: now + waiter.wait,
                    cost,
                    tenant: waiter.tenant.clone(),
                    weight: waiter.weight,
                };
                let at = q
                    .tickets
                    .partition_point(|t| (t.finish, t.id) < (finish, id));
                q.tickets.insert(at, ticket);
                match q.tags.iter_mut().find(|(t, _)| *t == waiter.tenant) {
                    Some(entry) => entry.1 = finish,
                    None => q.tags.push((waiter.tenant.clone(), finish)),
                }
            }
        }
        Op::Poll(_) => {}
        Op::Withdraw(_) => {
            if let Some(at) = q.tickets.iter().position(|t| t.id == id) {
                q.tickets.remove(at);
            } else {
                seats.give_back(&mut q, &id);
            }
        }
    }

    let granted = seats.dispatch(&mut q);
    if q.is_empty() {
        q = Queue::default();
    } else {
        let vtime = q.vtime;
        q.tags.retain(|&(_, f)| f > vtime);
    }

    let status = if let Some(refused) = refused {
        refused
    } else if let Some(ahead) = q.tickets.iter().position(|t| t.id == id) {
        Status::Waiting {
            ahead: ahead as u64,
        }
    } else if !matches!(op, Op::Withdraw(_)) && seats.holds(&q, &id) {
        Status::Granted
    } else {
        Status::Gone
    };
    let moves_in = match q.tickets.iter().map(|t| t.deadline).min() {
        None => 0,
        Some(soonest_ticket) => seats.frees_at().min(soonest_ticket) - now,
    };
    let outcome = Outcome {
        status,
        granted,
        depth: q.tickets.len() as u64,
        moves_in,
    };
    (seats.into_state(), q, outcome)
}

#[cfg(test)]
mod tests;
