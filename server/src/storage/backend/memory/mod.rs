//! The embedded store: counters in this process's memory, for a single Sluice instance.
//!
//! **Layout.** Counters live in up to 64 shards, each a hash table behind a `parking_lot` mutex.
//! Each key is hashed once per hit, with a fast hash (foldhash) seeded at random per store: the
//! hash picks the shard (from bits the table does not use) and then finds the key in that shard's
//! table. Seeded, so clients choosing descriptor values cannot aim every counter at one shard or
//! one probe sequence. A batch locks every shard it touches, in ascending shard
//! order and each once, then reads, decides and writes under those locks: that is what makes a
//! batch atomic, and the fixed order is what keeps two batches from deadlocking. Locks are never
//! held across an `.await`.
//!
//! **Expiry.** A counter expires when its state stops carrying information
//! ([`algorithm::expires_at`]: the end of a fixed window, a token bucket's refill time, ...). An
//! expired counter reads as absent at once; its memory is reclaimed when a write lands on its key,
//! when its shard needs room, or by [`MemoryStore::sweep`] (run periodically by
//! [`MemoryStore::spawn_sweeper`]). Each shard keeps its counters ordered by expiry as well, so
//! reclaiming costs only the expired counters, never a scan of the shard. Expiry only reclaims
//! memory: the algorithms never read a stale window or an old sub-window as current.
//!
//! **Bounded memory.** At most `max_counters` counters are kept, split evenly over the shards
//! (shard bounds differ by at most one and add up to `max_counters`). When a new counter must be
//! created in a full shard, that shard first drops its expired counters; if it is still full it
//! evicts the counter with the soonest expiry, the one nearest to resetting anyway, and
//! [`MemoryStore::evictions`] counts it. An evicted counter restarts from zero if hit again within
//! its window, so a store sized too small admits more than the limits allow rather than refusing
//! service: size `max_counters` above the number of counters live in one window, and alert on
//! evictions. An eviction can also take a counter the same batch touched a moment before.
//!
//! **Memory per counter.** A shard packs its counters densely, with a `u32` index and an
//! expiry heap beside them, so nothing of a counter is stored twice ([`counters`]);
//! docs/performance.md gives the measured bytes per counter (`cargo run --release -p
//! sluice-server --example counter_memory`).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use parking_lot::{Mutex, MutexGuard};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::algorithm::lease::{self, Lease};
use crate::algorithm::{self, Algorithm, Micros, State};
use crate::clock::Clock;
use crate::storage::{Admission, Batch, Outcome, Store, StoreError, Verdict};
use counters::{Counters, Place};

mod counters;
mod queues;
mod trials;

/// The most shards a store uses; a batch's shards fit in one `u64` bit set.
const MAX_SHARDS: usize = 64;

/// Counters in this process.
pub struct MemoryStore {
    shards: Box<[Shard]>,
    /// Hashes counter keys for the shard choice and the shard's table; randomly seeded per store.
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    evictions: AtomicU64,
    /// Expired leases removed by operations on their pools.
    leases_reclaimed: AtomicU64,
    /// The queues of concurrency pools with waiters, by pool key ([`queues`]).
    queues: queues::Queues,
    /// First sightings of trial rules' values ([`trials`]).
    trials: trials::Trials,
}

struct Shard {
    /// How many counters this shard may hold.
    bound: usize,
    counters: Mutex<Counters>,
}

impl MemoryStore {
    /// A store holding at most `max_counters` counters (at least one). Time comes from `clock`,
    /// so tests move windows with a manual clock.
    pub fn new(max_counters: usize, clock: Arc<dyn Clock>) -> Self {
        // Each shard indexes its counters with u32.
        let max_counters = max_counters.clamp(1, MAX_SHARDS.saturating_mul(u32::MAX as usize));
        let shard_count = max_counters.min(MAX_SHARDS);
        let (base, extra) = (max_counters / shard_count, max_counters % shard_count);
        let shards = (0..shard_count)
            .map(|i| Shard {
                bound: base + usize::from(i < extra),
                counters: Mutex::new(Counters::default()),
            })
            .collect();
        Self {
            shards,
            hasher: RandomState::default(),
            clock,
            evictions: AtomicU64::new(0),
            leases_reclaimed: AtomicU64::new(0),
            queues: queues::Queues::default(),
            trials: trials::Trials::default(),
        }
    }

