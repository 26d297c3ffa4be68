//! Weighted fair share with borrowing: one capacity per fixed window (the policy's `limit`),
//! shared by the tenants that use it, each with a weight.
//!
//! **Demand.** A tenant's expected requests in the window: the larger of its previous window's
//! arrivals scaled to the time left plus this window's arrivals so far
//! (`prev × remain / window + arrivals`), and this window's arrivals projected over the whole
//! window (`arrivals × window / elapsed`). The first follows a steady or fading tenant, the second
//! a newcomer as soon as its requests arrive.
//!
//! **Active.** A tenant is active while its demand is positive: it sent requests (admitted or not)
//! in the current window, or in the previous one and the current one is not over. A tenant that
//! went quiet fades out over one window.
//!
//! **Guaranteed share.** Of the active tenants, tenant `i` is guaranteed
//! `g_i = ⌊capacity × weight_i / Σ active weights⌋` units per window. A weight of 0 guarantees
//! nothing: such a tenant only borrows.
//!
//! **Borrowing.** A hit of cost `n` from tenant `i` is admitted when the pool has room
//! (`total + n ≤ capacity`) and either it stays within its guarantee (`used_i + n ≤ g_i`), or,
//! borrowing, it leaves every other active tenant its *reserve*
//! (`total + n + Σ_{j≠i} r_j ≤ capacity`), where `r_j = max(0, min(g_j, ⌈demand_j⌉) − used_j)` is
//! what `j` is still expected to claim of its guarantee in this window. So idle capacity is lent
//! (work-conserving), a borrower is refused before any tenant within its guarantee, and a borrower
//! never takes what an active tenant's demand needs of its guarantee.
//!
//! **Convergence.** Two tenants saturating the pool get admissions in the ratio of their weights;
//! when one goes idle its reserve fades over one window and the other has the whole capacity from
//! the next window on; a newcomer's projected demand reserves its share as soon as its requests
//! arrive (what was already lent out in the window stays lent, so when it arrives after the pool
//! is spent, its share starts with the next window).
//!
//! **Arithmetic.** Demands and guarantees are fractions, computed in IEEE doubles in the same
//! order of operations in Rust and in the Redis script, and rounded to whole units before anything
//! is summed, so sums are exact and do not depend on the order tenants are visited in.
//!
//! **State.** Per pool: the window start, the units admitted in it (`total`) and up to
//! [`MAX_TENANTS`] tenants with weight, units admitted (`used`), requests this window
//! (`arrivals`) and the previous one (`prev`). A tenant past the bound is not tracked: it has no
//! guarantee and no reserve and can only borrow. Requests are recorded as arrivals even when their
//! batch is rejected ([`arrival`]): refused demand is still demand.

use super::{MICROS_PER_SEC, Micros, Policy, Reading, State, Step};

/// The most tenants one pool tracks at once (active in the current or previous window).
pub const MAX_TENANTS: usize = 512;

/// The most weight one tenant can have.
pub const MAX_WEIGHT: u32 = 1_000;

/// A tenant of a fair-share pool, as a hit names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant {
    /// The descriptor value that identifies the tenant (possibly a keyed hash of it).
    pub id: Vec<u8>,
    /// 0..=[`MAX_WEIGHT`].
    pub weight: u32,
}

/// A pool's state in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shares {
    /// Window start, seconds since the epoch.
    pub start: u64,
    /// Units admitted in this window, tracked tenants or not.
    pub total: u64,
    /// Ordered by id.
    pub tenants: Vec<TenantShare>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantShare {
    pub id: Vec<u8>,
    pub weight: u32,
    pub used: u64,
    pub arrivals: u64,
    pub prev: u64,
}

/// Where `now` falls in its window, in microseconds.
#[derive(Clone, Copy)]
struct Clock {
    elapsed: Micros,
    remain: Micros,
    window: Micros,
}

/// The pool at `now`'s window: carried over from the previous window (its arrivals become
/// `prev`; tenants without any are dropped), or fresh.
fn rolled(policy: &Policy, state: &State, now: Micros) -> (Shares, Clock) {
    let secs = policy.period.nominal_secs();
    let (start, end) = policy.period.window_at(now / MICROS_PER_SEC);
    let clock = Clock {
        // At least 1 µs, so a projection never divides by zero.
        elapsed: (now - start * MICROS_PER_SEC).max(1),
        remain: end * MICROS_PER_SEC - now,
        window: secs * MICROS_PER_SEC,
    };
    let shares = match state {
        State::Shares(s) if s.start == start => (**s).clone(),
        State::Shares(s) if s.start + secs == start => Shares {
            start,
            total: 0,
            tenants: s
                .tenants
                .iter()
                .filter(|t| t.arrivals > 0)
                .map(|t| TenantShare {
                    id: t.id.clone(),
                    weight: t.weight,
                    used: 0,
                    arrivals: 0,
                    prev: t.arrivals,
                })
                .collect(),
        },
        _ => Shares {
            start,
            total: 0,
            tenants: Vec::new(),
        },
    };
    (shares, clock)
}

/// Tenant `i`'s guarantee and the other tenants' reserves, in whole units.
struct Assessment {
    guarantee: u64,
    reserves: u64,
}

fn demand(t: &TenantShare, c: Clock) -> f64 {
    let fading = t.prev as f64 * c.remain as f64 / c.window as f64 + t.arrivals as f64;
    let projected = t.arrivals as f64 * c.window as f64 / c.elapsed as f64;
    fading.max(projected)
}

