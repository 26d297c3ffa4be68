//! The two admissions behind fleet operation, on both stores and on Redis's own clock:
//! `Admission::Undo` (taking back a charge at the instant it was made, which keeps a request
//! spanning Redis Cluster slots all-or-nothing) and `Admission::Reconcile` (counting hits a replica
//! let through from its local share during an outage). The differential property test holds the
//! two stores to the same answers on a pinned clock; this checks what only the real clock shows.

use std::sync::Arc;
use std::time::Duration;

use sluice_server::algorithm::{Algorithm, Claim, MICROS_PER_SEC, Period, Policy};
use sluice_server::clock::{Clock, ManualClock};
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::backend::redis::{RedisOptions, RedisStore};
use sluice_server::storage::{Admission, Batch, Hit, Outcome, Role, Store};
use sluice_tests::redis::RedisServer;

fn policy(algorithm: Algorithm, secs: u64, limit: u64) -> Policy {
    Policy {
        algorithm,
        period: Period::Seconds(secs),
        limit,
        burst: limit,
    }
}

fn hit(key: &str, policy: Policy, delta: i64) -> Hit {
    Hit {
        key: key.as_bytes().to_vec(),
        policy,
        delta,
        role: Role::Enforce,
        claim: Claim::None,
    }
}

async fn apply(store: &impl Store, admission: Admission, hits: Vec<Hit>) -> Outcome {
    store
        .apply(&Batch { hits, admission })
        .await
        .expect("the store answers")
}

async fn used(store: &impl Store, key: &str, policy: Policy) -> u64 {
    apply(store, Admission::AllOrNothing, vec![hit(key, policy, 0)])
        .await
        .readings[0]
        .used_before
}

/// A charge, another request's charge, then the undo of the first at its own instant: the other
/// request's units stay, whatever the algorithm.
async fn undo_takes_back_exactly_its_charge(store: &impl Store, now: impl Fn() -> u64) {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let key = format!("undo:{}", algorithm.as_str());
        let p = policy(algorithm, 3600, 10);
        let at = now();
        apply(store, Admission::AllOrNothing, vec![hit(&key, p, 4)]).await;
        apply(store, Admission::AllOrNothing, vec![hit(&key, p, 3)]).await;
        assert_eq!(used(store, &key, p).await, 7, "{key}");
        let undo = apply(store, Admission::Undo { at }, vec![hit(&key, p, -4)]).await;
        assert!(undo.charged);
        assert_eq!(used(store, &key, p).await, 3, "{key}");
    }
}

/// Hits admitted elsewhere are counted in full, past the limit, a token bucket included.
async fn reconcile_counts_past_the_limit(store: &impl Store) {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let key = format!("reconcile:{}", algorithm.as_str());
        let p = policy(algorithm, 3600, 10);
        apply(store, Admission::AllOrNothing, vec![hit(&key, p, 8)]).await;
        let out = apply(store, Admission::Reconcile, vec![hit(&key, p, 5)]).await;
        assert!(out.charged && out.readings[0].over, "{key}: {out:?}");
        let look = apply(store, Admission::AllOrNothing, vec![hit(&key, p, 1)]).await;
        assert!(look.readings[0].over && !look.charged, "{key}: {look:?}");
    }
    // The bucket's debt beyond its burst takes its time to repay: 13 units of a 10-per-hour
    // bucket leave it empty for 18 more minutes than a full drain.
    let p = policy(Algorithm::TokenBucket, 3600, 10);
    let out = apply(
        store,
        Admission::AllOrNothing,
        vec![hit("reconcile:token_bucket", p, 1)],
    )
    .await;
    assert!(out.readings[0].wait > 18 * 60 * MICROS_PER_SEC, "{out:?}");
}

#[tokio::test]
async fn memory_store() {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_040)));
    let store = MemoryStore::new(1_000, clock.clone());
    undo_takes_back_exactly_its_charge(&store, || clock.now().as_micros() as u64).await;
    reconcile_counts_past_the_limit(&store).await;
}

async fn redis_now(url: &str) -> u64 {
    let mut conn = redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("TIME");
    secs * MICROS_PER_SEC + micros
}

/// Charges `delta` on a fresh `key` and returns an instant of Redis's clock in the same second as
/// the charge (so in the same window of any whole-second window), retrying when a second boundary
/// fell between the two.
async fn charge_within_one_second(
    store: &RedisStore,
    server: &RedisServer,
    key: &str,
    p: Policy,
    delta: i64,
) -> u64 {
    for _ in 0..10 {
        server.cli(&["DEL", key]);
        let at = redis_now(&server.url()).await;
        apply(store, Admission::AllOrNothing, vec![hit(key, p, delta)]).await;
        if redis_now(&server.url()).await / MICROS_PER_SEC == at / MICROS_PER_SEC {
            return at;
        }
    }
    panic!("every charge straddled a second boundary");
}

#[tokio::test]
async fn redis_store_on_its_own_clock() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&server.url(), RedisOptions::default())
        .await
        .expect("connect");
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let key = format!("undo:{}", algorithm.as_str());
        let p = policy(algorithm, 3600, 10);
        let at = charge_within_one_second(&store, &server, &key, p, 4).await;
        apply(&store, Admission::AllOrNothing, vec![hit(&key, p, 3)]).await;
        apply(&store, Admission::Undo { at }, vec![hit(&key, p, -4)]).await;
        assert_eq!(used(&store, &key, p).await, 3, "{key}");
        // An undo stepped in the past still leaves a TTL on Redis's clock.
        let ttl: i64 = server.cli(&["PTTL", &key]).trim().parse().expect("PTTL");
        assert!(ttl > 0, "{key}: PTTL {ttl}");
    }
    reconcile_counts_past_the_limit(&store).await;
    // An undo for a window that has ended touches nothing: the new window's units stay.
    let p = policy(Algorithm::FixedWindow, 1, 10);
    let at = charge_within_one_second(&store, &server, "rolled", p, 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while redis_now(&server.url()).await / MICROS_PER_SEC == at / MICROS_PER_SEC {
        assert!(
            std::time::Instant::now() < deadline,
            "Redis's clock stands still"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    apply(&store, Admission::AllOrNothing, vec![hit("rolled", p, 5)]).await;
    apply(&store, Admission::Undo { at }, vec![hit("rolled", p, -2)]).await;
    assert_eq!(used(&store, "rolled", p).await, 5);
}
