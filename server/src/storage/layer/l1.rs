//! The L1 over-limit cache: counters the shared store reported over the limit, remembered in
//! process until their window resets or their wait passes, so a client hammering far past its
//! limit costs at most one store call per window (per replica) instead of one per request.
//!
//! **What is remembered.** When the store answers a hit of cost `d` with "over, fits again in
//! `wait`", the counter key is remembered with its policy, `d`, and `until = sent + wait`, where
//! `sent` is when the call was sent, so the entry ends no later than the store's own wait. Any
//! later hit on that key with the same policy and a cost of at least `d` is over until then: a
//! fixed window does not reset before its end, a sliding window's old units do not leave sooner,
//! and a token bucket does not refill faster; a larger cost only waits longer. A smaller cost, a
//! look (cost 0) or another policy (a reloaded limit, an Envoy `limit` override) is asked of the
//! store.
//!
//! **When it answers.** For an all-or-nothing request whose remembered hits reject it on their own
//! (an enforced hit over; or every quota hit over): the request is rejected without a store call,
//! as the store would have, charging nothing. Its remembered limits report over with the
//! remaining wait; its other limits were not consulted and report their limit untouched. Requests
//! under `--charge-rejected` always go to the store (their counters must count every hit).
//!
//! **Refunds and admissions.** A refund (`is_negative_hits`) on a remembered key forgets it before
//! going to the store, and so does any store answer that admitted a hit on it. A refund made
//! through another replica is not seen here: this replica may keep rejecting that key for the
//! rest of the remembered wait.
//!
//! Concurrency and fair-share pools are never remembered (a pool admits per tenant, and frees a
//! slot with any release).
//!
//! **Bounded.** At most `capacity` keys over 16 shards; a full shard first drops ended entries,
//! then an arbitrary one (a lost entry only costs a store call).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::algorithm::{Algorithm, Policy, Reading};
use crate::storage::{Admission, Batch, Hit, Outcome, rejects};

const SHARDS: usize = 16;

pub struct OverLimitCache {
    shards: [Mutex<HashMap<Vec<u8>, Entry>>; SHARDS],
    hasher: RandomState,
    per_shard: usize,
    hits: Counter,
    misses: Counter,
    entries: Gauge,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    policy: Policy,
    /// The smallest cost known to be over.
    cost: u64,
    until: Instant,
}

impl OverLimitCache {
    /// A cache of at most `capacity` keys (at least one per shard).
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: Default::default(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hits: Counter::default(),
            misses: Counter::default(),
            entries: Gauge::default(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "l1_hits",
            "Checks rejected from the L1 over-limit cache without a store call",
            self.hits.clone(),
        );
        registry.register(
            "l1_misses",
            "Checks that went to the shared store",
            self.misses.clone(),
        );
        registry.register(
            "l1_entries",
            "Counters remembered as over the limit",
            self.entries.clone(),
        );
    }

    fn shard(&self, key: &[u8]) -> &Mutex<HashMap<Vec<u8>, Entry>> {
        &self.shards[(self.hasher.hash_one(key) % SHARDS as u64) as usize]
    }

    /// The store's answer to `batch`, if remembered counters decide it.
    pub fn answer(&self, batch: &Batch, now: Instant) -> Option<Outcome> {
        let refunds = batch.hits.iter().filter(|h| h.delta < 0);
        let mut refunded = false;
        for hit in refunds {
            refunded = true;
            if self.shard(&hit.key).lock().remove(&hit.key).is_some() {
                self.entries.dec();
            }
        }
        if refunded || batch.admission != Admission::AllOrNothing {
            self.misses.inc();
            return None;
        }
        let mut remembered = false;
        let readings: Vec<Reading> = batch
            .hits
            .iter()
            .map(|hit| {
                let known = (hit.delta > 0 && cacheable(hit))
                    .then(|| self.shard(&hit.key).lock().get(&hit.key).copied())
                    .flatten()
                    .filter(|e| {
                        e.policy == hit.policy && hit.delta as u64 >= e.cost && now < e.until
                    });
                let capacity = hit.policy.capacity();
                match known {
                    Some(e) => {
                        remembered = true;
                        let wait = e.until.duration_since(now).as_micros() as u64;
                        Reading {
                            used_before: capacity,
                            used_after: capacity,
                            capacity,
                            over: true,
                            wait,
                            reset: wait,
                            borrowing: false,
                        }
                    }
                    None => Reading {
                        used_before: 0,
                        used_after: 0,
                        capacity,
                        over: false,
                        wait: 0,
                        reset: 0,
                        borrowing: false,
                    },
                }
            })
            .collect();
        if remembered && rejects(&batch.hits, &readings) {
            self.hits.inc();
            return Some(Outcome {
                readings,
                charged: false,
            });
        }
        self.misses.inc();
        None
    }

