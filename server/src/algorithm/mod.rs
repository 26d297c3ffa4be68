//! The quota math: how one hit changes one counter, for every algorithm, as pure functions of the
//! counter's [`State`], the time and the hit's delta.
//!
//! Both stores run exactly this: the memory store calls [`step`] under its shard locks, and the
//! Redis script (`storage/backend/redis/script.lua`) mirrors it operation for operation, so the two decide
//! identically (`server/tests/proptest_store_differential.rs` holds them together).
//!
//! Time is microseconds since the Unix epoch, from the caller's clock: the injected
//! [`crate::clock::Clock`] for the memory store, Redis `TIME` for the Redis store (see
//! `storage/backend/redis/scripts.rs` for why).
//!
//! | algorithm | state per counter | bound |
//! |---|---|---|
//! | [`Algorithm::FixedWindow`] | window start and count | `limit` per window; up to 2 × `limit` across a window edge |
//! | [`Algorithm::SlidingWindow`] | up to 21 sub-window counts ([`sliding`]) | `limit` in **any** interval of one window length |
//! | [`Algorithm::TokenBucket`] | one theoretical arrival time ([`gcra`]) | `burst` at once, then `limit` per window |
//! | [`Algorithm::Concurrency`] | the live leases and their expiries ([`lease`]) | `limit` leases held at once, each for at most one period unless renewed |
//! | [`Algorithm::FairShare`] | per tenant: weight, usage, arrivals ([`share`]) | `limit` per window for all tenants together, each guaranteed its weighted share |
//!
//! The last two need to know who a hit is for: a [`Claim`] names the lease or the tenant.
//!
//! **Costs.** A hit's delta is its cost (`hits_addend`): positive to consume, zero to look without
//! consuming, negative to refund. A refund never goes below empty, never rejects and never
//! creates a counter. Counts, limits and deltas stay below [`MAX_UNITS`] (2^53), because the Redis
//! script computes with Lua's doubles, which are exact up to there.
//!
//! Boundary: pure functions of state, time and delta: no I/O, clock or store.

pub mod calendar;
pub mod gcra;
pub mod lease;
pub mod queue;
pub mod share;
pub mod sliding;

/// Microseconds since the Unix epoch, or a span of them.
pub type Micros = u64;

pub const MICROS_PER_SEC: u64 = 1_000_000;

/// The largest count, limit or delta the stores handle exactly (2^53 - 1).
pub const MAX_UNITS: u64 = (1 << 53) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// The reference service's counter: windows aligned to the epoch (or the calendar).
    FixedWindow,
    /// Strict: never more than `limit` in any interval of one window length.
    SlidingWindow,
    /// GCRA: `burst` at once, refilled at `limit` per window.
    TokenBucket,
    /// A pool of `limit` leases, each lasting one period unless renewed or released.
    Concurrency,
    /// `limit` per fixed window, shared by tenants by weight, idle capacity lent out.
    FairShare,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::Concurrency => "concurrency",
            Algorithm::FairShare => "fair_share",
        }
    }

    /// Whether a hit over the limit is still counted when its request is charged anyway (shadow
    /// mode, `--charge-rejected`). Counters record what arrived, as the reference does; a token
    /// bucket never lends tokens it does not have, so an over-limit hit leaves it untouched; nor
    /// does a pool hold more leases than slots or a fair-share pool admit beyond its capacity.
    pub const fn counts_over_limit_hits(self) -> bool {
        matches!(self, Algorithm::FixedWindow | Algorithm::SlidingWindow)
    }
}

/// How long a window is and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A window of this many seconds (≥ 1). Fixed windows start at multiples of it since the epoch.
    Seconds(u64),
    /// `count` (≥ 1) UTC calendar units: fixed windows start at calendar boundaries
    /// ([`calendar`]).
    Calendar(calendar::CalendarUnit, u32),
}

impl Period {
    /// The nominal length in seconds: exact for [`Period::Seconds`]; for calendar periods a day,
    /// week, 30-day month or 365-day year per count (what sliding windows and token buckets use,
    /// and what `w=` in headers shows).
    pub fn nominal_secs(self) -> u64 {
        match self {
            Period::Seconds(s) => s.max(1),
            Period::Calendar(unit, count) => unit.nominal_secs() * u64::from(count.max(1)),
        }
    }