    /// Expired leases that operations on their pools have removed since the store was created.
    pub fn leases_reclaimed(&self) -> u64 {
        self.leases_reclaimed.load(Ordering::Relaxed)
    }

    /// Counters currently held, including expired ones not reclaimed yet.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.counters.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live counters dropped to make room since the store was created.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Reclaims every expired counter. Cheap: each shard pops expired counters off the front of
    /// its expiry order and stops at the first live one.
    pub fn sweep(&self) {
        let now = self.now();
        for shard in self.shards.iter() {
            shard.counters.lock().drop_expired(now, &self.hasher);
        }
    }

    /// Runs [`sweep`](Self::sweep) every `every` on the current tokio runtime, until the store is
    /// dropped (the task holds it weakly).
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick completes at once; nothing has expired yet.
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                store.sweep();
            }
        })
    }

    /// [`Store::apply`] without the future: everything happens under the shard locks.
    pub fn apply_now(&self, batch: &Batch) -> Outcome {
        let clock_now = self.now();
        // An undo steps at its charge's time; liveness and expiry still follow the clock.
        let now = match batch.admission {
            Admission::Undo { at } => at,
            _ => clock_now,
        };
        let step = match batch.admission {
            Admission::Reconcile => algorithm::force,
            _ => algorithm::step_with,
        };
        let hits = &batch.hits;
        // Each key is hashed once: the hash picks the shard and finds the key in it.
        let hashes: Vec<u64> = hits.iter().map(|h| self.hash(&h.key)).collect();

        let mut touched = 0u64;
        for &hash in &hashes {
            touched |= 1 << self.shard_of(hash);
        }
        // Ascending order, each shard once: see the module doc.
        let mut guards: [Option<MutexGuard<'_, Counters>>; MAX_SHARDS] =
            std::array::from_fn(|_| None);
        let mut rest = touched;
        while rest != 0 {
            let i = rest.trailing_zeros() as usize;
            guards[i] = Some(self.shards[i].counters.lock());
            rest &= rest - 1;
        }
        let mut steps: Vec<algorithm::Step> = Vec::with_capacity(hits.len());
        for (i, hit) in hits.iter().enumerate() {
            // A key seen earlier in the batch sees that hit applied: hits apply in order.
            let next = match hits[..i].iter().rposition(|h| h.key == hit.key) {
                Some(j) => step(&hit.policy, &steps[j].next, now, hit.delta, &hit.claim),
                // Every touched shard is locked, so the guard is always there.
                None => {
                    let hash = hashes[i];
                    let guard = guards[self.shard_of(hash)].as_ref();
                    let state = guard.and_then(|g| g.live(hash, &hit.key, clock_now));
                    let state = state.as_deref().unwrap_or(&State::Empty);
                    step(&hit.policy, state, now, hit.delta, &hit.claim)
                }
            };
            steps.push(next);
        }
        let readings: Vec<_> = steps.iter().map(|s| s.reading).collect();

        let verdict = Verdict::of(hits, &readings);
        let charged = verdict.charged(batch.admission);
        if charged {
            for (i, (hit, step)) in hits.iter().zip(steps).enumerate() {
                if hit.delta == 0 || !verdict.writes(hits, &readings, batch.admission, i) {
                    continue;
                }
                self.write(
                    &mut guards,
                    hashes[i],
                    &hit.key,
                    &hit.policy,
                    step.next,
                    clock_now,
                );
            }
        } else if batch.admission != Admission::DryRun {
            // Nothing is charged, but fair-share pools still learn of the demand. A key repeated
            // in the batch reads the arrival written just before.
            for (hit, &hash) in hits.iter().zip(&hashes) {
                if hit.policy.algorithm != Algorithm::FairShare || hit.delta <= 0 {
                    continue;
                }
                let guard = guards[self.shard_of(hash)].as_ref();
                let state = guard.and_then(|g| g.live(hash, &hit.key, now));
                let state = state.as_deref().unwrap_or(&State::Empty);
                let next = algorithm::uncharged(&hit.policy, state, now, hit.delta, &hit.claim);
                self.write(&mut guards, hash, &hit.key, &hit.policy, next, now);
            }
        }
        Outcome { readings, charged }
    }

    /// Stores one counter's new state under the batch's locks, counting evictions and the expired
    /// leases the write drops.
    fn write(
        &self,
        guards: &mut [Option<MutexGuard<'_, Counters>>; MAX_SHARDS],
        hash: u64,
        key: &[u8],
        policy: &algorithm::Policy,
        next: State,
        now: Micros,
    ) {
        let s = self.shard_of(hash);
        let Some(g) = guards[s].as_mut() else {
            return;
        };
        if policy.algorithm == Algorithm::Concurrency {
            let before = g
                .live(hash, key, now)
                .map_or(0, |st| lease::expired(&st, now));
            let dropped = before.saturating_sub(lease::expired(&next, now));
            self.leases_reclaimed
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        let expires_at = algorithm::expires_at(policy, &next);
        let place = Place {
            hash,
            now,
            bound: self.shards[s].bound,
            hasher: &self.hasher,
        };
        if g.store(key, next, expires_at, &place) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The live leases of the pool at `key`.
    pub fn holders_now(&self, key: &[u8]) -> Vec<Lease> {
        let now = self.now();
        let hash = self.hash(key);
        let counters = self.shards[self.shard_of(hash)].counters.lock();
        counters
            .live(hash, key, now)
            .map_or_else(Vec::new, |state| lease::live(&state, now).to_vec())
    }
}

impl MemoryStore {
    /// Removes a counter and returns its state if it was live: the local share hands its counts
    /// over to the shared store this way (`storage::layer::local_share`), atomically with respect to batches.
    pub fn take(&self, key: &[u8]) -> Option<State> {
        let now = self.now();
        let mut counters = self.shards[self.shard_of(self.hash(key))].counters.lock();
        let (state, expires_at) = counters.take(key, &self.hasher)?;
        (expires_at > now).then_some(state)
    }

    fn now(&self) -> Micros {
        self.clock.now().as_micros() as Micros
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash, from bits 25..57: the table inside the shard indexes its
    /// buckets with the low bits and tags them with the top 7, and a shard whose keys all shared
    /// those bits would probe badly.
    fn shard_of(&self, hash: u64) -> usize {
        let bits = u64::from((hash >> 25) as u32);
        ((bits * self.shards.len() as u64) >> 32) as usize
    }
}

/// Scrape-time metrics of a memory store: how many counters it holds and how many live ones it
/// had to evict at its bound (a non-zero rate means `--max-counters` is too small).
pub struct MemoryStoreMetrics(Arc<MemoryStore>);

impl std::fmt::Debug for MemoryStoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryStoreMetrics")
    }
}

impl MemoryStore {
    pub fn metrics(self: &Arc<Self>) -> MemoryStoreMetrics {
        MemoryStoreMetrics(Arc::clone(self))
    }
}

impl Collector for MemoryStoreMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let evictions = ConstCounter::new(self.0.evictions());
        evictions.encode(encoder.encode_descriptor(
            "memory_store_evictions",
            "Live counters evicted because the memory store was at its bound",
            None,
            evictions.metric_type(),
        )?)?;
        let reclaimed = ConstCounter::new(self.0.leases_reclaimed());
        reclaimed.encode(encoder.encode_descriptor(
            "lease_expirations_reclaimed",
            "Expired leases removed from their pools by an operation on the pool",
            None,
            reclaimed.metric_type(),
        )?)?;
        let counters = ConstGauge::new(self.0.len() as i64);
        counters.encode(encoder.encode_descriptor(
            "memory_store_counters",
            "Counters held by the memory store, expired ones not yet swept included",
            None,
            counters.metric_type(),
        )?)?;
        Ok(())
    }
}