    /// Remembers what the store said about `batch`, sent at `sent`.
    pub fn learn(&self, batch: &Batch, outcome: &Outcome, sent: Instant) {
        for (hit, reading) in batch.hits.iter().zip(&outcome.readings) {
            if hit.delta <= 0 || !cacheable(hit) {
                continue;
            }
            let cost = hit.delta as u64;
            let mut shard = self.shard(&hit.key).lock();
            if !reading.over {
                if outcome.charged && shard.remove(&hit.key).is_some() {
                    self.entries.dec();
                }
                continue;
            }
            if reading.wait == 0 {
                continue;
            }
            let until = sent + Duration::from_micros(reading.wait);
            let entry = match shard.get(&hit.key) {
                Some(e) if e.policy == hit.policy && sent < e.until => Entry {
                    policy: hit.policy,
                    cost: e.cost.min(cost),
                    until: if cost <= e.cost { until } else { e.until },
                },
                _ => Entry {
                    policy: hit.policy,
                    cost,
                    until,
                },
            };
            if !shard.contains_key(&hit.key) {
                if shard.len() >= self.per_shard {
                    let before = shard.len();
                    shard.retain(|_, e| e.until > sent);
                    if shard.len() >= self.per_shard
                        && let Some(victim) = shard.keys().next().cloned()
                    {
                        shard.remove(&victim);
                    }
                    self.entries.dec_by((before - shard.len()) as i64);
                }
                self.entries.inc();
            }
            shard.insert(hit.key.clone(), entry);
        }
    }
}