    /// The fixed window containing `now_secs`: `(start, end)` in seconds since the epoch.
    pub fn window_at(self, now_secs: u64) -> (u64, u64) {
        match self {
            Period::Seconds(s) => {
                let s = s.max(1);
                let start = now_secs - now_secs % s;
                (start, start.saturating_add(s))
            }
            Period::Calendar(unit, count) => calendar::window_at(unit, count.max(1), now_secs),
        }
    }
}

/// Everything a store needs to decide one counter, without knowing which rule it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Policy {
    pub algorithm: Algorithm,
    pub period: Period,
    /// Units per period (`requests_per_unit`).
    pub limit: u64,
    /// Token bucket capacity; equal to `limit` for the other algorithms.
    pub burst: u64,
}

impl Policy {
    /// The most units this counter can hold at once: `burst` for a token bucket, `limit` else.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket => self.burst,
            _ => self.limit,
        }
    }
}

/// What one counter holds between requests. [`State::Empty`] is an absent counter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Empty,
    /// Fixed window: `count` units in the window starting at `start` (seconds). A counter from an
    /// earlier window reads as zero, so correctness never depends on expiry.
    Window { start: u64, count: u64 },
    /// Sliding window: non-zero sub-window counts as `(sub-window index, count)`, oldest first.
    Buckets(Vec<(u64, u64)>),
    /// Token bucket: the theoretical arrival time, in microseconds.
    Tat(Micros),
    /// Concurrency pool: its leases, ordered by `(expiry, id)`.
    Leases(Vec<lease::Lease>),
    /// Fair-share pool: the window's usage per tenant.
    Shares(Box<share::Shares>),
}

/// Who a hit is for, where the algorithm needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Claim {
    /// Counters that count units, not owners.
    #[default]
    None,
    /// The lease a concurrency hit takes, renews or releases.
    Lease(lease::LeaseId),
    /// The tenant of a fair-share pool.
    Tenant(share::Tenant),
}

/// What a hit saw and would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Units in use before the hit.
    pub used_before: u64,
    /// Units in use once the hit is applied (what a charged request leaves).
    pub used_after: u64,
    /// [`Policy::capacity`].
    pub capacity: u64,
    /// The hit does not fit: it would reject its request.
    pub over: bool,
    /// When over: how long until this same hit would fit. Zero otherwise.
    pub wait: Micros,
    /// Fair share: the hit asked for more than its tenant's guaranteed share of the window, so it
    /// needed to borrow (a refusal then is the tenant's own demand, not a pool lent out before it
    /// came). False for every other algorithm.
    pub borrowing: bool,
    /// How long until the counter is back to empty once the hit is applied (until the window ends
    /// for a fixed window).
    pub reset: Micros,
}

impl Reading {
    /// Units left for a request that was charged (`charged`) or not.
    pub fn remaining(&self, charged: bool) -> u64 {
        if self.over {
            return 0;
        }
        let used = if charged {
            self.used_after
        } else {
            self.used_before
        };
        self.capacity.saturating_sub(used)
    }
}

/// A hit's reading and the state to store if its request is charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub reading: Reading,
    pub next: State,
}

/// Applies one hit of `delta` units at `now` to a counter in `state`.
///
/// `next` already follows [`Algorithm::counts_over_limit_hits`]: it is what a charged request
/// stores, whether or not this hit was over. A state of another algorithm's shape (a rule changed
/// algorithm between requests) reads as empty.
pub fn step(policy: &Policy, state: &State, now: Micros, delta: i64) -> Step {
    step_with(policy, state, now, delta, &Claim::None)
}