impl Store for MemoryStore {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        Ok(self.apply_now(batch))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn holders(&self, key: &[u8]) -> Result<Vec<Lease>, StoreError> {
        Ok(self.holders_now(key))
    }

    async fn queue(
        &self,
        key: &[u8],
        policy: &algorithm::Policy,
        op: &crate::storage::QueueOp,
    ) -> Result<crate::storage::QueueOutcome, StoreError> {
        Ok(self.queue_now(key, policy, op))
    }

    async fn first_seen(
        &self,
        key: &[u8],
        keep: Duration,
        create: bool,
    ) -> Result<crate::storage::FirstSeen, StoreError> {
        self.first_seen_now(key, keep, create)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, Period, Policy};
    use crate::clock::ManualClock;
    use crate::storage::{Admission, Hit, Role};

    /// A start time that is a multiple of every window used here, so a window of `w` seconds
    /// started now ends exactly `w` seconds later.
    const T0: Duration = Duration::from_secs(25_200_000);

    /// A fixed-window hit on `key` whose window (and so whose counter's life) is `window` seconds.
    fn hit(key: &str, window: u64, delta: i64) -> Hit {
        Hit {
            key: key.as_bytes().to_vec(),
            policy: Policy {
                algorithm: Algorithm::FixedWindow,
                period: Period::Seconds(window),
                limit: 100,
                burst: 100,
            },
            delta,
            role: Role::Enforce,
            claim: Default::default(),
        }
    }