/// `me` is tenant `i`'s view (its record with this hit's arrival, weight updated), or `None` when
/// it is not tracked; `skip` is its position among `tenants`, if stored there.
fn assess(
    capacity: u64,
    tenants: &[TenantShare],
    skip: Option<usize>,
    me: Option<&TenantShare>,
    c: Clock,
) -> Assessment {
    let others = || {
        tenants
            .iter()
            .enumerate()
            .filter(move |&(k, _)| Some(k) != skip)
            .map(|(_, t)| t)
            .filter(move |t| demand(t, c) > 0.0)
    };
    let my_weight = me.map_or(0, |t| u64::from(t.weight));
    let active_weight: u64 = my_weight + others().map(|t| u64::from(t.weight)).sum::<u64>();
    let guarantee_of = |weight: u32| -> f64 {
        if active_weight == 0 {
            0.0
        } else {
            (capacity as f64 * f64::from(weight) / active_weight as f64).floor()
        }
    };
    let reserves = others()
        .map(|t| {
            let r = guarantee_of(t.weight).min(demand(t, c).ceil()) - t.used as f64;
            if r > 0.0 { r as u64 } else { 0 }
        })
        .sum();
    Assessment {
        guarantee: me.map_or(0, |t| guarantee_of(t.weight) as u64),
        reserves,
    }
}

impl Assessment {
    /// Whether `n` more units for a tenant that has used `used` fit in a pool at `total`.
    fn fits(&self, capacity: u64, total: u64, used: u64, n: u64) -> bool {
        let after = total.saturating_add(n);
        after <= capacity
            && (used.saturating_add(n) <= self.guarantee
                || after.saturating_add(self.reserves) <= capacity)
    }

    /// The most units that fit now: exactly the largest `n` with `fits(.., n)`.
    fn room(&self, capacity: u64, total: u64, used: u64) -> u64 {
        let pool = capacity.saturating_sub(total);
        let own = self.guarantee.saturating_sub(used);
        let borrow = pool.saturating_sub(self.reserves);
        pool.min(own.max(borrow))
    }
}

pub fn step(policy: &Policy, state: &State, now: Micros, delta: i64, tenant: &Tenant) -> Step {
    let capacity = policy.limit;
    let (mut pool, clock) = rolled(policy, state, now);
    let found = pool.tenants.binary_search_by(|t| t.id.cmp(&tenant.id));
    let arriving = delta.max(0) as u64;
    let mine = match found {
        Ok(i) => Some(TenantShare {
            weight: tenant.weight,
            arrivals: pool.tenants[i].arrivals.saturating_add(arriving),
            ..pool.tenants[i].clone()
        }),
        Err(_) if pool.tenants.len() < MAX_TENANTS => Some(TenantShare {
            id: tenant.id.clone(),
            weight: tenant.weight,
            used: 0,
            arrivals: arriving,
            prev: 0,
        }),
        Err(_) => None,
    };
    let a = assess(capacity, &pool.tenants, found.ok(), mine.as_ref(), clock);
    let used = mine.as_ref().map_or(0, |t| t.used);
    let room_before = a.room(capacity, pool.total, used);
    // Past the tenant's guarantee, a hit can only borrow (an untracked tenant has none).
    let borrowing = arriving > 0 && used.saturating_add(arriving) > a.guarantee;
    let reading = |room_after: u64, over| Reading {
        used_before: capacity - room_before,
        used_after: capacity - room_after,
        capacity,
        over,
        wait: if over { clock.remain } else { 0 },
        reset: clock.remain,
        borrowing,
    };

    if delta == 0 {
        return Step {
            reading: reading(room_before, false),
            next: state.clone(),
        };
    }
    if delta < 0 {
        let Ok(i) = found else {
            return Step {
                reading: reading(room_before, false),
                next: state.clone(),
            };
        };
        let back = delta.unsigned_abs().min(pool.tenants[i].used);
        pool.tenants[i].used -= back;
        pool.total -= back;
        let room_after = a.room(capacity, pool.total, pool.tenants[i].used);
        return Step {
            reading: reading(room_after, false),
            next: State::Shares(Box::new(pool)),
        };
    }

    let fits = a.fits(capacity, pool.total, used, arriving);
    let mut me = mine;
    if fits {
        pool.total += arriving;
        if let Some(t) = me.as_mut() {
            t.used += arriving;
        }
    }
    let room_after = if fits {
        a.room(capacity, pool.total, used + arriving)
    } else {
        room_before
    };
    if let Some(t) = me {
        match found {
            Ok(i) => pool.tenants[i] = t,
            Err(i) => pool.tenants.insert(i, t),
        }
    }
    Step {
        reading: reading(room_after, !fits),
        next: State::Shares(Box::new(pool)),
    }
}

/// The state a rejected batch leaves: this hit's arrival recorded, nothing admitted.
pub fn arrival(policy: &Policy, state: &State, now: Micros, delta: i64, tenant: &Tenant) -> State {
    if delta <= 0 {
        return state.clone();
    }
    let (mut pool, _) = rolled(policy, state, now);
    match pool.tenants.binary_search_by(|t| t.id.cmp(&tenant.id)) {
        Ok(i) => {
            let t = &mut pool.tenants[i];
            t.weight = tenant.weight;
            t.arrivals = t.arrivals.saturating_add(delta as u64);
        }
        Err(i) if pool.tenants.len() < MAX_TENANTS => pool.tenants.insert(
            i,
            TenantShare {
                id: tenant.id.clone(),
                weight: tenant.weight,
                used: 0,
                arrivals: delta as u64,
                prev: 0,
            },
        ),
        Err(_) => {}
    }
    State::Shares(Box::new(pool))
}

/// When a pool's state stops mattering: the end of the window after its own (its arrivals are
/// that window's `prev`).
pub fn expires_at(policy: &Policy, shares: &Shares) -> Micros {
    let secs = policy.period.nominal_secs();
    (shares.start + 2 * secs).saturating_mul(MICROS_PER_SEC)
}

#[cfg(test)]
mod tests;
