//! `failure_mode: local`: while the shared store is unavailable, each replica keeps enforcing from
//! in-process counters holding its share of every limit, and once the store is back it hands the
//! hits it admitted over to the shared counters, so a tenant cannot double-spend an outage.
//!
//! **The share.** With `--replicas N` each replica takes `1/N` of every limit (or `--local-share`
//! directly): `floor(limit × share)`, at least 1 for a non-zero limit, and the same for a token
//! bucket's burst. Across N replicas an outage therefore admits at most `max(limit, N)` per window
//! when traffic is spread evenly, and never more than `N × max(1, floor(limit / N))`. A replica
//! that receives all of a tenant's traffic admits only its share: the price of deciding without
//! talking to the others.
//!
//! **What was already spent.** A replica remembers, for the fixed and sliding windows of `local`
//! domains, the count it last read from the shared store (until that window is over), and takes
//! its share of what was *left*: `floor((limit − seen) × share)`. So a tenant that spent 15 of 20
//! before the outage gets at most 5 more across the fleet, not another 20. Across an outage one
//! window therefore admits at most its limit, plus what other replicas admitted in it after this
//! one last read the counter: the part no replica can know about the others. (Token buckets take
//! their plain share: their state is not a count.)
//!
//! **Reconciliation.** Every counter charged locally is remembered (its key and its full policy).
//! Before the breaker closes ([`super::failover`]'s probes: reconcile, then decide), and then
//! every [`RECONCILE_EVERY`] while any remain, the units each
//! local counter still holds (hits of a fixed window that has not ended, of a sliding window not
//! yet aged out, a token bucket's debt not yet refilled) are added to the shared counter with
//! [`Admission::Reconcile`]: counted in full even past the limit, a token bucket going into debt.
//! They land in the shared counter's current window (or sub-window), never in an earlier one, so a
//! sliding window keeps them slightly longer than their true age: stricter, never looser. The
//! local counter is removed in the same step, so units are handed over once; if the shared store
//! fails again meanwhile they are put back locally and retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::algorithm::{Algorithm, Claim, Policy};
use crate::clock::Clock;
use crate::storage::backend::memory::MemoryStore;
use crate::storage::{Admission, Batch, Hit, Outcome, Role, Store, StoreError};

/// How often a replica retries handing over local hits while some remain.
pub const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// Counters per reconciliation call.
const CHUNK: usize = 128;

/// This replica's part of every limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share(f64);

impl Share {
    /// `fraction` of each limit, in (0, 1].
    pub fn new(fraction: f64) -> Result<Self, String> {
        if fraction > 0.0 && fraction <= 1.0 {
            Ok(Share(fraction))
        } else {
            Err(format!("a local share must be in (0, 1], not {fraction}"))
        }
    }

    /// One of `replicas` equal parts.
    pub fn of_replicas(replicas: u32) -> Self {
        Share(1.0 / f64::from(replicas.max(1)))
    }

    pub fn fraction(self) -> f64 {
        self.0
    }

    fn scale(self, units: u64) -> u64 {
        if units == 0 {
            return 0;
        }
        ((units as f64 * self.0).floor() as u64).clamp(1, units)
    }

    /// The policy a replica enforces locally for `policy`.
    pub fn policy(self, policy: &Policy) -> Policy {
        Policy {
            limit: self.scale(policy.limit),
            burst: match policy.algorithm {
                Algorithm::TokenBucket => self.scale(policy.burst),
                _ => self.scale(policy.limit),
            },
            ..*policy
        }
    }
}

pub struct LocalShare {
    store: MemoryStore,
    share: Share,
    clock: Arc<dyn Clock>,
    /// Counters charged locally and not yet handed over: key → the full (shared) policy.
    pending: Mutex<HashMap<Vec<u8>, Policy>>,
    /// The count last read from the shared store per window counter of a `local` domain.
    seen: Mutex<Seen>,
    reconciled: Counter,
}

/// Counts last read from the shared store, bounded.
#[derive(Default)]
struct Seen {
    counts: HashMap<Vec<u8>, SeenCount>,
    /// When expired entries were last dropped (micros): at most once a second when full.
    swept: u64,
}

#[derive(Clone, Copy)]
struct SeenCount {
    used: u64,
    /// Until when the count holds (the window's end, or until a sliding window is empty), micros.
    until: u64,
}

/// Counts remembered at most: ~100 bytes each.
const SEEN_ENTRIES: usize = 100_000;

