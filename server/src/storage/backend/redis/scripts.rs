//! The Lua script behind [`RedisStore::apply`](super::RedisStore): one round trip per request,
//! or per batch of concurrent requests.
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
//! **Requests.** One call carries one or more requests ([`super::batcher`] sends the requests
//! that queued while Redis was busy together). The script decides them in order, each on its own
//! exactly as if it were its own call: reads, judges and writes one request before reading the
//! next, so a later request sees the earlier ones' writes. Redis `TIME` is read once per call.
//!
//! **KEYS**: the counter key of every hit, request after request, each request's in batch order
//! (see [`crate::storage::keys`]). A key may appear more than once. Every key the script touches is
//! declared, except in the Cluster node variant ([`super::nodes`]): it declares none and takes
//! `ARGV[1]` (the number of keys) and the keys ahead of the arguments below, so one call can carry
//! requests of several slots of one node; it then decides each request under `pcall` so a request
//! whose slot the node no longer serves is answered `{-1}` (nothing written) and sent again.
//!
//! **ARGV**, per request in the same order, three values and then seven per hit:
//! - the admission, `A` for all-or-nothing, `C` for charge-all, `R` for reconcile (charge-all,
//!   token buckets forced into debt) or `U` and a time in µs for an undo (the hits, refunds, are
//!   stepped at that time; liveness and expiry follow the clock);
//! - the time in microseconds since the epoch, or empty for Redis `TIME`;
//! - the request's number of hits;
//! - then per hit `i` (1-based) of the request: the algorithm (`F`
//!   fixed window, `S` sliding window, `T` token bucket, `L` concurrency pool, `P` fair-share
//!   pool), the period (seconds, or a calendar unit letter `D`/`W`/`M`/`Y` and a count), `limit`,
//!   `burst`, `delta` (signed decimal), `role` (`E` enforce, `S` shadow, `Q` quota, `O` and a hit
//!   number of the same request for the overflow of that hit) and the claim (empty, `L` and a
//!   lease id in hex, or `T`, the tenant's weight, `:` and the tenant id).
//! - or, for the commonest request, a [`Compact`] form in place of the number of hits and the
//!   hit's seven values: `F` (fixed window), `T` (token bucket) or `S` (sliding window), the
//!   period in seconds, the limit, for `T` the burst, and the delta.
//!
//! **Stored states** (mirroring [`crate::algorithm::State`]): a fixed window is a hash with `w`
//! (window start, seconds) and `n` (count); a sliding window a hash of sub-window index → count;
//! a token bucket a string holding its TAT in microseconds; a concurrency pool a sorted set of
//! lease ids scored by expiry (µs); a fair-share pool a hash with `s` (window start), `n` (units
//! admitted) and, per tenant, `t<id>` → `weight,used,arrivals,prev`. Each write sets a TTL for
//! when the state stops carrying information ([`crate::algorithm::expires_at`]); correctness
//! never depends on it. Redis counts every command a script runs, so the common writes use as few
//! as they can: a fixed window still in its loaded window writes its count alone and keeps its
//! TTL (`HMGET`, `HSET` per request, `TIME` per call), and a token bucket sets its TAT and TTL in
//! one `SET`.
//!
//! **Reply**: an array with one entry per request, each an array of `3 + 6 × hits` integers: `1`
//! if the request's new states were written, else `0`; the expired leases its writes reclaimed;
//! then per hit its reading: `used_before`, `used_after`, `over` (0/1), `wait` and `reset` (µs) and
//! `borrowing` (0/1);
//! then the time its hits were stepped at (µs), which an undo of this charge needs. A compact
//! request's entry is three integers: `1` if written, the counter's state as read (a fixed
//! window's count in the current window, a token bucket's TAT; `0` for none) and the time; for a
//! sliding window five: `1` if written, `used_before`, `wait`, `reset` and the time.
//!
//! **What it does**, mirroring the memory store rule for rule:
//! 1. Reads each distinct key once. Steps every hit in batch order with the algorithm's function
//!    (a repeated key sees the earlier hits applied).
//! 2. Rejects when an enforced hit is over (and not rescued by its overflow) or when the request
//!    has quota hits and every one of them is over ([`storage::rejects`](crate::storage::rejects)).
//!    Under charge-all it charges anyway.
//! 3. When charging, writes each changed key's final state once ([`storage::writes`](crate::storage::Verdict::writes)
//!    says which hits write); when not, records fair-share arrivals.
//!
//! (The queue operations of pools run a script of their own, `queue.lua` after `script.lua` and
//! `pools.lua`, documented in [`super::queue`].)
//!
//! The source is six files, concatenated: `clock.lua` (the clock and the request being decided),
//! `compact.lua` (the compact forms), then inside a function made only when a call carries a
//! general request, `script.lua` (calendar, the counter algorithms), `pools.lua` (leases and fair
//! share) and `batch.lua` (loading, deciding, storing), and last `requests.lua` (the loop over the
//! call's requests).
//!
//! Numbers travel through Lua's doubles: counts and times are exact integers up to 2^53, which
//! [`crate::algorithm::MAX_UNITS`] and the config's window bound keep them under; the token
//! bucket's fractional arithmetic is done in the same order as in Rust. Numbers are written back as
//! `%.0f` decimal strings, never in Lua's default 14-digit format.

