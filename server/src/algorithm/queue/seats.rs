//! What a queue hands out, per kind of pool: a lease in a concurrency pool (the slot is the
//! lease, with the ticket's id), or units charged to a fair-share pool for the ticket's tenant
//! (kept as a [`Grant`] until its waiter has run its check, so that a waiter that gives up is
//! refunded).

use super::super::lease::{self, Lease, LeaseId};
use super::super::share::{self, Tenant};
use super::super::{Algorithm, MICROS_PER_SEC, Micros, Policy, State};
use super::{Grant, Queue, Waiter};

pub(super) enum Seats<'p> {
    Leases {
        policy: &'p Policy,
        now: Micros,
        live: Vec<Lease>,
    },
    Shares {
        policy: &'p Policy,
        now: Micros,
        state: State,
    },
}

impl<'p> Seats<'p> {
    pub fn of(policy: &'p Policy, pool: &State, now: Micros) -> Self {
        match policy.algorithm {
            Algorithm::FairShare => Seats::Shares {
                policy,
                now,
                state: pool.clone(),
            },
            _ => Seats::Leases {
                policy,
                now,
                live: lease::live(pool, now).to_vec(),
            },
        }
    }

    /// What a waiter's ticket costs: one lease, or the units it asks a fair-share pool for.
    pub fn cost_of(&self, waiter: &Waiter) -> u64 {
        match self {
            Seats::Leases { .. } => 1,
            Seats::Shares { .. } => waiter.cost.max(1),
        }
    }

    /// Whether a ticket of `cost` could ever be granted: a fair-share pool never admits more
    /// than its capacity at once (a concurrency ticket is one lease).
    pub fn can_ever_fit(&self, cost: u64) -> bool {
        match self {
            Seats::Leases { .. } => true,
            Seats::Shares { policy, .. } => cost <= policy.limit,
        }
    }

    /// Whether ticket `id` has been granted and still holds what it was granted.
    pub fn holds(&self, q: &Queue, id: &LeaseId) -> bool {
        match self {
            Seats::Leases { live, .. } => live.iter().any(|l| l.id == *id),
            Seats::Shares { .. } => q.granted.iter().any(|g| g.id == *id),
        }
    }

    /// Gives back what ticket `id` was granted, if it holds anything.
    pub fn give_back(&mut self, q: &mut Queue, id: &LeaseId) {
        match self {
            Seats::Leases { live, .. } => live.retain(|l| l.id != *id),
            Seats::Shares { policy, now, state } => {
                let Some(at) = q.granted.iter().position(|g| g.id == *id) else {
                    return;
                };
                let g = q.granted.remove(at);
                let refund = -(g.cost as i64);
                *state =
                    share::step(policy, state, *now, refund, &tenant(&g.tenant, g.weight)).next;
            }
        }
    }

    /// Grants queued tickets while they fit, in `(finish, id)` order: free lease slots to the
    /// head tickets; fair-share units to every ticket the pool admits now, a tenant's later
    /// tickets waiting behind its first refused one (first come, first served within a tenant).
    pub fn dispatch(&mut self, q: &mut Queue) -> Vec<LeaseId> {
        let mut granted = Vec::new();
        match self {
            Seats::Leases { policy, now, live } => {
                let ttl = lease::ttl(policy);
                while (live.len() as u64) < policy.limit && !q.tickets.is_empty() {
                    let head = q.tickets.remove(0);
                    q.vtime = q.vtime.max(head.finish);
                    let lease = Lease {
                        expires_at: *now + ttl,
                        id: head.id,
                    };
                    let at = live.partition_point(|l| *l < lease);
                    live.insert(at, lease);
                    granted.push(head.id);
                }
            }
            Seats::Shares { policy, now, state } => {
                let mut refused: Vec<Vec<u8>> = Vec::new();
                let mut k = 0;
                while k < q.tickets.len() {
                    let t = &q.tickets[k];
                    if refused.contains(&t.tenant) {
                        k += 1;
                        continue;
                    }
                    let step = share::step(
                        policy,
                        state,
                        *now,
                        t.cost as i64,
                        &tenant(&t.tenant, t.weight),
                    );
                    if step.reading.over {
                        refused.push(t.tenant.clone());
                        k += 1;
                        continue;
                    }
                    *state = step.next;
                    let t = q.tickets.remove(k);
                    q.vtime = q.vtime.max(t.finish);
                    granted.push(t.id);
                    q.granted.push(Grant {
                        id: t.id,
                        cost: t.cost,
                        tenant: t.tenant,
                        weight: t.weight,
                        until: t.deadline,
                    });
                }
            }
        }
        granted
    }

    /// When the pool frees room without a release: its soonest lease expiry, or the end of the
    /// fair-share window (`u64::MAX` for an empty concurrency pool).
    pub fn frees_at(&self) -> Micros {
        match self {
            Seats::Leases { live, .. } => live.first().map_or(u64::MAX, |l| l.expires_at),
            Seats::Shares { policy, now, .. } => {
                let (_, end) = policy.period.window_at(*now / MICROS_PER_SEC);
                end.saturating_mul(MICROS_PER_SEC)
            }
        }
    }

    pub fn into_state(self) -> State {
        match self {
            Seats::Leases { live, .. } if live.is_empty() => State::Empty,
            Seats::Leases { live, .. } => State::Leases(live),
            Seats::Shares { state, .. } => state,
        }
    }
}

fn tenant(id: &[u8], weight: u32) -> Tenant {
    Tenant {
        id: id.to_vec(),
        weight,
    }
}
