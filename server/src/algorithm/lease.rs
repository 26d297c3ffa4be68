//! Concurrency leases: a pool of at most `limit` slots, each held by one lease until it is
//! released or its TTL (the policy's period) runs out.
//!
//! A lease is identified by a [`LeaseId`] the server generates (128 random bits: holding the id
//! is what entitles a client to renew or release it). A pool's state is its leases with their
//! expiry instants, ordered by `(expiry, id)`; a lease whose expiry has passed no longer counts,
//! whether or not anyone released it, so a client that vanished gives its slot back after one TTL.
//!
//! One hit on a pool, with the lease id it carries ([`crate::algorithm::Claim::Lease`]):
//!
//! | delta | id held | effect | over |
//! |---|---|---|---|
//! | > 0 | no | acquire: a new lease expiring in one TTL | when every slot is taken |
//! | > 0 | yes | renew: the lease now expires in one TTL | never |
//! | 0 | – | look | when more leases are live than slots (after a capacity cut) |
//! | < 0 | yes | release | never |
//! | < 0 | no | nothing | never |
//!
//! A lease is one slot whatever the hit's cost. Without a lease id a positive hit only looks, and
//! a negative one releases every lease of the pool (the admin API's reset; requests cannot send it,
//! see `limiter::lease`). An over-limit acquire takes nothing, whatever its request's fate: a pool
//! never holds more than its slots.
//!
//! **Wait.** When every slot is taken, the wait is until enough leases expire for one more to fit
//! (the soonest expiry when the pool is exactly full). A release can come sooner; clients that
//! wait poll (the HTTP acquire API does it for them). A pool of 0 slots answers one TTL.
//!
//! **Reset** is when the pool will be empty: its latest expiry.
//!
//! The Redis script keeps a pool as a sorted set (member: the id in hex, score: the expiry), which
//! orders leases exactly as this module does.

use super::{MICROS_PER_SEC, Micros, Policy, Reading, State, Step};

/// A lease's identity: 128 bits from the operating system's random source.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub [u8; 16]);

impl LeaseId {
    /// A fresh, unguessable id.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Parses the 32 lower-case hex digits [`Display`](std::fmt::Display) writes.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.as_bytes();
        if digits.len() != 32 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut bytes = [0u8; 16];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            bytes[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LeaseId({self})")
    }
}

/// One held slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lease {
    /// Microseconds since the epoch; the lease stops counting at this instant.
    pub expires_at: Micros,
    pub id: LeaseId,
}

/// How long a lease lasts: the policy's period.
pub fn ttl(policy: &Policy) -> Micros {
    policy.period.nominal_secs().saturating_mul(MICROS_PER_SEC)
}

/// The leases of `state` still live at `now`, in `(expiry, id)` order.
pub fn live(state: &State, now: Micros) -> &[Lease] {
    match state {
        State::Leases(all) => {
            let first_live = all.partition_point(|l| l.expires_at <= now);
            &all[first_live..]
        }
        _ => &[],
    }
}

/// Leases of `state` that have expired at `now` but are still stored: what a write reclaims.
pub fn expired(state: &State, now: Micros) -> usize {
    match state {
        State::Leases(all) => all.partition_point(|l| l.expires_at <= now),
        _ => 0,
    }
}

pub fn step(policy: &Policy, state: &State, now: Micros, delta: i64, id: Option<&LeaseId>) -> Step {
    let slots = policy.limit;
    let live = live(state, now);
    let held = id.and_then(|id| live.iter().position(|l| l.id == *id));
    let used_before = live.len() as u64;
    let reset_of = |leases: &[Lease]| leases.last().map_or(0, |l| l.expires_at - now);
    let reading = |used_after, over, wait, reset| Reading {
        used_before,
        used_after,
        capacity: slots,
        over,
        wait,
        reset,
        borrowing: false,
    };
    let unchanged = |over, wait| Step {
        reading: reading(used_before, over, wait, reset_of(live)),
        next: state.clone(),
    };

    match (delta.signum(), id, held) {
        // A look, or an acquire without an id: nothing to hold.
        (0, ..) | (1, None, _) => unchanged(used_before > slots, 0),
        (1, Some(_), Some(i)) => {
            let mut next = live.to_vec();
            next[i].expires_at = now + ttl(policy);
            next.sort_unstable();
            let reset = reset_of(&next);
            Step {
                reading: reading(used_before, false, 0, reset),
                next: State::Leases(next),
            }
        }
        (1, Some(id), None) => {
            if used_before + 1 > slots {
                return unchanged(true, wait(policy, live, slots, now));
            }
            let mut next = Vec::with_capacity(live.len() + 1);
            next.extend_from_slice(live);
            next.push(Lease {
                expires_at: now + ttl(policy),
                id: *id,
            });
            next.sort_unstable();
            let reset = reset_of(&next);
            Step {
                reading: reading(used_before + 1, false, 0, reset),
                next: State::Leases(next),
            }
        }
        (_, Some(_), held) => {
            let mut next = live.to_vec();
            if let Some(i) = held {
                next.remove(i);
            }
            let reset = reset_of(&next);
            Step {
                reading: reading(next.len() as u64, false, 0, reset),
                next: if next.is_empty() {
                    State::Empty
                } else {
                    State::Leases(next)
                },
            }
        }
        // Release everything (admin reset).
        (_, None, _) => Step {
            reading: reading(0, false, 0, 0),
            next: State::Empty,
        },
    }
}

