//! Unit tests of the batched store on the in-memory store and a manual clock.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::algorithm::{Claim, Period};
use crate::clock::ManualClock;
use crate::storage::Role;

/// 1_700_000_040 is a minute boundary.
const T0: u64 = 1_700_000_040;

fn policy(limit: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FixedWindow,
        period: Period::Seconds(60),
        limit,
        burst: limit,
    }
}

fn hit(key: &str, limit: u64, delta: i64) -> Hit {
    Hit {
        key: key.as_bytes().to_vec(),
        policy: policy(limit),
        delta,
        role: Role::Enforce,
        claim: Claim::None,
    }
}

fn batch(hits: Vec<Hit>) -> Batch {
    Batch {
        hits,
        admission: Admission::AllOrNothing,
    }
}

/// The shared store, which can be taken down.
struct Flaky {
    store: Arc<MemoryStore>,
    down: AtomicBool,
}

impl Store for Flaky {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unreachable("down".into()));
        }
        Ok(self.store.apply_now(batch))
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn holders(&self, _: &[u8]) -> Result<Vec<Lease>, StoreError> {
        Ok(Vec::new())
    }
}

impl Shared for Arc<Flaky> {
    async fn decide(
        &self,
        batch: &Batch,
        _: Option<FailureMode>,
    ) -> (Result<Outcome, StoreError>, bool) {
        (self.apply(batch).await, true)
    }
}

struct Setup {
    clock: Arc<ManualClock>,
    shared: Arc<Flaky>,
}

impl Setup {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(T0)));
        let store = Arc::new(MemoryStore::new(1_000, clock.clone()));
        Self {
            clock,
            shared: Arc::new(Flaky {
                store,
                down: AtomicBool::new(false),
            }),
        }
    }

    /// A replica taking `1/replicas` of each limit between acknowledgements.
    fn replica(&self, replicas: u32) -> Batched<Arc<Flaky>> {
        let options = BatchOptions {
            // The task never fires during a test: flushes are called explicitly.
            interval: Duration::from_secs(3600),
            share: Share::of_replicas(replicas),
            max_counters: 1_000,
        };
        Batched::new(
            self.shared.clone(),
            options,
            self.clock.clone(),
            &mut Registry::default(),
        )
    }

    /// The shared count of `key` (a look, charging nothing).
    fn count(&self, key: &str) -> u64 {
        let look = batch(vec![hit(key, 1_000, 0)]);
        self.shared.store.apply_now(&look).readings[0].used_before
    }
}

async fn admitted(r: &Batched<Arc<Flaky>>, key: &str, limit: u64) -> bool {
    let b = batch(vec![hit(key, limit, 1)]);
    r.apply(&b).await.expect("a decision").charged
}

#[tokio::test]
async fn admits_locally_after_the_first_check_and_flushes_the_hits() {
    let s = Setup::new();
    let r = s.replica(1);
    // The window's first check reads the shared count: it goes to the store.
    assert!(admitted(&r, "k", 10).await);
    assert_eq!((s.count("k"), r.unacknowledged()), (1, 0));
    for _ in 0..6 {
        assert!(admitted(&r, "k", 10).await);
    }
    assert_eq!(s.count("k"), 1, "decided without the store");
    assert_eq!(r.unacknowledged(), 6);
    assert_eq!(r.inner.metrics.admits.get(), 6);
    assert_eq!(r.flush().await.ok(), Some(6));
    assert_eq!((s.count("k"), r.unacknowledged()), (7, 0));
    assert_eq!(r.flush().await.ok(), Some(0), "nothing flushed twice");
    // The rest of the limit, then rejections from the view, with no store call.
    for _ in 0..3 {
        assert!(admitted(&r, "k", 10).await);
    }
    let b = batch(vec![hit("k", 10, 1)]);
    let outcome = r.apply(&b).await.expect("a decision");
    assert!(!outcome.charged && outcome.readings[0].over);
    assert_eq!(outcome.readings[0].wait, 60 * MICROS_PER_SEC);
    assert_eq!(r.inner.metrics.rejects.get(), 1);
    assert_eq!(r.flush().await.ok(), Some(3));
    assert_eq!(s.count("k"), 10);
}

#[tokio::test]
async fn a_flush_refreshes_the_view_with_the_other_replicas_hits() {
    let s = Setup::new();
    let (a, b) = (s.replica(1), s.replica(1));
    assert!(admitted(&a, "k", 10).await && admitted(&b, "k", 10).await);
    for _ in 0..4 {
        assert!(admitted(&a, "k", 10).await);
    }
    assert_eq!(a.flush().await.ok(), Some(4));
    // b still believes 2 - 1 (its own) = 1 other hit; its flush learns of a's 4.
    assert!(admitted(&b, "k", 10).await);
    assert_eq!(b.flush().await.ok(), Some(1));
    assert_eq!(s.count("k"), 7);
    let view = b.inner.views.lock()["k".as_bytes()];
    assert_eq!((view.shared, view.pending, view.in_flight), (7, 0, 0));
    // So b admits exactly the 3 left.
    let more = [(); 5].len();
    let mut n = 0;
    for _ in 0..more {
        n += usize::from(admitted(&b, "k", 10).await);
    }
    assert_eq!(n, 3);
}

