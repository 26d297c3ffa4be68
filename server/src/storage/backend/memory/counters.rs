//! One shard's counters, packed for memory: every live counter costs its key, a 56-byte slot and
//! a few bytes of index and expiry order (docs/performance.md has the measured total).
//!
//! - `slots`: the counters in a dense vector (boxed key, state, expiry, place in the expiry
//!   order); a removal moves the last slot into the gap, so the vector never holds holes.
//! - `index`: a hash table of `u32` positions into `slots`, found by the store's hash of the key.
//!   A hash table is half empty after it grows; at 4 bytes a bucket that costs little.
//! - `by_expiry`: the positions again, as a binary min-heap on expiry, each slot knowing its place
//!   in it: the soonest expiry is at the front for sweeping and eviction, and a counter whose
//!   expiry moves is re-sifted in place.
//!
//! Fixed windows and token buckets, nearly every counter, keep their state inline; the other
//! states are boxed, which keeps a slot at 56 bytes rather than 64.

use std::borrow::Cow;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use hashbrown::HashTable;

use crate::algorithm::{Micros, State};

/// Where a write lands: the key's hash, the time, the shard's bound, and the hasher to rehash
/// the shard's table when it grows.
pub(super) struct Place<'a> {
    pub hash: u64,
    pub now: Micros,
    pub bound: usize,
    pub hasher: &'a RandomState,
}

#[derive(Default)]
pub(super) struct Counters {
    index: HashTable<u32>,
    slots: Vec<Slot>,
    by_expiry: Vec<u32>,
}

struct Slot {
    key: Box<[u8]>,
    held: Held,
    /// Microseconds since the epoch at which the counter reads as absent.
    expires_at: Micros,
    /// This slot's place in `by_expiry`.
    queued: u32,
}

/// A counter's state as held.
enum Held {
    Window { start: u64, count: u64 },
    Tat(Micros),
    Boxed(Box<State>),
}

impl From<State> for Held {
    fn from(state: State) -> Self {
        match state {
            State::Window { start, count } => Held::Window { start, count },
            State::Tat(tat) => Held::Tat(tat),
            other => Held::Boxed(Box::new(other)),
        }
    }
}

impl Held {
    fn state(&self) -> Cow<'_, State> {
        match self {
            Held::Window { start, count } => Cow::Owned(State::Window {
                start: *start,
                count: *count,
            }),
            Held::Tat(tat) => Cow::Owned(State::Tat(*tat)),
            Held::Boxed(state) => Cow::Borrowed(state),
        }
    }

    fn into_state(self) -> State {
        match self {
            Held::Boxed(state) => *state,
            inline => inline.state().into_owned(),
        }
    }
}

