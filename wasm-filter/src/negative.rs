//! The negative cache: after Sluice answers OVER_LIMIT with a wait, the descriptor is rejected
//! locally until the wait has passed (capped by `negative_cache_max_ms`, so a raised limit is
//! seen soon). The value is 18 bytes: fingerprint, deadline in nanoseconds, reply status.

use crate::shared::{Fingerprint, SharedStore, read_u64};

/// A descriptor's fingerprint in the cache (domain and entries).
pub fn fingerprint(domain: &str, entries: &[(String, String)]) -> u64 {
    Fingerprint::default().entries(domain, entries).value()
}

/// The remaining wait and the status to reply with, while the entry at `key` holds this
/// descriptor and its deadline has not passed.
pub fn lookup(
    store: &dyn SharedStore,
    key: &str,
    fingerprint: u64,
    now_ns: u64,
) -> Option<(u64, u16)> {
    let (value, _) = store.get(key)?;
    if read_u64(&value, 0)? != fingerprint {
        return None;
    }
    let until = read_u64(&value, 8)?;
    let status = u16::from_le_bytes(value.get(16..18)?.try_into().ok()?);
    (until > now_ns).then(|| ((until - now_ns).div_ceil(1_000_000), status))
}

/// Records a rejection until `until_ns`. Last writer wins: every writer has a fresh answer.
pub fn insert(store: &dyn SharedStore, key: &str, fingerprint: u64, until_ns: u64, status: u16) {
    let mut value = Vec::with_capacity(18);
    value.extend_from_slice(&fingerprint.to_le_bytes());
    value.extend_from_slice(&until_ns.to_le_bytes());
    value.extend_from_slice(&status.to_le_bytes());
    // A failed write only means the next request asks Sluice again.
    let _ = store.set(key, &value, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::memory::MemoryStore;

    #[test]
    fn rejects_until_the_deadline_then_forgets() {
        let store = MemoryStore::default();
        insert(&store, "n", 7, 5_000_000_000, 402);
        assert_eq!(lookup(&store, "n", 7, 1_000_000_000), Some((4000, 402)));
        assert_eq!(lookup(&store, "n", 7, 4_999_999_999), Some((1, 402)));
        assert_eq!(lookup(&store, "n", 7, 5_000_000_000), None);
        assert_eq!(
            lookup(&store, "n", 8, 0),
            None,
            "another descriptor in the slot"
        );
        assert_eq!(lookup(&store, "absent", 7, 0), None);
    }

    #[test]
    fn short_or_foreign_values_are_misses() {
        let store = MemoryStore::default();
        store.set("n", &[1, 2, 3], 0).unwrap();
        assert_eq!(lookup(&store, "n", 0x0003_0201, 0), None);
    }
}
