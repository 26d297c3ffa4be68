//! Token bucket as GCRA: one theoretical arrival time (TAT) per counter.
//!
//! With `T = period / limit` (the time one unit takes to refill) and `τ = burst × T`, the
//! bucket's *debt* at `now` is `max(TAT - now, 0)`: how long until it is full again. A hit of cost
//! `n` fits when `debt + n·T ≤ τ`, and then leaves a debt of `debt + n·T`. An absent counter is a
//! full bucket (no debt). Over the limit, the exact wait is `debt + n·T - τ`.
//!
//! **Arithmetic.** `T` is rarely a whole number of microseconds (7 per second is 142 857.14 µs),
//! so the computation is done in IEEE doubles, in exactly this order of operations in Rust and in
//! the Redis script: both produce the same bits, which the differential property test checks. It
//! works on the debt, not on absolute times, so the numbers stay small and precise (an absolute
//! time in microseconds has only quarter-microsecond resolution as a double). The stored TAT is
//! rounded up to a whole microsecond, so rounding can only make the bucket slightly stricter (at
//! most 1 µs per admitted hit), never let it refill faster. The tokens reported as remaining are
//! counted with the same test that admits hits, so "3 remaining" means exactly three more
//! one-unit hits fit now.

use super::{MICROS_PER_SEC, Micros, Policy, Reading, State, Step};

pub fn step(policy: &Policy, state: &State, now: Micros, delta: i64) -> Step {
    step_as(policy, state, now, delta, false)
}

/// [`step`], except that a hit over the limit still takes its cost: the bucket goes into debt
/// beyond its burst and stays empty until that debt has refilled (see [`super::force`]).
pub fn force(policy: &Policy, state: &State, now: Micros, delta: i64) -> Step {
    step_as(policy, state, now, delta, true)
}

fn step_as(policy: &Policy, state: &State, now: Micros, delta: i64, forced: bool) -> Step {
    let period = policy.period.nominal_secs().saturating_mul(MICROS_PER_SEC);
    let burst = policy.burst;
    let stored = match state {
        State::Tat(t) => Some(*t),
        _ => None,
    };
    let debt = stored.map_or(0, |t| t.saturating_sub(now));

    if policy.limit == 0 {
        // Nothing ever refills: a zero rate admits no cost at all, as a zero limit does in every
        // other algorithm. Asking again makes sense only after a config change; say one period.
        let over = delta > 0;
        return Step {
            reading: Reading {
                used_before: burst,
                used_after: burst,
                capacity: burst,
                over,
                wait: if over { period } else { 0 },
                reset: 0,
                borrowing: false,
            },
            next: state.clone(),
        };
    }

    let t = period as f64 / policy.limit as f64;
    let tau = burst as f64 * t;
    let fits = |debt: Micros, n: u64| debt as f64 + n as f64 * t <= tau;
    // Whole tokens left: the largest k ≤ burst with `fits(debt, k)`. The division gives k or a
    // neighbour of it; the admission test itself settles which.
    let tokens = |debt: Micros| -> u64 {
        let guess = ((tau - debt as f64) / t).floor();
        let k = if guess <= 0.0 {
            0
        } else {
            (guess as u64).min(burst)
        };
        if k < burst && fits(debt, k + 1) {
            k + 1
        } else if k > 0 && !fits(debt, k) {
            k - 1
        } else {
            k
        }
    };
    let used_before = burst - tokens(debt);
    let reading = |used_after, over, wait, reset| Reading {
        used_before,
        used_after,
        capacity: burst,
        over,
        wait,
        reset,
        borrowing: false,
    };

    if delta >= 0 {
        let need = debt as f64 + delta as f64 * t;
        if need > tau {
            let cost = delta as u64;
            // The wait is `need - τ` rounded up; when that difference sits on a whole
            // microsecond, rounding in the doubles can put it one either side, so the admission
            // test itself settles it (as for `tokens`). A cost above the burst never fits.
            let mut wait = (need - tau).ceil() as u64;
            if cost <= burst {
                if wait > 0 && fits(debt.saturating_sub(wait - 1), cost) {
                    wait -= 1;
                } else if !fits(debt.saturating_sub(wait), cost) {
                    wait += 1;
                }
            }
            return Step {
                reading: reading(used_before, true, wait, debt),
                // No debt beyond the bucket: a rejected hit takes nothing, whatever its request's
                // fate. Only reconciliation forces it (hits that were already let through).
                next: if forced {
                    State::Tat(now + need.ceil() as u64)
                } else {
                    state.clone()
                },
            };
        }
        if delta == 0 {
            return Step {
                reading: reading(used_before, false, 0, debt),
                next: state.clone(),
            };
        }
        let new_debt = need.ceil() as u64;
        return Step {
            reading: reading(burst - tokens(new_debt), false, 0, new_debt),
            next: State::Tat(now + new_debt),
        };
    }

    // A refund pays the debt back, never beyond a full bucket, and never creates a counter.
    if stored.is_none() {
        return Step {
            reading: reading(used_before, false, 0, 0),
            next: state.clone(),
        };
    }
    let back = debt as f64 - delta.unsigned_abs() as f64 * t;
    if back <= 0.0 {
        return Step {
            reading: reading(0, false, 0, 0),
            next: State::Empty,
        };
    }
    let new_debt = back.ceil() as u64;
    Step {
        reading: reading(burst - tokens(new_debt), false, 0, new_debt),
        next: State::Tat(now + new_debt),
    }
}
