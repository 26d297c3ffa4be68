//! Local token buckets, shared by every worker VM through compare-and-swap on shared data.
//!
//! A bucket holds up to `max_tokens` and refills continuously at `tokens_per_fill` per
//! `fill_interval_ms`; each request takes one token. Tokens are kept in thousandths so slow
//! refill rates do not round away. The value is 24 bytes: fingerprint, milli-tokens, time of
//! the last update in nanoseconds (all little-endian).
//!
//! Every update of an existing slot is a compare-and-swap, so workers never lose each other's
//! takes. The one exception is a slot's very first write: the proxy-wasm ABI has no
//! "create if absent" (a missing key has no CAS value, and a set with CAS 0 is unconditional), so
//! workers racing on a slot's first use may each start from a full bucket. That admits at most
//! one extra request per extra racing worker, once per slot, and only then.

use crate::config::BucketSpec;
use crate::shared::{CAS_ATTEMPTS, Fingerprint, SetError, SharedStore, read_u64};

const MILLI: u128 = 1000;

/// The result of taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Allowed,
    /// Empty: the next token arrives in `wait_ms`.
    Rejected {
        wait_ms: u64,
    },
    /// The store refused or the race was lost too often: the local check does not decide.
    Inconclusive,
}

/// The fingerprint of a bucket: the descriptor and the bucket's parameters, so a changed
/// configuration starts fresh buckets instead of reading the old ones' state.
pub fn fingerprint(domain: &str, entries: &[(String, String)], spec: &BucketSpec) -> u64 {
    Fingerprint::default()
        .entries(domain, entries)
        .field(&spec.max_tokens.to_le_bytes())
        .field(&spec.tokens_per_fill.to_le_bytes())
        .field(&spec.fill_interval_ms.to_le_bytes())
        .value()
}

/// Takes one token from the bucket at `key`.
pub fn take(
    store: &dyn SharedStore,
    key: &str,
    fingerprint: u64,
    spec: &BucketSpec,
    now_ns: u64,
) -> Take {
    for _ in 0..CAS_ATTEMPTS {
        let (current, cas) = match store.get(key) {
            Some((value, cas)) => (decode(&value, fingerprint), cas),
            None => (None, 0),
        };
        let capacity = u128::from(spec.max_tokens) * MILLI;
        let (milli, last_ns) = current.unwrap_or((capacity, now_ns));
        let milli = refill(milli, last_ns, now_ns, spec).min(capacity);
        if milli < MILLI {
            // A rejection takes nothing and writes nothing: the next take refills from the stored
            // time again (in one step, so no rounding is lost), and a worker rejecting a flood
            // costs one shared-data read per request.
            return Take::Rejected {
                wait_ms: wait_ms(MILLI - milli, spec),
            };
        }
        match store.set(
            key,
            &encode(fingerprint, milli - MILLI, now_ns.max(last_ns)),
            cas,
        ) {
            Ok(()) => return Take::Allowed,
            Err(SetError::CasMismatch) => continue,
            Err(SetError::Failed) => return Take::Inconclusive,
        }
    }
    Take::Inconclusive
}

/// Milli-tokens after refilling from `last_ns` to `now_ns` (a clock going backwards adds none).
fn refill(milli: u128, last_ns: u64, now_ns: u64, spec: &BucketSpec) -> u128 {
    let elapsed = u128::from(now_ns.saturating_sub(last_ns));
    let interval_ns = u128::from(spec.fill_interval_ms) * 1_000_000;
    milli.saturating_add(elapsed * u128::from(spec.tokens_per_fill) * MILLI / interval_ns.max(1))
}