    fn one(store: &MemoryStore, h: Hit) -> Outcome {
        store.apply_now(&Batch {
            hits: vec![h],
            admission: Admission::AllOrNothing,
        })
    }

    fn value(store: &MemoryStore, key: &str, window: u64) -> u64 {
        one(store, hit(key, window, 0)).readings[0].used_before
    }

    fn store(max: usize) -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(T0));
        (MemoryStore::new(max, clock.clone()), clock)
    }

    #[test]
    fn shard_bounds_add_up_to_the_maximum() {
        for max in [0, 1, 5, 63, 64, 65, 1_000, 100_003] {
            let (s, _) = store(max);
            let bounds: Vec<usize> = s.shards.iter().map(|s| s.bound).collect();
            assert_eq!(bounds.iter().sum::<usize>(), max.max(1), "max {max}");
            assert!(bounds.iter().all(|&b| b >= 1));
            assert!(bounds.len() <= MAX_SHARDS);
        }
    }

    #[test]
    fn never_holds_more_than_the_maximum() {
        let (s, _) = store(10);
        for i in 0..100 {
            one(&s, hit(&format!("k{i}"), 60 + i, 1));
            assert!(s.len() <= 10);
        }
        assert_eq!(s.len(), 10);
        assert_eq!(s.evictions(), 90);
    }

    #[test]
    fn a_full_store_evicts_the_soonest_to_expire() {
        let (s, _) = store(1);
        one(&s, hit("late", 600, 1));
        one(&s, hit("soon", 10, 1));
        assert_eq!(s.evictions(), 1, "the single slot was taken");

        // With two slots in one shard the soonest expiry goes, not the oldest or newest.
        let clock = Arc::new(ManualClock::new(T0));
        let s = MemoryStore {
            shards: vec![Shard {
                bound: 2,
                counters: Mutex::new(Counters::default()),
            }]
            .into_boxed_slice(),
            hasher: RandomState::default(),
            clock,
            evictions: AtomicU64::new(0),
            leases_reclaimed: AtomicU64::new(0),
            queues: Default::default(),
            trials: Default::default(),
        };
        one(&s, hit("late", 600, 3));
        one(&s, hit("soon", 10, 2));
        one(&s, hit("new", 300, 1));
        assert_eq!(s.evictions(), 1);
        assert_eq!(value(&s, "late", 600), 3);
        assert_eq!(value(&s, "soon", 10), 0);
        assert_eq!(value(&s, "new", 300), 1);
    }

    #[test]
    fn a_full_shard_drops_expired_counters_before_evicting() {
        let (s, clock) = store(1);
        one(&s, hit("old", 10, 1));
        clock.advance(Duration::from_secs(10));
        one(&s, hit("new", 10, 1));
        assert_eq!(s.evictions(), 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn sweep_reclaims_only_expired_counters() {
        let (s, clock) = store(1_000);
        for i in 0..50 {
            one(&s, hit(&format!("short{i}"), 10, 1));
            one(&s, hit(&format!("long{i}"), 20, 1));
        }
        assert_eq!(s.len(), 100);
        clock.advance(Duration::from_secs(9));
        s.sweep();
        assert_eq!(s.len(), 100);
        clock.advance(Duration::from_secs(1));
        s.sweep();
        assert_eq!(s.len(), 50);
        clock.advance(Duration::from_secs(10));
        s.sweep();
        assert!(s.is_empty());
        assert_eq!(s.evictions(), 0);
    }

    #[test]
    fn an_expired_counter_restarts_with_a_new_expiry() {
        let (s, clock) = store(100);
        one(&s, hit("k", 10, 5));
        clock.advance(Duration::from_secs(10));
        assert_eq!(value(&s, "k", 10), 0, "expired reads as absent");
        assert_eq!(s.len(), 1, "not reclaimed by a read");
        one(&s, hit("k", 10, 2));
        assert_eq!(value(&s, "k", 10), 2);
        clock.advance(Duration::from_secs(9));
        s.sweep();
        assert_eq!(value(&s, "k", 10), 2, "the new expiry is what counts");
        clock.advance(Duration::from_secs(1));
        s.sweep();
        assert!(s.is_empty());
    }

    #[test]
    fn a_refund_does_not_revive_an_expired_counter() {
        let (s, clock) = store(100);
        one(&s, hit("k", 10, 5));
        clock.advance(Duration::from_secs(10));
        one(&s, hit("k", 10, -1));
        assert_eq!(value(&s, "k", 10), 0);
        s.sweep();
        assert!(s.is_empty());
    }

    #[test]
    fn a_token_bucket_refund_to_full_removes_the_counter() {
        let (s, _) = store(100);
        let bucket = |delta| Hit {
            policy: Policy {
                algorithm: Algorithm::TokenBucket,
                period: Period::Seconds(60),
                limit: 60,
                burst: 60,
            },
            ..hit("b", 60, delta)
        };
        one(&s, bucket(5));
        assert_eq!(s.len(), 1);
        one(&s, bucket(-5));
        assert!(s.is_empty(), "a full bucket needs no counter");
    }

    #[test]
    fn batches_across_many_shards_lock_each_once() {
        let (s, _) = store(100_000);
        let hits: Vec<Hit> = (0..200).map(|i| hit(&format!("k{i}"), 60, 1)).collect();
        let out = s.apply_now(&Batch {
            hits,
            admission: Admission::AllOrNothing,
        });
        assert!(out.charged);
        assert_eq!(s.len(), 200);
    }

    #[tokio::test]
    async fn the_sweeper_sweeps_and_stops_with_the_store() {
        let (s, clock) = store(100);
        let s = Arc::new(s);
        one(&s, hit("k", 1, 1));
        clock.advance(Duration::from_secs(1));
        let sweeper = s.spawn_sweeper(Duration::from_millis(1));
        // Bounded polling on real time: the sweeper runs on its own schedule.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !s.is_empty() {
            assert!(std::time::Instant::now() < deadline, "never swept");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(s);
        tokio::time::timeout(Duration::from_secs(5), sweeper)
            .await
            .expect("the sweeper ends once the store is gone")
            .expect("the sweeper did not panic");
    }
}