#[tokio::test]
async fn a_request_charges_all_its_local_counters_or_none() {
    let s = Setup::new();
    let r = s.replica(1);
    let both = |d| batch(vec![hit("a", 10, d), hit("b", 2, d)]);
    assert!(r.apply(&both(1)).await.expect("seed").charged);
    assert!(r.apply(&both(1)).await.expect("local").charged);
    // b is at its limit of 2: the request is rejected and a is not charged either.
    let outcome = r.apply(&both(1)).await.expect("local");
    assert!(!outcome.charged);
    assert!(!outcome.readings[0].over && outcome.readings[1].over);
    assert_eq!(r.unacknowledged(), 2, "one local hit on each");
    assert_eq!(r.flush().await.ok(), Some(2));
    assert_eq!((s.count("a"), s.count("b")), (2, 2));
}

#[tokio::test]
async fn past_its_allowance_a_replica_asks_the_store() {
    let s = Setup::new();
    // limit 10 over 2 replicas: q = 5 unacknowledged hits.
    let r = s.replica(2);
    assert!(admitted(&r, "k", 10).await);
    for _ in 0..5 {
        assert!(admitted(&r, "k", 10).await);
    }
    assert_eq!((s.count("k"), r.unacknowledged()), (1, 5));
    // The sixth is decided (and counted) by the store.
    assert!(admitted(&r, "k", 10).await);
    assert_eq!((s.count("k"), r.unacknowledged()), (2, 5));
    assert_eq!(r.flush().await.ok(), Some(5));
    assert_eq!(s.count("k"), 7);
}

#[tokio::test]
async fn failed_flushes_keep_their_hits_and_ended_windows_drop_theirs() {
    let s = Setup::new();
    let r = s.replica(1);
    assert!(admitted(&r, "k", 100).await);
    for _ in 0..3 {
        assert!(admitted(&r, "k", 100).await);
    }
    s.shared.down.store(true, Ordering::SeqCst);
    assert!(r.flush().await.is_err());
    assert!(r.flush().await.is_err());
    assert_eq!(r.unacknowledged(), 3, "kept for the next flush");
    assert_eq!(r.inner.metrics.flush_failures.get(), 2);
    s.shared.down.store(false, Ordering::SeqCst);
    assert_eq!(r.flush().await.ok(), Some(3));
    assert_eq!(s.count("k"), 4, "every hit once");
    // Hits of a window that ended unflushed are dropped; the next window starts at the store.
    assert!(admitted(&r, "k", 100).await);
    s.clock.advance(Duration::from_secs(60));
    assert_eq!(r.flush().await.ok(), Some(0));
    assert_eq!(r.inner.metrics.expired_hits.get(), 1);
    assert!(admitted(&r, "k", 100).await);
    assert_eq!((s.count("k"), r.unacknowledged()), (1, 0));
}

#[tokio::test]
async fn other_algorithms_refunds_and_charge_all_go_to_the_store() {
    let s = Setup::new();
    let r = s.replica(1);
    assert!(admitted(&r, "k", 10).await);
    let mut sliding = hit("k", 10, 1);
    sliding.policy.algorithm = Algorithm::SlidingWindow;
    sliding.key = b"s".to_vec();
    let passes = [
        batch(vec![sliding.clone()]),
        batch(vec![sliding]),
        batch(vec![hit("k", 10, -1)]),
        Batch {
            hits: vec![hit("k", 10, 1)],
            admission: Admission::ChargeAll,
        },
    ];
    for b in &passes {
        assert!(r.apply(b).await.expect("a decision").charged);
    }
    assert_eq!(r.unacknowledged(), 0);
    assert_eq!(s.count("k"), 1, "one hit, one refund, one hit");
    assert_eq!(r.inner.metrics.admits.get(), 0);
}

/// Three replicas taking turns in a fixed pseudo-random order under demand far past the limit,
/// flushing at pseudo-random moments: each window admits at least the limit and at most
/// `limit + N × q`, and the store ends up holding every admitted hit.
#[tokio::test]
async fn a_window_admits_within_the_documented_bound() {
    const N: u32 = 3;
    let mut over = 0;
    for (seed, limit) in [(1u64, 30u64), (7, 10), (42, 100), (99, 2)] {
        let s = Setup::new();
        let replicas: Vec<_> = (0..N).map(|_| s.replica(N)).collect();
        let q = Share::of_replicas(N).policy(&policy(limit)).limit;
        let mut rng = seed;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut total = 0;
        for _ in 0..limit * 10 {
            let r = &replicas[(next() % u64::from(N)) as usize];
            if next() % 4 == 0 {
                let _ = r.flush().await;
            }
            total += u64::from(admitted(r, "k", limit).await);
        }
        for r in &replicas {
            assert_eq!(r.flush().await.ok().map(|_| r.unacknowledged()), Some(0));
        }
        let bound = limit + u64::from(N) * q;
        assert!(
            (limit..=bound).contains(&total),
            "limit {limit}: admitted {total}, bound {bound}"
        );
        assert_eq!(
            s.count("k"),
            total,
            "limit {limit}: every admitted hit stored"
        );
        over += total - limit;
    }
    assert!(
        over > 0,
        "the schedules do over-admit: the bound is exercised"
    );
}