use redis::Script;

use super::batcher::Part;
use crate::algorithm::{
    self, Algorithm, Claim, MAX_UNITS, MICROS_PER_SEC, Micros, Period, Policy, Reading, State,
};
use crate::storage::{Admission, Hit, Outcome, Role, StoreError};

/// The batch script after its prologue: the clock, the compact forms, the general form (its
/// functions made inside `general`, only when a call carries a general request: Redis runs a
/// script's whole body on every call, and making some fifty functions costs it about 5 µs) and
/// the loop over the call's requests.
macro_rules! apply_body {
    () => {
        concat!(
            include_str!("clock.lua"),
            include_str!("compact.lua"),
            "local function general()\n",
            include_str!("script.lua"),
            include_str!("pools.lua"),
            include_str!("batch.lua"),
            "return decide\nend\n",
            include_str!("requests.lua")
        )
    };
}

/// The script source, kept in its own files so it reads (and lints) as Lua, after a prologue
/// saying where the keys and arguments start: a request's keys are `KEYS[FIRST_KEY + 1]` on.
const APPLY_SOURCE: &str = concat!(
    "local FIRST_KEY, FIRST_ARG, GUARDED = 0, 1, false\n",
    apply_body!()
);

/// The same script for a whole Redis Cluster node ([`super::nodes`]): it declares no keys, so
/// requests of every slot the node serves can share a call, and reads them from `ARGV` instead:
/// `ARGV[1]` the number of keys, then the keys, then the arguments as above. The flag lets one
/// script touch several slots (Redis 7); every key must still be served by the node, which
/// `GUARDED` checks request by request (see `batch.lua`).
pub(super) const NODE_SOURCE: &str = concat!(
    "#!lua flags=allow-cross-slot-keys\n",
    "local KEYS, FIRST_KEY, FIRST_ARG, GUARDED = ARGV, 1, tonumber(ARGV[1]) + 2, true\n",
    apply_body!()
);

/// Lists a pool's live leases: `KEYS[1]` the pool, `ARGV[1]` the time in µs (empty for Redis
/// `TIME`, as for the batch script); replies member, score, member, score, ...
const HOLDERS_SOURCE: &str = "local now = tonumber(ARGV[1]) \
    if not now then local t = redis.call('TIME') now = tonumber(t[1]) * 1000000 + tonumber(t[2]) end \
    return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.0f', now), '+inf', 'WITHSCORES')";

/// The holders script.
pub fn holders_script() -> Script {
    Script::new(HOLDERS_SOURCE)
}

/// The batch script, with its SHA1 computed once.
pub fn apply_script() -> Script {
    Script::new(APPLY_SOURCE)
}

/// The batch script for a Cluster node (keys in `ARGV`).
pub fn node_script() -> Script {
    Script::new(NODE_SOURCE)
}

/// `ARGV[1]`.
pub fn admission_arg(admission: Admission) -> std::borrow::Cow<'static, str> {
    match admission {
        Admission::AllOrNothing => "A".into(),
        Admission::ChargeAll => "C".into(),
        Admission::Reconcile => "R".into(),
        Admission::Undo { at } => format!("U{at}").into(),
        Admission::DryRun => "D".into(),
    }
}

/// The compact forms of a request (`batch.lua`'s `decide_fixed`, `decide_bucket` and
/// `decide_sliding`): one enforced hit on a fixed window, a token bucket or a sliding window whose
/// period is in seconds, without a claim, all-or-nothing or dry, spending zero or more units. That
/// is every request of a rule set like envoyproxy/ratelimit's with one descriptor per request, and
/// it costs Redis about a third less than the general form: four or five arguments instead of
/// ten, a reply of three to five numbers instead of nine, and none of the general form's Lua
/// tables. For a fixed window and a token bucket the script replies whether it charged, the
/// counter's state as it read it and the time, and [`parse_reply`] steps that state with
/// [`algorithm::step`] for the reading, so the reading comes from the same code as the memory
/// store's; a sliding window's state is a list, so its script replies the reading's wait and reset
/// itself. Either way the script's decision must be the one the reading makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compact {
    /// `F`, then the period, the limit and the delta.
    Fixed,
    /// `T`, then the period, the limit, the burst and the delta.
    Bucket,
    /// `S`, then the period, the limit and the delta.
    Sliding,
}

