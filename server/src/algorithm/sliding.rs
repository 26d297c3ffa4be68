//! Strict sliding window, counted in sub-windows.
//!
//! The window of length `W` is cut into [`SUB_WINDOWS`] sub-windows of `W / 20`. A counter keeps
//! the units admitted in each sub-window it saw. A hit at `now` counts every sub-window that
//! overlaps `(now - W, now]`: the current one, the 19 before it and the one holding `now - W`,
//! which is counted whole although only part of it lies in the window.
//!
//! **Bound.** Counting that oldest sub-window whole is what makes the limit strict: for any
//! interval of length `W`, the last hit admitted in it counted every earlier hit of the interval,
//! so no interval ever holds more than `limit` units. There is no edge burst.
//!
//! **Precision.** The price is that hits up to `W / 20` older than the window still count. At a
//! steady rate the window admits at least `limit × 20 / 21` (95.2 %) per window length, so evenly
//! spaced traffic at up to 95 % of the limit is never rejected (at 90 % there is margin for
//! jitter). Waits are exact for this representation: an over-limit answer says when enough old
//! sub-windows leave for the hit to fit.
//!
//! **Memory.** At most 21 `(index, count)` pairs per counter: 336 bytes in the memory store at
//! worst, and a Redis hash of at most 21 small fields (listpack-encoded, well under 1 KB).

use super::{MICROS_PER_SEC, Micros, Policy, Reading, State, Step};

/// Sub-windows per window.
pub const SUB_WINDOWS: u64 = 20;

/// The length of one sub-window: a whole number of microseconds, since windows are whole seconds.
pub fn width(policy: &Policy) -> Micros {
    policy.period.nominal_secs().saturating_mul(MICROS_PER_SEC) / SUB_WINDOWS
}

/// When sub-window `index` stops being counted.
pub fn leaves_at(policy: &Policy, index: u64) -> Micros {
    (index + SUB_WINDOWS + 1).saturating_mul(width(policy))
}

pub fn step(policy: &Policy, state: &State, now: Micros, delta: i64) -> Step {
    let current = now / width(policy);
    let oldest = current.saturating_sub(SUB_WINDOWS);
    // Sub-windows past `current` can only come from a clock that stepped back; they still count.
    let mut live: Vec<(u64, u64)> = match state {
        State::Buckets(b) => b.iter().copied().filter(|&(i, _)| i >= oldest).collect(),
        _ => Vec::new(),
    };
    let used_before: u64 = live.iter().map(|&(_, c)| c).sum();
    let reset_of = |buckets: &[(u64, u64)]| {
        buckets
            .last()
            .map_or(0, |&(i, _)| leaves_at(policy, i).saturating_sub(now))
    };

    if delta >= 0 {
        let used_after = used_before.saturating_add(delta as u64);
        let over = used_after > policy.limit;
        let wait = if over {
            wait(policy, &live, current, used_after - policy.limit, now)
        } else {
            0
        };
        if delta == 0 {
            return Step {
                reading: Reading {
                    used_before,
                    used_after,
                    capacity: policy.limit,
                    over,
                    wait,
                    reset: reset_of(&live),
                    borrowing: false,
                },
                next: state.clone(),
            };
        }
        match live.iter_mut().find(|(i, _)| *i == current) {
            Some((_, c)) => *c = c.saturating_add(delta as u64),
            None => {
                let at = live.partition_point(|&(i, _)| i < current);
                live.insert(at, (current, delta as u64));
            }
        }
        return Step {
            reading: Reading {
                used_before,
                used_after,
                capacity: policy.limit,
                over,
                wait,
                reset: reset_of(&live),
                borrowing: false,
            },
            next: State::Buckets(live),
        };
    }

    // A refund gives back the newest units first (usually the request's own), never creates a
    // counter and never goes below zero. "Newest" means at or before `now` first: with the real
    // clock nothing is newer, and an undo stepped at its charge's time (`Admission::Undo`) then
    // takes back exactly the sub-window it charged, not a later one holding other requests'
    // units.
    if live.is_empty() {
        return Step {
            reading: Reading {
                used_before: 0,
                used_after: 0,
                capacity: policy.limit,
                over: false,
                wait: 0,
                reset: 0,
                borrowing: false,
            },
            next: state.clone(),
        };
    }
    let mut left = delta.unsigned_abs();
    let upto = live.partition_point(|&(i, _)| i <= current);
    let (past, later) = live.split_at_mut(upto);
    for (_, c) in past.iter_mut().rev().chain(later.iter_mut()) {
        let take = left.min(*c);
        *c -= take;
        left -= take;
    }
    live.retain(|&(_, c)| c > 0);
    Step {
        reading: Reading {
            used_before,
            used_after: live.iter().map(|&(_, c)| c).sum(),
            capacity: policy.limit,
            over: false,
            wait: 0,
            reset: reset_of(&live),
            borrowing: false,
        },
        next: if live.is_empty() {
            State::Empty
        } else {
            State::Buckets(live)
        },
    }
}

/// How long until `excess` units have left the window, oldest sub-window first. A hit larger than
/// the whole limit never fits; the answer is then when everything counted now has left.
fn wait(policy: &Policy, live: &[(u64, u64)], current: u64, excess: u64, now: Micros) -> Micros {
    let mut freed = 0u64;
    for &(i, c) in live {
        freed = freed.saturating_add(c);
        if freed >= excess {
            return leaves_at(policy, i).saturating_sub(now);
        }
    }
    let newest = live.last().map_or(current, |&(i, _)| i.max(current));
    leaves_at(policy, newest).saturating_sub(now)
}
