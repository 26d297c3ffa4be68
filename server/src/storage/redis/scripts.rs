//! The Lua script behind [`RedisStore::apply`](super::RedisStore): one request, one round trip.
//!
//! **Why a script.** A request's hits must be read, judged together and then charged (or not)
//! without another client changing the counters in between. Redis runs a script to completion
//! before serving anything else, so the read-decide-write sequence is atomic and costs one round
//! trip, whatever mix of algorithms the request touches, where `WATCH`/`MULTI` would need at least
//! two and retries under contention. The store sends `EVALSHA`; the `redis` crate's
//! `Script::invoke_async` answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`) with
//! `SCRIPT LOAD` and a second `EVALSHA`.
//!
//! **Whose clock.** The script reads Redis `TIME`, not the calling server's clock. Every Sluice
//! replica then decides on one clock: a replica whose clock runs ahead cannot make a token bucket
//! refill faster, start a fixed window early or age a sliding window's sub-windows out early, and
//! the TTLs Redis enforces follow the same clock as the windows. (Redis ≥ 5 replicates a script's
//! effects, not the script, so reading `TIME` before writing is allowed.) Tests may pin the time
//! instead (`ARGV[2]`), which is how the differential test drives Redis and the memory store
//! through the same instants; pinned time skips expiry, since TTLs run on Redis's real clock.
//!
//! **KEYS**: the counter key of every hit, in batch order (see [`super::super::keys`]). A key may
//! appear more than once. Every key the script touches is declared.
//!
//! **ARGV**:
//! - `ARGV[1]`: the admission, `A` for all-or-nothing or `C` for charge-all.
//! - `ARGV[2]`: the time in microseconds since the epoch, or empty for Redis `TIME`.
//! - then six values per hit `i` (1-based), starting at `ARGV[3 + 6(i-1)]`: the algorithm (`F`
//!   fixed window, `S` sliding window, `T` token bucket), the period (seconds, or a calendar unit
//!   letter `D`/`W`/`M`/`Y` and a count), `limit`, `burst`, `delta` (signed decimal) and `role`
//!   (`E` enforce, `S` shadow, `Q` quota).
//!
//! **Stored states** (mirroring [`crate::algorithm::State`]): a fixed window is a hash with `w`
//! (window start, seconds) and `n` (count); a sliding window a hash of sub-window index → count;
//! a token bucket a string holding its TAT in microseconds. Each write sets a TTL for when the
//! state stops carrying information ([`crate::algorithm::expires_at`]); correctness never depends
//! on it.
//!
//! **Reply**: an array of `1 + 5 × #KEYS` integers: `1` if the new states were written, else `0`,
//! then per hit its reading: `used_before`, `used_after`, `over` (0/1), `wait` and `reset` (µs).
//!
//! **What it does**, mirroring the memory store rule for rule:
//! 1. Reads each distinct key once. Steps every hit in batch order with the algorithm's function
//!    (a repeated key sees the earlier hits applied).
//! 2. Rejects when an enforced hit is over or when the request has quota hits and every one of
//!    them is over ([`storage::rejects`](super::super::rejects)). Under charge-all it charges
//!    anyway.
//! 3. When charging, writes each changed key's final state once.
//!
//! Numbers travel through Lua's doubles: counts and times are exact integers up to 2^53, which
//! [`crate::algorithm::MAX_UNITS`] and the config's window bound keep them under; the token
//! bucket's fractional arithmetic is done in the same order as in Rust. Numbers are written back as
//! `%.0f` decimal strings, never in Lua's default 14-digit format.

use redis::Script;

use crate::algorithm::{Algorithm, Period};
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

/// A hit's first argument.
pub fn algorithm_arg(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "F",
        Algorithm::SlidingWindow => "S",
        Algorithm::TokenBucket => "T",
    }
}

/// A hit's second argument: `60`, or `M1` for one calendar month.
pub fn period_arg(period: Period) -> String {
    match period {
        Period::Seconds(s) => s.to_string(),
        Period::Calendar(unit, count) => format!("{}{count}", unit.code()),
    }
}

/// A hit's last argument.
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
    use crate::algorithm::calendar::CalendarUnit;

    #[test]
    fn source_matches_the_documented_argument_codes() {
        for code in ["'C'", "'E'", "'Q'", "F = fixed", "S = sliding", "T = gcra"] {
            assert!(APPLY_SOURCE.contains(code), "script lacks {code}");
        }
        assert_eq!(admission_arg(Admission::ChargeAll), "C");
        assert_eq!(role_arg(Role::Enforce), "E");
        assert_eq!(role_arg(Role::Quota), "Q");
        assert_eq!(algorithm_arg(Algorithm::TokenBucket), "T");
        assert_eq!(period_arg(Period::Seconds(60)), "60");
        assert_eq!(period_arg(Period::Calendar(CalendarUnit::Month, 3)), "M3");
        assert!(APPLY_SOURCE.contains("3 + (i - 1) * 6"));
    }
}
