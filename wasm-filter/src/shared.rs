//! The compare-and-swap store the local pre-check and the negative cache live in: proxy-wasm
//! shared data in the `.wasm` (one store for every worker VM of the proxy), a map in tests.
//!
//! Keys are slots of fixed-size tables (`sluice.b.<n>` for buckets, `sluice.n.<n>` for the
//! negative cache), picked by a fingerprint of the descriptor, and each value starts with that
//! fingerprint. proxy-wasm shared data has no expiry or deletion that every host supports, so
//! keying by raw descriptor values would grow proxy memory with every new client address or API
//! key; fixed slots bound it to `shared_slots` entries per table. Two descriptors landing on one
//! slot evict each other, which only makes the local pre-check more permissive: Sluice still
//! decides every request the local check lets through.

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetError {
    /// Another writer changed the value since it was read.
    CasMismatch,
    /// The host refused the write.
    Failed,
}

pub trait SharedStore {
    /// The value and its compare-and-swap token; `None` when absent or unreadable.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's token is still `cas` (0: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError>;
}

/// How many times a read-modify-write is retried after losing a race before giving up.
pub const CAS_ATTEMPTS: usize = 8;

/// FNV-1a (64 bit): stable across VMs and builds, which the shared tables need, and cheap.
#[derive(Clone, Copy)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// Adds a field, length first, so `("ab", "c")` and `("a", "bc")` differ.
    pub fn field(mut self, bytes: &[u8]) -> Self {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn entries(self, domain: &str, entries: &[(String, String)]) -> Self {
        entries
            .iter()
            .fold(self.field(domain.as_bytes()), |f, (k, v)| {
                f.field(k.as_bytes()).field(v.as_bytes())
            })
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// The shared-data key of `fingerprint`'s slot in `table`.
pub fn slot_key(table: &str, fingerprint: u64, slots: u32) -> String {
    let mut key = String::with_capacity(28 + table.len());
    key.push_str("sluice.");
    key.push_str(table);
    key.push('.');
    crate::value::push_u64(&mut key, fingerprint % u64::from(slots.max(1)));
    key
}

/// Little-endian `u64`s at fixed offsets of a stored value.
pub fn read_u64(value: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = value.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
pub mod memory {
    //! An in-process store for unit tests, with the host's CAS semantics: a token per write, a
    //! write with a stale token fails, a write to an absent key succeeds whatever the token.

    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::{SetError, SharedStore};

    #[derive(Default)]
    pub struct MemoryStore {
        pub map: RefCell<HashMap<String, (Vec<u8>, u32)>>,
        next_cas: RefCell<u32>,
        /// Fail this many writes with a CAS mismatch first, as a racing worker would.
        pub lose_races: RefCell<usize>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.map.borrow().get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
            if *self.lose_races.borrow() > 0 {
                *self.lose_races.borrow_mut() -= 1;
                return Err(SetError::CasMismatch);
            }
            let mut map = self.map.borrow_mut();
            if let Some((_, current)) = map.get(key)
                && cas != 0
                && cas != *current
            {
                return Err(SetError::CasMismatch);
            }
            let mut next = self.next_cas.borrow_mut();
            *next += 1;
            map.insert(key.to_string(), (value.to_vec(), *next));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_fields() {
        let a = Fingerprint::default().field(b"ab").field(b"c").value();
        let b = Fingerprint::default().field(b"a").field(b"bc").value();
        assert_ne!(a, b);
        let e = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_ne!(
            Fingerprint::default().entries("d", &e("a_b", "c")).value(),
            Fingerprint::default().entries("d", &e("a", "b_c")).value()
        );
        // Stable: the same input gives the same slot in every VM and build.
        assert_eq!(
            Fingerprint::default().field(b"").value(),
            0xa8c7f832281a39c5
        );
    }

    #[test]
    fn slots_stay_in_range() {
        for fp in [0, 1, u64::MAX, 4095, 4096] {
            let key = slot_key("b", fp, 4096);
            let n: u64 = key.trim_start_matches("sluice.b.").parse().unwrap();
            assert!(n < 4096);
        }
        assert_eq!(slot_key("n", 7, 0), "sluice.n.0");
    }
}