/// How long until one more lease fits in a full pool: until `live - slots + 1` leases expired.
fn wait(policy: &Policy, live: &[Lease], slots: u64, now: Micros) -> Micros {
    if slots == 0 {
        return ttl(policy);
    }
    let must_leave = live.len() as u64 + 1 - slots;
    live.get(must_leave as usize - 1)
        .map_or(0, |l| l.expires_at - now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, Period};

    const SEC: Micros = MICROS_PER_SEC;
    const T0: Micros = 1_700_000_000 * SEC;

    fn pool(slots: u64, ttl_secs: u64) -> Policy {
        Policy {
            algorithm: Algorithm::Concurrency,
            period: Period::Seconds(ttl_secs),
            limit: slots,
            burst: slots,
        }
    }

    fn id(n: u8) -> LeaseId {
        LeaseId([n; 16])
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = LeaseId([0xab; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(LeaseId::parse(&id.to_string()), Some(id));
        assert_eq!(LeaseId::parse(&"AB".repeat(16)), None, "lower case only");
        assert_eq!(LeaseId::parse("abc"), None);
        assert_eq!(LeaseId::parse(&"zz".repeat(16)), None);
        let a = LeaseId::generate().unwrap();
        assert_ne!(a, LeaseId::generate().unwrap());
    }

    #[test]
    fn acquire_until_full_then_wait_for_the_soonest_expiry() {
        let p = pool(2, 60);
        let a = step(&p, &State::Empty, T0, 1, Some(&id(1)));
        assert!(!a.reading.over);
        assert_eq!((a.reading.used_before, a.reading.used_after), (0, 1));
        let b = step(&p, &a.next, T0 + 10 * SEC, 1, Some(&id(2)));
        assert_eq!(b.reading.used_after, 2);
        assert_eq!(b.reading.reset, 60 * SEC);
        let c = step(&p, &b.next, T0 + 20 * SEC, 1, Some(&id(3)));
        assert!(c.reading.over);
        assert_eq!(c.next, b.next, "an over-limit acquire takes nothing");
        assert_eq!(
            c.reading.wait,
            40 * SEC,
            "the first lease expires at T0 + 60 s"
        );
        // Once it expired, its slot is free without anyone releasing it.
        let d = step(&p, &b.next, T0 + 60 * SEC, 1, Some(&id(3)));
        assert!(!d.reading.over);
        assert_eq!(d.reading.used_before, 1);
        assert_eq!(expired(&b.next, T0 + 60 * SEC), 1);
        assert_eq!(expired(&d.next, T0 + 60 * SEC), 0, "the write dropped it");
    }

    #[test]
    fn renew_extends_and_never_rejects() {
        let p = pool(1, 30);
        let a = step(&p, &State::Empty, T0, 1, Some(&id(1))).next;
        let r = step(&p, &a, T0 + 29 * SEC, 1, Some(&id(1)));
        assert!(!r.reading.over);
        assert_eq!(r.reading.used_after, 1);
        assert_eq!(r.reading.reset, 30 * SEC);
        assert_eq!(live(&r.next, T0 + 58 * SEC).len(), 1);
        // Renewing a lease that expired acquires it again when a slot is free.
        let again = step(&p, &a, T0 + 31 * SEC, 1, Some(&id(1)));
        assert_eq!(
            (again.reading.used_before, again.reading.used_after),
            (0, 1)
        );
    }

    #[test]
    fn release_frees_the_slot_and_is_idempotent() {
        let p = pool(1, 60);
        let a = step(&p, &State::Empty, T0, 1, Some(&id(1))).next;
        let r = step(&p, &a, T0 + SEC, -1, Some(&id(1)));
        assert_eq!((r.reading.used_before, r.reading.used_after), (1, 0));
        assert_eq!(r.next, State::Empty);
        let again = step(&p, &r.next, T0 + SEC, -1, Some(&id(1)));
        assert_eq!(again.reading.used_after, 0);
        let stranger = step(&p, &a, T0 + SEC, -1, Some(&id(9)));
        assert_eq!(
            stranger.reading.used_after, 1,
            "only the holder's id releases"
        );
    }

    #[test]
    fn wait_counts_the_leases_that_must_leave_after_a_capacity_cut() {
        let big = pool(3, 60);
        let mut s = State::Empty;
        for (n, at) in [(1, 0), (2, 5), (3, 10)] {
            s = step(&big, &s, T0 + at * SEC, 1, Some(&id(n))).next;
        }
        // The pool shrank to one slot: all three leases must expire before another fits.
        let small = pool(1, 60);
        let over = step(&small, &s, T0 + 20 * SEC, 1, Some(&id(9)));
        assert!(over.reading.over);
        assert_eq!(over.reading.wait, 50 * SEC);
        // With two slots, two of them.
        let two = step(&pool(2, 60), &s, T0 + 20 * SEC, 1, Some(&id(9)));
        assert_eq!(two.reading.wait, 45 * SEC);
        assert!(step(&small, &s, T0 + 20 * SEC, 0, None).reading.over);
        let zero = step(&pool(0, 7), &State::Empty, T0, 1, Some(&id(1)));
        assert!(zero.reading.over);
        assert_eq!(zero.reading.wait, 7 * SEC);
    }

    #[test]
    fn looks_and_anonymous_hits() {
        let p = pool(2, 60);
        let a = step(&p, &State::Empty, T0, 1, Some(&id(1))).next;
        let look = step(&p, &a, T0, 0, Some(&id(2)));
        assert_eq!(look.next, a);
        assert_eq!(look.reading.remaining(true), 1);
        assert_eq!(step(&p, &a, T0, 1, None).next, a, "no id, no lease");
        let all = step(&p, &a, T0, -1, None);
        assert_eq!(all.next, State::Empty);
        assert_eq!(all.reading.used_after, 0);
    }
}
