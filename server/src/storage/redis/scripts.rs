//! The Lua script behind [`RedisStore::apply`](super::RedisStore): one request, one round trip.
//!
//! **Why a script.** A request's hits must be read, judged together and then charged (or not)
//! without another client changing the counters in between. Redis runs a script to completion
//! before serving anything else, so the read-decide-write sequence is atomic and costs one round
//! trip, where `WATCH`/`MULTI` would need at least two and retries under contention. The store
//! sends `EVALSHA`; the `redis` crate's `Script::invoke_async` answers `NOSCRIPT` (after a restart
//! or `SCRIPT FLUSH`) with `SCRIPT LOAD` and a second `EVALSHA`.
//!
//! **KEYS**: the counter key of every hit, in batch order (see [`super::super::keys`]). A key may
//! appear more than once.
//!
//! **ARGV**:
//! - `ARGV[1]`: the admission, `A` for all-or-nothing or `C` for charge-all.
//! - then four values per hit `i` (1-based), starting at `ARGV[2 + 4(i-1)]`:
//!   `delta` (signed decimal), `limit`, `ttl_secs` (≥ 1) and `role` (`E` enforce, `S` shadow,
//!   `Q` quota).
//!
//! **Reply**: an array of `1 + #KEYS` integers: `1` if the deltas were applied, else `0`, then
//! each hit's counter before the request.
//!
//! **What it does**, mirroring the memory store and [`storage::rejects`](super::super::rejects)
//! rule for rule:
//! 1. Reads each distinct key once with `GET` (absent or expired reads as 0). A repeated key
//!    sees the earlier hits of the batch applied, in batch order.
//! 2. Rejects when an enforced hit is over (`after > limit`, never for a refund) or when the
//!    request has quota hits and every one of them is over. Under charge-all it charges anyway.
//! 3. When charging, in batch order: a positive delta creates a missing counter with
//!    `SET key delta EX ttl` (so the expiry is set once, at the window's first hit, and never
//!    pushed back) or adds to an existing one with `INCRBY`; a refund subtracts from an existing
//!    counter and floors at zero (`SET key 0 KEEPTTL`, Redis ≥ 6.0), and never creates one; a
//!    zero delta only looks.
//!
//! Counts travel through Lua numbers (doubles), so they are exact up to 2^53: far beyond any
//! real limit. Deltas are written from the caller's decimal strings, never re-formatted by Lua.
//!
//! **Redis Cluster** would require every key of a request in one hash slot (`CROSSSLOT`
//! otherwise), which the key schema does not arrange yet: this store targets a single primary.

use redis::Script;

use crate::storage::{Admission, Role};

/// The script source, kept in its own file so it reads (and lints) as Lua.
const APPLY_SOURCE: &str = include_str!("script.lua");

/// The batch script, with its SHA1 computed once.
pub fn apply_script() -> Script {
    Script::new(APPLY_SOURCE)
}

/// `ARGV[1]`.
pub fn admission_arg(admission: Admission) -> &'static str {
    match admission {
        Admission::AllOrNothing => "A",
        Admission::ChargeAll => "C",
    }
}

/// The last of a hit's four arguments.
pub fn role_arg(role: Role) -> &'static str {
    match role {
        Role::Enforce => "E",
        Role::Shadow => "S",
        Role::Quota => "Q",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_matches_the_documented_argument_codes() {
        for code in ["'C'", "'E'", "'Q'"] {
            assert!(APPLY_SOURCE.contains(code), "script lacks {code}");
        }
        assert_eq!(admission_arg(Admission::ChargeAll), "C");
        assert_eq!(role_arg(Role::Enforce), "E");
        assert_eq!(role_arg(Role::Quota), "Q");
        assert!(APPLY_SOURCE.contains("2 + (i - 1) * 4"));
    }
}