impl LocalShare {
    pub fn new(share: Share, max_counters: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            store: MemoryStore::new(max_counters, clock.clone()),
            share,
            clock,
            pending: Mutex::new(HashMap::new()),
            seen: Mutex::new(Seen::default()),
            reconciled: Counter::default(),
        }
    }

    fn now_micros(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(u64::MAX)
    }

    /// Remembers what the shared store said of `batch`'s window counters.
    pub fn saw(&self, batch: &Batch, outcome: &Outcome) {
        let now = self.now_micros();
        let mut seen = self.seen.lock();
        for (hit, reading) in batch.hits.iter().zip(&outcome.readings) {
            if !matches!(
                hit.policy.algorithm,
                Algorithm::FixedWindow | Algorithm::SlidingWindow
            ) {
                continue;
            }
            if seen.counts.len() >= SEEN_ENTRIES && !seen.counts.contains_key(&hit.key) {
                if now.saturating_sub(seen.swept) < 1_000_000 {
                    continue;
                }
                seen.swept = now;
                seen.counts.retain(|_, c| c.until > now);
                if seen.counts.len() >= SEEN_ENTRIES {
                    continue;
                }
            }
            let used = if outcome.charged {
                reading.used_after
            } else {
                reading.used_before
            };
            let until = now.saturating_add(reading.reset);
            seen.counts
                .insert(hit.key.clone(), SeenCount { used, until });
        }
    }

    /// The policy this replica enforces locally for `hit`: its share of what the shared count it
    /// last saw left of the limit.
    fn local_policy(&self, hit: &Hit, seen: &Seen, now: u64) -> Policy {
        let left = match seen.counts.get(&hit.key) {
            Some(c) if c.until > now => Policy {
                limit: hit.policy.limit.saturating_sub(c.used),
                ..hit.policy
            },
            _ => hit.policy,
        };
        self.share.policy(&left)
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciled_hits",
            "Hits admitted from a replica's local share during a store outage and then added to \
             the shared counters",
            self.reconciled.clone(),
        );
    }

    pub fn share(&self) -> Share {
        self.share
    }

    /// Decides `batch` against this replica's share of each limit.
    pub fn apply(&self, batch: &Batch) -> Outcome {
        let now = self.now_micros();
        let hits = {
            let seen = self.seen.lock();
            batch
                .hits
                .iter()
                .map(|h| Hit {
                    policy: self.local_policy(h, &seen, now),
                    ..h.clone()
                })
                .collect()
        };
        let local = Batch {
            hits,
            admission: batch.admission,
        };
        let outcome = self.store.apply_now(&local);
        if outcome.charged {
            let mut pending = self.pending.lock();
            // Pools hold leases and tenants' shares for moments: they are not handed over.
            let counted = |h: &&Hit| {
                h.delta > 0
                    && !matches!(
                        h.policy.algorithm,
                        Algorithm::Concurrency | Algorithm::FairShare
                    )
            };
            for hit in batch.hits.iter().filter(counted) {
                pending.insert(hit.key.clone(), hit.policy);
            }
        }
        outcome
    }

    /// Counters waiting to be handed over.
    pub fn pending(&self) -> usize {
        self.pending.lock().len()
    }

    /// Hands every local counter's units over to `shared`, each call bounded by `timeout`.
    /// Returns the units handed over, or the first failure (what was not handed over stays).
    ///
    /// The local counters stay in place while a call is in flight, and only the units the
    /// shared store took are then taken back from them: checks decided locally meanwhile (the
    /// store may be failing while the breaker has not noticed yet) still count what was admitted
    /// before, and what they admit stays for the next hand-over.
    pub async fn reconcile(
        &self,
        shared: &impl Store,
        timeout: Duration,
    ) -> Result<u64, StoreError> {
        let keys: Vec<(Vec<u8>, Policy)> = self
            .pending
            .lock()
            .iter()
            .map(|(k, p)| (k.clone(), *p))
            .collect();
        let mut total = 0;
        for chunk in keys.chunks(CHUNK) {
            let hits: Vec<Hit> = chunk
                .iter()
                .filter_map(|(key, policy)| {
                    let units = self.units(key, policy);
                    (units > 0).then(|| Hit {
                        key: key.clone(),
                        policy: *policy,
                        delta: units as i64,
                        role: Role::Shadow,
                        claim: Claim::None,
                    })
                })
                .collect();
            if !hits.is_empty() {
                let batch = Batch {
                    hits,
                    admission: Admission::Reconcile,
                };
                match tokio::time::timeout(timeout, shared.apply(&batch)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(StoreError::Timeout(timeout)),
                }
                for hit in &batch.hits {
                    self.store.apply_now(&Batch {
                        hits: vec![Hit {
                            policy: self.share.policy(&hit.policy),
                            delta: -hit.delta,
                            ..hit.clone()
                        }],
                        admission: Admission::Reconcile,
                    });
                }
                // The shared counts now hold these units too: a check still decided locally
                // (the breaker has not closed yet) takes its share of what is left after them.
                let now = self.now_micros();
                let mut seen = self.seen.lock();
                for hit in &batch.hits {
                    if let Some(c) = seen.counts.get_mut(&hit.key)
                        && c.until > now
                    {
                        c.used = c.used.saturating_add(hit.delta as u64);
                    }
                }
                drop(seen);
                let units: u64 = batch.hits.iter().map(|h| h.delta as u64).sum();
                self.reconciled.inc_by(units);
                total += units;
            }
            // Checked under the lock `apply` takes after charging: a key charged meanwhile is
            // either still counting here, or inserted again after this removal.
            let mut pending = self.pending.lock();
            for (key, policy) in chunk {
                if self.units(key, policy) == 0 {
                    pending.remove(key);
                }
            }
        }
        Ok(total)
    }

    /// The units a local counter holds now (0 when it has none).
    fn units(&self, key: &[u8], policy: &Policy) -> u64 {
        let look = Batch {
            hits: vec![Hit {
                key: key.to_vec(),
                policy: self.share.policy(policy),
                delta: 0,
                role: Role::Shadow,
                claim: Claim::None,
            }],
            admission: Admission::Reconcile,
        };
        self.store.apply_now(&look).readings[0].used_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::Period;
    use crate::clock::ManualClock;

    fn policy(algorithm: Algorithm, limit: u64, burst: u64) -> Policy {
        Policy {
            algorithm,
            period: Period::Seconds(60),
            limit,
            burst,
        }
    }

    #[test]
    fn shares_round_down_but_never_to_nothing() {
        let third = Share::of_replicas(3);
        assert_eq!(
            third
                .policy(&policy(Algorithm::FixedWindow, 100, 100))
                .limit,
            33
        );
        assert_eq!(third.policy(&policy(Algorithm::FixedWindow, 2, 2)).limit, 1);
        assert_eq!(third.policy(&policy(Algorithm::FixedWindow, 0, 0)).limit, 0);
        let bucket = third.policy(&policy(Algorithm::TokenBucket, 30, 90));
        assert_eq!((bucket.limit, bucket.burst), (10, 30));
        assert!(Share::new(0.0).is_err() && Share::new(1.5).is_err());
        assert_eq!(Share::new(1.0).map(Share::fraction), Ok(1.0));
    }

    fn hit(key: &str, p: Policy, delta: i64) -> Hit {
        Hit {
            key: key.as_bytes().to_vec(),
            policy: p,
            delta,
            role: Role::Enforce,
            claim: Claim::None,
        }
    }

    fn one(h: Hit) -> Batch {
        Batch {
            hits: vec![h],
            admission: Admission::AllOrNothing,
        }
    }

    #[tokio::test]
    async fn admits_the_share_then_hands_it_over_once() {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_040)));
        let local = LocalShare::new(Share::of_replicas(4), 1_000, clock.clone());
        let shared = MemoryStore::new(1_000, clock.clone());
        let p = policy(Algorithm::FixedWindow, 20, 20);
        let admitted = (0..10)
            .filter(|_| local.apply(&one(hit("k", p, 1))).charged)
            .count();
        assert_eq!(admitted, 5, "a quarter of 20");
        assert_eq!(local.pending(), 1);
        let handed = local
            .reconcile(&shared, Duration::from_secs(1))
            .await
            .expect("reconcile");
        assert_eq!(handed, 5);
        assert_eq!(local.pending(), 0);
        assert_eq!(
            shared.apply_now(&one(hit("k", p, 0))).readings[0].used_before,
            5
        );
        // Nothing left to hand over twice; the local counter starts afresh.
        assert_eq!(
            local.reconcile(&shared, Duration::from_secs(1)).await.ok(),
            Some(0)
        );
        assert!(local.apply(&one(hit("k", p, 1))).charged);
    }

    #[tokio::test]
    async fn ended_windows_and_refilled_buckets_hand_over_nothing() {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_040)));
        let local = LocalShare::new(Share::of_replicas(2), 1_000, clock.clone());
        let shared = MemoryStore::new(1_000, clock.clone());
        local.apply(&one(hit("w", policy(Algorithm::FixedWindow, 10, 10), 3)));
        let bucket = policy(Algorithm::TokenBucket, 10, 10);
        local.apply(&one(hit("b", bucket, 4)));
        // 30 s: a 5-per-minute local bucket refilled 2.5 of its 4 units.
        clock.advance(Duration::from_secs(30));
        let handed = local
            .reconcile(&shared, Duration::from_secs(1))
            .await
            .expect("reconcile");
        assert_eq!(
            handed,
            3 + 2,
            "the window's 3, the bucket's 1.5 still owed, rounded up"
        );
        clock.advance(Duration::from_secs(60));
        local.apply(&one(hit("w", policy(Algorithm::FixedWindow, 10, 10), 1)));
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            local.reconcile(&shared, Duration::from_secs(1)).await.ok(),
            Some(0)
        );
    }
}
