//! The queues of concurrency pools ([`crate::algorithm::queue`]), beside the pools' counters.
//!
//! A queue operation locks the pool's shard, then the queue table (always in that order, and no
//! batch takes the queue table, so nothing deadlocks), reads the pool's leases and its queue,
//! applies the operation and writes both back: atomic with respect to every batch on the pool.
//! Only queues with tickets are kept; each is bounded by its rule's `max_depth`.

use std::collections::HashMap;

use parking_lot::{Mutex, MutexGuard};

use super::counters::Counters;
use super::{MAX_SHARDS, MemoryStore};
use crate::algorithm::queue::{self, Op, Outcome, Queue};
use crate::algorithm::{Policy, State};

/// Queues by pool key.
#[derive(Default)]
pub(super) struct Queues(Mutex<HashMap<Vec<u8>, Queue>>);

impl MemoryStore {
    /// [`crate::storage::Store::queue`] without the future.
    pub fn queue_now(&self, key: &[u8], policy: &Policy, op: &Op) -> Outcome {
        let now = self.now();
        let hash = self.hash(key);
        let shard = self.shard_of(hash);
        let mut guards: [Option<MutexGuard<'_, Counters>>; MAX_SHARDS] =
            std::array::from_fn(|_| None);
        guards[shard] = Some(self.shards[shard].counters.lock());
        let pool = guards[shard]
            .as_ref()
            .and_then(|g| g.live(hash, key, now))
            .map_or(State::Empty, |s| s.into_owned());
        let mut queues = self.queues.0.lock();
        let current = queues.get(key).cloned().unwrap_or_default();
        let (next_pool, next_queue, outcome) = queue::apply(policy, &pool, &current, now, op);
        if next_queue.is_empty() {
            queues.remove(key);
        } else {
            queues.insert(key.to_vec(), next_queue);
        }
        drop(queues);
        if next_pool != pool {
            self.write(&mut guards, hash, key, policy, next_pool, now);
        }
        outcome
    }
}