/// [`step`] for a hit that names its lease or tenant. A concurrency hit without a lease only
/// looks (or, negative, releases the whole pool); a fair-share hit without a tenant counts for
/// the tenant with an empty id, at weight 0.
pub fn step_with(policy: &Policy, state: &State, now: Micros, delta: i64, claim: &Claim) -> Step {
    let delta = clamp_delta(delta);
    match policy.algorithm {
        Algorithm::FixedWindow => fixed(policy, state, now, delta),
        Algorithm::SlidingWindow => sliding::step(policy, state, now, delta),
        Algorithm::TokenBucket => gcra::step(policy, state, now, delta),
        Algorithm::Concurrency => {
            let id = match claim {
                Claim::Lease(id) => Some(id),
                _ => None,
            };
            lease::step(policy, state, now, delta, id)
        }
        Algorithm::FairShare => match claim {
            Claim::Tenant(t) => share::step(policy, state, now, delta, t),
            _ => share::step(policy, state, now, delta, &UNTRACKED),
        },
    }
}

/// [`step_with`] for hits that were already let through elsewhere and must now be counted whatever
/// the counter says (reconciling the hits a replica admitted from its local share during a store
/// outage): identical to [`step_with`], except that a token bucket hit over the limit still takes
/// its cost and leaves the bucket in debt beyond its burst. Fixed and sliding windows already
/// count over-limit hits in a charged request ([`Algorithm::counts_over_limit_hits`]).
pub fn force(policy: &Policy, state: &State, now: Micros, delta: i64, claim: &Claim) -> Step {
    match policy.algorithm {
        Algorithm::TokenBucket => gcra::force(policy, state, now, clamp_delta(delta)),
        _ => step_with(policy, state, now, delta, claim),
    }
}

/// The state a hit leaves when its batch is rejected and not charged: unchanged, except that a
/// fair-share pool records the arrival (refused demand is still demand).
pub fn uncharged(policy: &Policy, state: &State, now: Micros, delta: i64, claim: &Claim) -> State {
    match (policy.algorithm, claim) {
        (Algorithm::FairShare, Claim::Tenant(t)) => {
            share::arrival(policy, state, now, clamp_delta(delta), t)
        }
        _ => state.clone(),
    }
}

/// The tenant of a fair-share hit that names none: guaranteed nothing.
static UNTRACKED: share::Tenant = share::Tenant {
    id: Vec::new(),
    weight: 0,
};

/// When `state` stops carrying information, so a store may drop it: the end of a fixed window,
/// the moment a sliding window's newest sub-window leaves it, a token bucket's refill time.
pub fn expires_at(policy: &Policy, state: &State) -> Option<Micros> {
    match state {
        State::Empty => None,
        State::Window { start, .. } => {
            let (_, end) = policy.period.window_at(*start);
            Some(end.saturating_mul(MICROS_PER_SEC))
        }
        State::Buckets(b) => b.last().map(|&(i, _)| sliding::leaves_at(policy, i)),
        State::Tat(t) => Some(*t),
        // One TTL past the last expiry, so the next operation on the pool sees (and reports) the
        // leases it reclaims.
        State::Leases(l) => l
            .last()
            .map(|l| l.expires_at.saturating_add(lease::ttl(policy))),
        State::Shares(s) => Some(share::expires_at(policy, s)),
    }
}

/// Deltas beyond [`MAX_UNITS`] are capped there (an absurd cost still rejects, a huge refund
/// still empties).
pub fn clamp_delta(delta: i64) -> i64 {
    const MAX: i64 = MAX_UNITS as i64;
    delta.clamp(-MAX, MAX)
}

fn fixed(policy: &Policy, state: &State, now: Micros, delta: i64) -> Step {
    let (start, end) = policy.period.window_at(now / MICROS_PER_SEC);
    let until_end = end.saturating_mul(MICROS_PER_SEC).saturating_sub(now);
    let before = match state {
        State::Window { start: s, count } if *s == start => *count,
        _ => 0,
    };
    let (over, after) = if delta >= 0 {
        let after = before.saturating_add(delta as u64);
        (after > policy.limit, after)
    } else {
        (false, before.saturating_sub(delta.unsigned_abs()))
    };
    let next = if delta == 0 || (delta < 0 && before == 0) {
        // Looking changes nothing; a refund never creates a counter.
        state.clone()
    } else {
        State::Window {
            start,
            count: after,
        }
    };
    Step {
        reading: Reading {
            used_before: before,
            used_after: after,
            capacity: policy.limit,
            over,
            wait: if over { until_end } else { 0 },
            reset: until_end,
            borrowing: false,
        },
        next,
    }
}

#[cfg(test)]
mod tests;