impl Counters {
    /// The slot holding `key`, if any.
    fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&i| *slots[i as usize].key == *key)
            .map(|&i| i as usize)
    }

    /// The state of `key` if it has not expired at `now`.
    pub fn live(&self, hash: u64, key: &[u8], now: Micros) -> Option<Cow<'_, State>> {
        let slot = &self.slots[self.find(hash, key)?];
        (slot.expires_at > now).then(|| slot.held.state())
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Removes `key` and returns its state and expiry.
    pub fn take(&mut self, key: &[u8], hasher: &RandomState) -> Option<(State, Micros)> {
        let hash = hasher.hash_one(key);
        let i = self.find(hash, key)?;
        let slot = self.remove(hash, i, hasher);
        Some((slot.held.into_state(), slot.expires_at))
    }

    /// Stores a charged hit's new state, or removes the counter when the state is empty or
    /// already expired. Returns whether a live counter was evicted to make room.
    pub fn store(
        &mut self,
        key: &[u8],
        state: State,
        expires_at: Option<Micros>,
        at: &Place<'_>,
    ) -> bool {
        let found = self.find(at.hash, key);
        let Some(expires_at) = expires_at.filter(|&e| e > at.now) else {
            if let Some(i) = found {
                self.remove(at.hash, i, at.hasher);
            }
            return false;
        };
        if let Some(i) = found {
            let slot = &mut self.slots[i];
            slot.held = Held::from(state);
            if slot.expires_at != expires_at {
                slot.expires_at = expires_at;
                let q = slot.queued as usize;
                self.requeue(q);
            }
            return false;
        }
        let evicted = self.make_room(at.now, at.bound, at.hasher);
        // Shard bounds fit in a u32 (see `MemoryStore::new`), and so do positions.
        let i = self.slots.len() as u32;
        let q = self.by_expiry.len();
        self.slots.push(Slot {
            key: key.into(),
            held: Held::from(state),
            expires_at,
            queued: q as u32,
        });
        self.by_expiry.push(i);
        self.sift_up(q);
        let slots = &self.slots;
        self.index
            .insert_unique(at.hash, i, |&j| at.hasher.hash_one(&*slots[j as usize].key));
        evicted
    }

    /// Frees a place for one more counter: expired counters first, then the soonest to expire.
    fn make_room(&mut self, now: Micros, bound: usize, hasher: &RandomState) -> bool {
        if self.len() < bound {
            return false;
        }
        self.drop_expired(now, hasher);
        let mut evicted = false;
        while self.len() >= bound {
            let Some(&front) = self.by_expiry.first() else {
                break;
            };
            let i = front as usize;
            self.remove(hasher.hash_one(&*self.slots[i].key), i, hasher);
            evicted = true;
        }
        evicted
    }

    /// Removes every counter expired at `now`, soonest first.
    pub fn drop_expired(&mut self, now: Micros, hasher: &RandomState) {
        while let Some(&front) = self.by_expiry.first() {
            let i = front as usize;
            if self.slots[i].expires_at > now {
                break;
            }
            self.remove(hasher.hash_one(&*self.slots[i].key), i, hasher);
        }
    }

    /// Removes slot `i` (whose key hashes to `hash`) from all three structures: the last slot
    /// moves into its place.
    fn remove(&mut self, hash: u64, i: usize, hasher: &RandomState) -> Slot {
        // Out of the expiry heap: the heap's last entry takes its place and is re-sifted.
        let q = self.slots[i].queued as usize;
        let last_q = self.by_expiry.len() - 1;
        self.swap_queued(q, last_q);
        self.by_expiry.pop();
        if q < last_q {
            self.requeue(q);
        }
        if let Ok(entry) = self.index.find_entry(hash, |&j| j as usize == i) {
            entry.remove();
        }
        // The last slot moves to `i`: its index entry and its heap entry follow.
        let last = self.slots.len() - 1;
        if i != last {
            let moved = hasher.hash_one(&*self.slots[last].key);
            if let Some(j) = self.index.find_mut(moved, |&j| j as usize == last) {
                *j = i as u32;
            }
            let moved_q = self.slots[last].queued as usize;
            self.by_expiry[moved_q] = i as u32;
        }
        self.slots.swap_remove(i)
    }

    fn expiry_at(&self, q: usize) -> Micros {
        self.slots[self.by_expiry[q] as usize].expires_at
    }

    fn swap_queued(&mut self, a: usize, b: usize) {
        self.by_expiry.swap(a, b);
        for q in [a, b] {
            let i = self.by_expiry[q] as usize;
            self.slots[i].queued = q as u32;
        }
    }

    /// Restores the heap order around place `q` after its expiry changed.
    fn requeue(&mut self, q: usize) {
        let q = self.sift_up(q);
        self.sift_down(q);
    }

    fn sift_up(&mut self, mut q: usize) -> usize {
        while q > 0 {
            let parent = (q - 1) / 2;
            if self.expiry_at(parent) <= self.expiry_at(q) {
                break;
            }
            self.swap_queued(parent, q);
            q = parent;
        }
        q
    }

    fn sift_down(&mut self, mut q: usize) {
        let n = self.by_expiry.len();
        loop {
            let left = 2 * q + 1;
            if left >= n {
                return;
            }
            let right = left + 1;
            let child = if right < n && self.expiry_at(right) < self.expiry_at(left) {
                right
            } else {
                left
            };
            if self.expiry_at(q) <= self.expiry_at(child) {
                return;
            }
            self.swap_queued(q, child);
            q = child;
        }
    }
}

#[cfg(test)]
impl Counters {
    /// Checks that the three structures agree: every slot indexed once under its key's hash, the
    /// heap a permutation of the slots in heap order, each slot knowing its place.
    pub fn assert_consistent(&self, hasher: &RandomState) {
        assert_eq!(self.index.len(), self.slots.len());
        assert_eq!(self.by_expiry.len(), self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            assert_eq!(self.find(hasher.hash_one(&*slot.key), &slot.key), Some(i));
            assert_eq!(self.by_expiry[slot.queued as usize] as usize, i);
        }
        for q in 1..self.by_expiry.len() {
            assert!(self.expiry_at((q - 1) / 2) <= self.expiry_at(q));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random stores, refunds to empty and sweeps against a plain map: the structures stay
    /// consistent, and sweeping drops exactly the expired counters.
    #[test]
    fn structures_agree_through_random_operations() {
        let hasher = RandomState::default();
        let mut c = Counters::default();
        let mut model = std::collections::HashMap::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut now = 1_000;
        for round in 0..20_000u64 {
            let key = format!("k{}", next() % 300).into_bytes();
            let place = Place {
                hash: hasher.hash_one(&key[..]),
                now,
                bound: 1_000,
                hasher: &hasher,
            };
            if next() % 5 == 0 {
                c.store(&key, State::Empty, None, &place);
                model.remove(&key);
            } else {
                let expires_at = now + 1 + next() % 500;
                let state = if round % 3 == 0 {
                    State::Buckets(vec![(round, 1)])
                } else {
                    State::Window {
                        start: round,
                        count: round,
                    }
                };
                c.store(&key, state.clone(), Some(expires_at), &place);
                model.insert(key, (state, expires_at));
            }
            if round % 97 == 0 {
                now += next() % 200;
                c.drop_expired(now, &hasher);
                model.retain(|_, (_, e)| *e > now);
            }
            if round % 1_000 == 0 {
                c.assert_consistent(&hasher);
            }
        }
        c.assert_consistent(&hasher);
        assert_eq!(c.len(), model.len());
        for (key, (state, _)) in &model {
            let live = c.live(hasher.hash_one(&key[..]), key, now);
            assert_eq!(live.as_deref(), Some(state));
        }
    }
}