impl Compact {
    /// The form `hits` can travel in under `admission`, if any.
    pub fn of(hits: &[Hit], admission: Admission) -> Option<Compact> {
        let [hit] = hits else { return None };
        let simple = matches!(admission, Admission::AllOrNothing | Admission::DryRun)
            && hit.role == Role::Enforce
            && hit.claim == Claim::None
            && hit.delta >= 0
            && matches!(hit.policy.period, Period::Seconds(_));
        match hit.policy.algorithm {
            Algorithm::FixedWindow if simple => Some(Compact::Fixed),
            Algorithm::TokenBucket if simple => Some(Compact::Bucket),
            Algorithm::SlidingWindow if simple => Some(Compact::Sliding),
            _ => None,
        }
    }
}

/// A hit's policy as the script is sent it: limit and burst capped at [`MAX_UNITS`].
fn sent(policy: &Policy) -> Policy {
    Policy {
        limit: policy.limit.min(MAX_UNITS),
        burst: policy.burst.min(MAX_UNITS),
        ..*policy
    }
}

/// Encodes one request into `part`: its keys, then its admission, its time (`None` for Redis
/// `TIME`), and its number of hits and seven arguments per hit, or its [`Compact`] form.
pub fn encode(part: &mut Part, hits: &[Hit], admission: Admission, time: Option<Micros>) {
    part.arg(&*admission_arg(admission));
    match time {
        Some(t) => part.arg(t),
        None => part.arg(""),
    };
    if let Some(form) = Compact::of(hits, admission) {
        let hit = &hits[0];
        let p = sent(&hit.policy);
        part.key(&hit.key[..])
            .arg(algorithm_arg(p.algorithm))
            .arg(period_arg(p.period))
            .arg(p.limit);
        if form == Compact::Bucket {
            part.arg(p.burst);
        }
        part.arg(algorithm::clamp_delta(hit.delta));
        return;
    }
    part.arg(hits.len());
    for hit in hits {
        let p = sent(&hit.policy);
        part.key(&hit.key[..])
            .arg(algorithm_arg(p.algorithm))
            .arg(period_arg(p.period))
            .arg(p.limit)
            .arg(p.burst)
            .arg(algorithm::clamp_delta(hit.delta))
            .arg(&*role_arg(hit.role))
            .arg(claim_arg(&hit.claim));
    }
}

fn unsigned(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Protocol("negative number in script reply".into()))
}