/// Time for `missing` milli-tokens to arrive, in whole milliseconds rounded up.
fn wait_ms(missing: u128, spec: &BucketSpec) -> u64 {
    let per_ms = u128::from(spec.tokens_per_fill) * MILLI;
    let ms = (missing * u128::from(spec.fill_interval_ms)).div_ceil(per_ms.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn encode(fingerprint: u64, milli: u128, now_ns: u64) -> [u8; 24] {
    let mut out = [0u8; 24];
    let milli = u64::try_from(milli).unwrap_or(u64::MAX);
    for (chunk, v) in out.chunks_exact_mut(8).zip([fingerprint, milli, now_ns]) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Milli-tokens and last update, when the slot holds this bucket.
fn decode(value: &[u8], fingerprint: u64) -> Option<(u128, u64)> {
    (read_u64(value, 0)? == fingerprint).then_some(())?;
    Some((u128::from(read_u64(value, 8)?), read_u64(value, 16)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::memory::MemoryStore;

    const MS: u64 = 1_000_000;

    fn spec(max_tokens: u32, tokens_per_fill: u32, fill_interval_ms: u32) -> BucketSpec {
        BucketSpec {
            max_tokens,
            tokens_per_fill,
            fill_interval_ms,
        }
    }

    #[test]
    fn admits_the_burst_then_refills_at_the_rate() {
        let store = MemoryStore::default();
        let s = spec(3, 1, 100);
        let t0 = 1_000 * MS;
        for _ in 0..3 {
            assert_eq!(take(&store, "k", 1, &s, t0), Take::Allowed);
        }
        assert_eq!(
            take(&store, "k", 1, &s, t0),
            Take::Rejected { wait_ms: 100 }
        );
        assert_eq!(
            take(&store, "k", 1, &s, t0 + 40 * MS),
            Take::Rejected { wait_ms: 60 }
        );
        assert_eq!(take(&store, "k", 1, &s, t0 + 100 * MS), Take::Allowed);
        // Long idle: capped at max_tokens.
        let later = t0 + 3_600_000 * MS;
        for _ in 0..3 {
            assert_eq!(take(&store, "k", 1, &s, later), Take::Allowed);
        }
        assert!(matches!(
            take(&store, "k", 1, &s, later),
            Take::Rejected { .. }
        ));
    }

    #[test]
    fn admitted_never_exceeds_burst_plus_refill() {
        let store = MemoryStore::default();
        let s = spec(10, 5, 1000);
        let mut admitted = 0;
        // 1000 requests spread evenly over 2 s: at most 10 + 2 × 5 = 20 tokens exist.
        for i in 0..1000u64 {
            if take(&store, "k", 9, &s, 5_000 * MS + i * 2 * MS) == Take::Allowed {
                admitted += 1;
            }
        }
        assert!((19..=20).contains(&admitted), "{admitted}");
    }

    #[test]
    fn another_descriptor_in_the_slot_starts_a_fresh_bucket() {
        let store = MemoryStore::default();
        let s = spec(1, 1, 60_000);
        assert_eq!(take(&store, "k", 1, &s, 0), Take::Allowed);
        assert!(matches!(take(&store, "k", 1, &s, 0), Take::Rejected { .. }));
        assert_eq!(take(&store, "k", 2, &s, 0), Take::Allowed);
    }

    #[test]
    fn a_rejection_writes_nothing() {
        let store = MemoryStore::default();
        let s = spec(1, 1, 60_000);
        assert_eq!(take(&store, "k", 1, &s, 0), Take::Allowed);
        let before = store.get("k");
        *store.lose_races.borrow_mut() = CAS_ATTEMPTS;
        // Every write would lose its race: a rejection does not try one.
        assert!(matches!(
            take(&store, "k", 1, &s, MS),
            Take::Rejected { .. }
        ));
        assert_eq!(store.get("k"), before);
    }

    #[test]
    fn lost_races_are_retried_then_inconclusive() {
        let store = MemoryStore::default();
        let s = spec(5, 5, 1000);
        *store.lose_races.borrow_mut() = CAS_ATTEMPTS - 1;
        assert_eq!(take(&store, "k", 1, &s, 0), Take::Allowed);
        *store.lose_races.borrow_mut() = CAS_ATTEMPTS;
        assert_eq!(take(&store, "k", 1, &s, 0), Take::Inconclusive);
    }

    #[test]
    fn a_clock_going_back_adds_no_tokens() {
        let store = MemoryStore::default();
        let s = spec(1, 1, 1000);
        assert_eq!(take(&store, "k", 1, &s, 10_000 * MS), Take::Allowed);
        assert!(matches!(
            take(&store, "k", 1, &s, 1_000 * MS),
            Take::Rejected { .. }
        ));
        assert!(matches!(
            take(&store, "k", 1, &s, 10_500 * MS),
            Take::Rejected { .. }
        ));
        assert_eq!(take(&store, "k", 1, &s, 11_000 * MS), Take::Allowed);
    }

    #[test]
    fn fingerprint_covers_the_parameters() {
        let e = vec![("a".to_string(), "b".to_string())];
        assert_ne!(
            fingerprint("d", &e, &spec(1, 1, 1)),
            fingerprint("d", &e, &spec(2, 1, 1))
        );
        assert_ne!(
            fingerprint("d", &e, &spec(1, 1, 1)),
            fingerprint("e", &e, &spec(1, 1, 1))
        );
    }
}