/// Pools are not remembered: whether a fair-share pool admits depends on the tenant, and a
/// concurrency pool frees a slot whenever any lease is released.
fn cacheable(hit: &Hit) -> bool {
    !matches!(
        hit.policy.algorithm,
        Algorithm::Concurrency | Algorithm::FairShare
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::{Algorithm, Period};
    use crate::storage::{Hit, Role};

    fn policy(limit: u64) -> Policy {
        Policy {
            algorithm: Algorithm::FixedWindow,
            period: Period::Seconds(60),
            limit,
            burst: limit,
        }
    }

    fn hit(key: &str, delta: i64, role: Role) -> Hit {
        Hit {
            key: key.as_bytes().to_vec(),
            policy: policy(10),
            delta,
            role,
            claim: crate::algorithm::Claim::None,
        }
    }

    fn batch(hits: Vec<Hit>) -> Batch {
        Batch {
            hits,
            admission: Admission::AllOrNothing,
        }
    }

    fn reading(over: bool, wait_ms: u64) -> Reading {
        Reading {
            used_before: 10,
            used_after: 10,
            capacity: 10,
            over,
            wait: wait_ms * 1000,
            reset: wait_ms * 1000,
            borrowing: false,
        }
    }

    fn over(cache: &OverLimitCache, key: &str, cost: i64, wait_ms: u64, at: Instant) {
        let b = batch(vec![hit(key, cost, Role::Enforce)]);
        let o = Outcome {
            readings: vec![reading(true, wait_ms)],
            charged: false,
        };
        cache.learn(&b, &o, at);
    }

    #[test]
    fn remembers_until_the_wait_and_only_for_costs_as_large() {
        let cache = OverLimitCache::new(100);
        let t0 = Instant::now();
        over(&cache, "k", 2, 1000, t0);
        let two = batch(vec![hit("k", 2, Role::Enforce)]);
        let answer = cache.answer(&two, t0 + Duration::from_millis(400));
        let answer = answer.expect("answered from the cache");
        assert!(!answer.charged && answer.readings[0].over);
        assert_eq!(answer.readings[0].wait, 600_000);
        assert!(
            cache
                .answer(&batch(vec![hit("k", 3, Role::Enforce)]), t0)
                .is_some()
        );
        // A cheaper hit may fit; a look is always asked; the wait has passed.
        assert!(
            cache
                .answer(&batch(vec![hit("k", 1, Role::Enforce)]), t0)
                .is_none()
        );
        assert!(
            cache
                .answer(&batch(vec![hit("k", 0, Role::Enforce)]), t0)
                .is_none()
        );
        assert!(
            cache
                .answer(&two, t0 + Duration::from_millis(1000))
                .is_none()
        );
    }

    #[test]
    fn answers_only_when_the_remembered_hits_reject_on_their_own() {
        let cache = OverLimitCache::new(100);
        let t0 = Instant::now();
        over(&cache, "q1", 1, 1000, t0);
        // A shadow hit never rejects; a quota hit rejects only with every quota hit over.
        assert!(
            cache
                .answer(&batch(vec![hit("q1", 1, Role::Shadow)]), t0)
                .is_none()
        );
        let quotas = batch(vec![hit("q1", 1, Role::Quota), hit("q2", 1, Role::Quota)]);
        assert!(cache.answer(&quotas, t0).is_none());
        over(&cache, "q2", 1, 1000, t0);
        assert!(cache.answer(&quotas, t0).is_some());
        // Alongside an unknown enforced hit: still rejected, the other limit untouched.
        let mixed = batch(vec![
            hit("other", 1, Role::Enforce),
            hit("q1", 1, Role::Enforce),
        ]);
        let answer = cache.answer(&mixed, t0).expect("rejected by q1");
        assert!(!answer.readings[0].over && answer.readings[1].over);
        // Charge-all requests always reach the store.
        let charge_all = Batch {
            admission: Admission::ChargeAll,
            ..batch(vec![hit("q1", 1, Role::Enforce)])
        };
        assert!(cache.answer(&charge_all, t0).is_none());
    }

    #[test]
    fn refunds_admissions_and_other_policies_clear_or_bypass() {
        let cache = OverLimitCache::new(100);
        let t0 = Instant::now();
        over(&cache, "k", 1, 1000, t0);
        let mut raised = hit("k", 1, Role::Enforce);
        raised.policy = policy(20);
        assert!(cache.answer(&batch(vec![raised]), t0).is_none());
        assert!(
            cache
                .answer(&batch(vec![hit("k", -1, Role::Enforce)]), t0)
                .is_none()
        );
        assert!(
            cache
                .answer(&batch(vec![hit("k", 1, Role::Enforce)]), t0)
                .is_none()
        );
        over(&cache, "k", 1, 1000, t0);
        let admitted = Outcome {
            readings: vec![reading(false, 0)],
            charged: true,
        };
        cache.learn(&batch(vec![hit("k", 1, Role::Enforce)]), &admitted, t0);
        assert!(
            cache
                .answer(&batch(vec![hit("k", 1, Role::Enforce)]), t0)
                .is_none()
        );
        assert_eq!(cache.entries.get(), 0);
    }

    #[test]
    fn stays_within_its_capacity() {
        let cache = OverLimitCache::new(32);
        let t0 = Instant::now();
        for i in 0..1000 {
            over(&cache, &format!("k{i}"), 1, 1000, t0);
        }
        let held: usize = cache.shards.iter().map(|s| s.lock().len()).sum();
        assert!(held <= 32, "{held}");
        assert_eq!(cache.entries.get() as usize, held);
    }
}