/// Reads the script's reply for `hits` sent under `admission`: the outcome, the expired leases
/// the writes reclaimed, and the time (µs) the hits were stepped at.
pub fn parse_reply(
    hits: &[Hit],
    admission: Admission,
    reply: &[i64],
) -> Result<(Outcome, u64, Micros), StoreError> {
    if let Some(form) = Compact::of(hits, admission) {
        return parse_compact(form, &hits[0], admission, reply);
    }
    let [charged, reclaimed, values @ .., at] = reply else {
        return Err(StoreError::Protocol("short script reply".into()));
    };
    if values.len() != hits.len() * 6 {
        return Err(StoreError::Protocol(format!(
            "script returned {} values for {} hits",
            values.len(),
            hits.len()
        )));
    }
    let readings = hits
        .iter()
        .zip(values.chunks_exact(6))
        .map(|(hit, v)| {
            Ok(Reading {
                used_before: unsigned(v[0])?,
                used_after: unsigned(v[1])?,
                capacity: hit.policy.capacity(),
                over: v[2] != 0,
                wait: unsigned(v[3])?,
                reset: unsigned(v[4])?,
                borrowing: v[5] != 0,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let outcome = Outcome {
        readings,
        charged: *charged != 0,
    };
    Ok((outcome, unsigned(*reclaimed)?, unsigned(*at)?))
}

/// A compact form's reply: `{ charged, state as loaded, time }`, or for a sliding window
/// `{ charged, used_before, wait, reset, time }`. The script's decision must be the reading's.
fn parse_compact(
    form: Compact,
    hit: &Hit,
    admission: Admission,
    reply: &[i64],
) -> Result<(Outcome, u64, Micros), StoreError> {
    let policy = sent(&hit.policy);
    let delta = algorithm::clamp_delta(hit.delta);
    let (charged, mut reading, at) = match (form, reply) {
        (Compact::Sliding, &[charged, used_before, wait, reset, at]) => {
            let used_before = unsigned(used_before)?;
            let used_after = used_before.saturating_add(delta.unsigned_abs());
            let reading = Reading {
                used_before,
                used_after,
                capacity: 0,
                over: used_after > policy.limit,
                wait: unsigned(wait)?,
                reset: unsigned(reset)?,
                borrowing: false,
            };
            (charged, reading, unsigned(at)?)
        }
        (Compact::Fixed | Compact::Bucket, &[charged, loaded, at]) => {
            let (loaded, at) = (unsigned(loaded)?, unsigned(at)?);
            let state = match (form, loaded) {
                (_, 0) => State::Empty,
                (Compact::Fixed, count) => State::Window {
                    start: policy.period.window_at(at / MICROS_PER_SEC).0,
                    count,
                },
                (_, tat) => State::Tat(tat),
            };
            (
                charged,
                algorithm::step(&policy, &state, at, delta).reading,
                at,
            )
        }
        _ => {
            return Err(StoreError::Protocol(format!(
                "compact script reply of {} values",
                reply.len()
            )));
        }
    };
    reading.capacity = hit.policy.capacity();
    let decided = !reading.over && admission != Admission::DryRun;
    if decided != (charged != 0) {
        return Err(StoreError::Protocol(format!(
            "the script {} a request the algorithm {}",
            if charged != 0 { "charged" } else { "refused" },
            if decided { "admits" } else { "refuses" }
        )));
    }
    let outcome = Outcome {
        readings: vec![reading],
        charged: decided,
    };
    Ok((outcome, 0, at))
}

/// A hit's first argument.
pub fn algorithm_arg(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::FixedWindow => "F",
        Algorithm::SlidingWindow => "S",
        Algorithm::TokenBucket => "T",
        Algorithm::Concurrency => "L",
        Algorithm::FairShare => "P",
    }
}

/// A hit's second argument: `60`, or `M1` for one calendar month.
pub fn period_arg(period: Period) -> String {
    match period {
        Period::Seconds(s) => s.to_string(),
        Period::Calendar(unit, count) => format!("{}{count}", unit.code()),
    }
}

/// A hit's sixth argument.
pub fn role_arg(role: Role) -> std::borrow::Cow<'static, str> {
    match role {
        Role::Enforce => "E".into(),
        Role::Shadow => "S".into(),
        Role::Quota => "Q".into(),
        // 1-based, as Lua counts.
        Role::Overflow { of } => format!("O{}", of + 1).into(),
    }
}

/// A hit's last argument.
pub fn claim_arg(claim: &Claim) -> Vec<u8> {
    match claim {
        Claim::None => Vec::new(),
        Claim::Lease(id) => format!("L{id}").into_bytes(),
        Claim::Tenant(t) => {
            let mut arg = format!("T{}:", t.weight).into_bytes();
            arg.extend_from_slice(&t.id);
            arg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::calendar::CalendarUnit;

    #[test]
    fn source_matches_the_documented_argument_codes() {
        for code in [
            "'C'",
            "'E'",
            "'Q'",
            "'O'",
            "F = fixed",
            "S = sliding",
            "T = gcra",
            "L = lease",
            "P = share",
            "kind == 'L'",
            "kind == 'T'",
        ] {
            assert!(APPLY_SOURCE.contains(code), "script lacks {code}");
        }
        assert_eq!(admission_arg(Admission::ChargeAll), "C");
        assert_eq!(admission_arg(Admission::Undo { at: 17 }), "U17");
        for code in ["'R'", "'U'"] {
            assert!(APPLY_SOURCE.contains(code), "script lacks {code}");
        }
        assert_eq!(role_arg(Role::Enforce), "E");
        assert_eq!(role_arg(Role::Quota), "Q");
        assert_eq!(role_arg(Role::Overflow { of: 0 }), "O1");
        assert_eq!(algorithm_arg(Algorithm::TokenBucket), "T");
        assert_eq!(algorithm_arg(Algorithm::Concurrency), "L");
        assert_eq!(
            claim_arg(&Claim::Tenant(crate::algorithm::share::Tenant {
                id: b"a:b".to_vec(),
                weight: 3
            })),
            b"T3:a:b"
        );
        assert_eq!(
            claim_arg(&Claim::Lease(crate::algorithm::lease::LeaseId([0; 16]))),
            format!("L{}", "0".repeat(32)).as_bytes()
        );
        assert!(APPLY_SOURCE.contains("MAX_TENANTS = 512"));
        assert_eq!(crate::algorithm::share::MAX_TENANTS, 512);
        assert_eq!(period_arg(Period::Seconds(60)), "60");
        assert_eq!(period_arg(Period::Calendar(CalendarUnit::Month, 3)), "M3");
        assert!(APPLY_SOURCE.contains("first_arg + (i - 1) * 7"));
        assert!(APPLY_SOURCE.contains("run, width = decide, 7 * n"));
        assert!(APPLY_SOURCE.contains("arg = arg + 3 + width"));
        for form in ["form == 'F'", "form == 'T'", "form == 'S'"] {
            assert!(APPLY_SOURCE.contains(form), "script lacks {form}");
        }
    }
}
