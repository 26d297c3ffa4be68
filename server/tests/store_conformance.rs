//! The behaviour every counter store must have, run against each backend: the memory store and
//! a real `redis-server`.
//!
//! Each case is written once, generic over [`Fixture`], and instantiated per backend by
//! `conformance!`. Every test gets a fresh store; the Redis tests share one server per test binary
//! and keep apart through a per-test key prefix. Backend-specific behaviour (expiry, TTLs,
//! authentication, outages) follows in its own modules.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_server::algorithm::calendar::CalendarUnit;
use sluice_server::algorithm::{Algorithm, MICROS_PER_SEC, Period, Policy};
use sluice_server::clock::ManualClock;
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::backend::redis::{Pipeline, RedisOptions, RedisStore};
use sluice_server::storage::keys::KeySchema;
use sluice_server::storage::{Admission, Batch, Hit, Outcome, Role, Store, StoreError};
use sluice_tests::redis::{Auth, RedisServer};

/// A fresh store plus what the generic cases need to inspect it.
trait Fixture {
    type S: Store;
    fn store(&self) -> &Arc<Self::S>;
    /// A counter key unique to this test.
    fn key(&self, name: &str) -> Vec<u8>;
    /// How many counters this test has stored (live or not yet reclaimed).
    async fn stored(&self) -> usize;
}

struct Memory {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

impl Memory {
    fn new() -> Self {
        // A round minute, so a window of 60 s or a divisor of it starts now.
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_040)));
        Self {
            store: Arc::new(MemoryStore::new(10_000, clock.clone())),
            clock,
        }
    }
}

impl Fixture for Memory {
    type S = MemoryStore;
    fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }
    fn key(&self, name: &str) -> Vec<u8> {
        KeySchema::default().counter_key("conformance", [("k", name)], &fixed(60, 0))
    }
    async fn stored(&self) -> usize {
        self.store.len()
    }
}

/// One server for every Redis test of this binary; it stops when the binary exits.
fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

struct Redis {
    store: Arc<RedisStore>,
    prefix: String,
    raw: redis::aio::MultiplexedConnection,
}

impl Redis {
    async fn new(test: &str) -> Self {
        Self::on(shared_server(), test).await
    }

    async fn on(server: &RedisServer, test: &str) -> Self {
        let store = RedisStore::connect(&server.url(), options())
            .await
            .expect("connect the store");
        Self {
            store: Arc::new(store),
            prefix: format!("{test}:"),
            raw: raw_connection(&server.url()).await,
        }
    }

    async fn ttl_ms(&self, key: &[u8]) -> i64 {
        redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut self.raw.clone())
            .await
            .expect("PTTL")
    }
}

impl Fixture for Redis {
    type S = RedisStore;
    fn store(&self) -> &Arc<RedisStore> {
        &self.store
    }
    fn key(&self, name: &str) -> Vec<u8> {
        KeySchema::new(self.prefix.as_str(), None).counter_key(
            "conformance",
            [("k", name)],
            &fixed(60, 0),
        )
    }
    async fn stored(&self) -> usize {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.raw.clone())
            .await
            .expect("KEYS");
        keys.len()
    }
}

fn options() -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        pool_size: 2,
        ..Default::default()
    }
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("raw redis connection")
}

fn fixed(secs: u64, limit: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FixedWindow,
        period: Period::Seconds(secs),
        limit,
        burst: limit,
    }
}

fn with(key: &[u8], policy: Policy, delta: i64, role: Role) -> Hit {
    Hit {
        key: key.to_vec(),
        policy,
        delta,
        role,
        claim: Default::default(),
    }
}

/// A hit on a one-minute fixed window.
fn hit(key: &[u8], limit: u64, delta: i64, role: Role) -> Hit {
    with(key, fixed(60, limit), delta, role)
}

fn enforce(key: &[u8], limit: u64, delta: i64) -> Hit {
    hit(key, limit, delta, Role::Enforce)
}

async fn apply_full<S: Store>(store: &S, admission: Admission, hits: Vec<Hit>) -> Outcome {
    store
        .apply(&Batch { hits, admission })
        .await
        .expect("the store answers")
}

/// What most cases compare: each hit's count before the request, and whether it was charged.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    before: Vec<u64>,
    charged: bool,
}

async fn apply<S: Store>(store: &S, admission: Admission, hits: Vec<Hit>) -> Seen {
    let out = apply_full(store, admission, hits).await;
    Seen {
        before: out.readings.iter().map(|r| r.used_before).collect(),
        charged: out.charged,
    }
}

async fn strict<S: Store>(store: &S, hits: Vec<Hit>) -> Seen {
    apply(store, Admission::AllOrNothing, hits).await
}

/// The counter's value, read with a look-only hit.
async fn value<S: Store>(store: &S, key: &[u8]) -> u64 {
    strict(store, vec![enforce(key, u64::MAX, 0)]).await.before[0]
}

fn outcome(before: &[u64], charged: bool) -> Seen {
    Seen {
        before: before.to_vec(),
        charged,
    }
}

// ---------------------------------------------------------------------------------------------
// The cases.

async fn first_hit_counts_from_zero<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("k"));
    assert_eq!(
        strict(&**s, vec![enforce(&k, 10, 1)]).await,
        outcome(&[0], true)
    );
    assert_eq!(
        strict(&**s, vec![enforce(&k, 10, 4)]).await,
        outcome(&[1], true)
    );
    assert_eq!(value(&**s, &k).await, 5);
    assert_eq!(f.stored().await, 1);
}

async fn limit_reached_exactly_then_rejected<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("k"));
    for i in 0..3 {
        assert_eq!(
            strict(&**s, vec![enforce(&k, 3, 1)]).await,
            outcome(&[i], true)
        );
    }
    assert_eq!(
        strict(&**s, vec![enforce(&k, 3, 1)]).await,
        outcome(&[3], false)
    );
    assert_eq!(value(&**s, &k).await, 3, "a rejected hit is not charged");

    // A large addend is judged on the counter after it, like the reference.
    let k2 = f.key("k2");
    assert_eq!(
        strict(&**s, vec![enforce(&k2, 4, 5)]).await,
        outcome(&[0], false)
    );
    assert_eq!(
        strict(&**s, vec![enforce(&k2, 4, 4)]).await,
        outcome(&[0], true)
    );
}

async fn all_or_nothing<F: Fixture>(f: F) {
    let (s, a, b, c) = (f.store(), f.key("a"), f.key("b"), f.key("c"));
    strict(&**s, vec![enforce(&b, 1, 1)]).await;
    strict(&**s, vec![enforce(&c, 10, 2)]).await;
    let out = strict(
        &**s,
        vec![
            enforce(&a, 10, 1),
            enforce(&b, 1, 1),
            hit(&c, 10, 1, Role::Shadow),
        ],
    )
    .await;
    assert_eq!(out, outcome(&[0, 1, 2], false));
    assert_eq!(value(&**s, &a).await, 0);
    assert_eq!(value(&**s, &b).await, 1);
    assert_eq!(value(&**s, &c).await, 2);
    assert_eq!(f.stored().await, 2, "the rejected batch created nothing");
}

async fn charge_all_charges_rejected_requests<F: Fixture>(f: F) {
    let (s, a, b) = (f.store(), f.key("a"), f.key("b"));
    strict(&**s, vec![enforce(&b, 1, 1)]).await;
    let out = apply(
        &**s,
        Admission::ChargeAll,
        vec![enforce(&a, 10, 1), enforce(&b, 1, 1)],
    )
    .await;
    assert_eq!(out.before, [0, 1]);
    assert!(out.charged);
    assert_eq!(value(&**s, &a).await, 1);
    assert_eq!(value(&**s, &b).await, 2);
}

async fn shadow_never_rejects_but_counts<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("k"));
    for i in 0..3 {
        let out = strict(&**s, vec![hit(&k, 1, 1, Role::Shadow)]).await;
        assert_eq!(out, outcome(&[i], true));
    }
    assert_eq!(value(&**s, &k).await, 3);
}

async fn quota_rejects_only_when_every_quota_hit_is_over<F: Fixture>(f: F) {
    let (s, q1, q2, e) = (f.store(), f.key("q1"), f.key("q2"), f.key("e"));
    let quota = |k: &[u8], limit| hit(k, limit, 1, Role::Quota);
    // q1 is full; q2 has room: admitted, and both are charged.
    strict(&**s, vec![quota(&q1, 1)]).await;
    let out = strict(&**s, vec![quota(&q1, 1), quota(&q2, 1)]).await;
    assert_eq!(out, outcome(&[1, 0], true));
    // Now both are over: rejected.
    let out = strict(&**s, vec![quota(&q1, 1), quota(&q2, 1)]).await;
    assert_eq!(out, outcome(&[2, 1], false));
    // A lone quota hit over its limit is "every quota hit over".
    assert!(!strict(&**s, vec![quota(&q1, 1)]).await.charged);
    // An enforced hit over still rejects, whatever the quota hits say.
    strict(&**s, vec![enforce(&e, 1, 1)]).await;
    let out = strict(&**s, vec![quota(&f.key("fresh"), 5), enforce(&e, 1, 1)]).await;
    assert_eq!(out, outcome(&[0, 1], false));
    assert_eq!(value(&**s, &e).await, 1);
}

async fn zero_delta_looks_without_charging<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("k"));
    assert_eq!(
        strict(&**s, vec![enforce(&k, 5, 0)]).await,
        outcome(&[0], true)
    );
    assert_eq!(f.stored().await, 0, "a look creates no counter");
    strict(&**s, vec![enforce(&k, 2, 2)]).await;
    // At the limit, a look is not over (after = before is not > limit).
    assert_eq!(
        strict(&**s, vec![enforce(&k, 2, 0)]).await,
        outcome(&[2], true)
    );
    assert_eq!(value(&**s, &k).await, 2);
}

async fn refund_floors_at_zero_and_creates_nothing<F: Fixture>(f: F) {
    let (s, k, absent) = (f.store(), f.key("k"), f.key("absent"));
    let out = strict(&**s, vec![enforce(&absent, 5, -3)]).await;
    assert_eq!(out, outcome(&[0], true));
    assert_eq!(f.stored().await, 0, "a refund creates no counter");

    strict(&**s, vec![enforce(&k, 10, 5)]).await;
    assert_eq!(
        strict(&**s, vec![enforce(&k, 10, -2)]).await,
        outcome(&[5], true)
    );
    assert_eq!(value(&**s, &k).await, 3);
    // A refund never rejects, even on a counter over its limit.
    assert_eq!(
        strict(&**s, vec![enforce(&k, 1, -10)]).await,
        outcome(&[3], true)
    );
    assert_eq!(value(&**s, &k).await, 0);
    assert_eq!(f.stored().await, 1, "the floored counter keeps its window");
    // Refunded room can be used again.
    assert_eq!(
        strict(&**s, vec![enforce(&k, 1, 1)]).await,
        outcome(&[0], true)
    );
}

async fn duplicate_keys_apply_in_batch_order<F: Fixture>(f: F) {
    let s = f.store();
    let k = f.key("k");
    let out = strict(&**s, vec![enforce(&k, 5, 1), enforce(&k, 5, 2)]).await;
    assert_eq!(out, outcome(&[0, 1], true));
    assert_eq!(value(&**s, &k).await, 3);

    // The second hit sees the first one and is over: the whole batch is refused.
    let tight = f.key("tight");
    let out = strict(&**s, vec![enforce(&tight, 1, 1), enforce(&tight, 1, 1)]).await;
    assert_eq!(out, outcome(&[0, 1], false));
    assert_eq!(value(&**s, &tight).await, 0);
    assert_eq!(f.stored().await, 1);

    // Under charge-all both land.
    let out = apply(
        &**s,
        Admission::ChargeAll,
        vec![enforce(&tight, 1, 1), enforce(&tight, 1, 1)],
    )
    .await;
    assert_eq!(out, outcome(&[0, 1], true));
    assert_eq!(value(&**s, &tight).await, 2);

    // A refund after a charge of the same key, and a look between them.
    let mixed = f.key("mixed");
    let out = strict(
        &**s,
        vec![
            enforce(&mixed, 10, 4),
            enforce(&mixed, 10, 0),
            enforce(&mixed, 10, -6),
            enforce(&mixed, 10, 2),
        ],
    )
    .await;
    assert_eq!(out, outcome(&[0, 4, 4, 0], true));
    assert_eq!(value(&**s, &mixed).await, 2);
}

async fn an_empty_batch_is_admitted<F: Fixture>(f: F) {
    assert_eq!(strict(&**f.store(), Vec::new()).await, outcome(&[], true));
}

async fn concurrent_requests_never_overshoot<F: Fixture>(f: F) {
    const TASKS: u64 = 64;
    const REQUESTS: u64 = 20;
    const LIMIT: u64 = 300;
    // A window no test run crosses: on Redis's real clock a one-minute window can end while the
    // tasks run, and the next window would admit another LIMIT.
    const WINDOW: u64 = u32::MAX as u64;
    let key = f.key("hot");
    let other = f.key("other");
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = Arc::clone(f.store());
            let (key, other) = (key.clone(), other.clone());
            tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..REQUESTS {
                    let out = strict(
                        &*store,
                        vec![
                            with(&other, fixed(WINDOW, u64::MAX), 1, Role::Enforce),
                            with(&key, fixed(WINDOW, LIMIT), 1, Role::Enforce),
                        ],
                    )
                    .await;
                    admitted += u64::from(out.charged);
                }
                admitted
            })
        })
        .collect();
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.expect("task");
    }
    assert_eq!(admitted, LIMIT);
    let look = |k: &[u8]| vec![with(k, fixed(WINDOW, u64::MAX), 0, Role::Enforce)];
    assert_eq!(strict(&**f.store(), look(&key)).await.before[0], LIMIT);
    assert_eq!(
        strict(&**f.store(), look(&other)).await.before[0],
        LIMIT,
        "the rejected requests charged nothing elsewhere"
    );
}

/// Requests started together on one key (on Redis, queued behind a call in flight and sent
/// together as one script call) admit exactly the limit.
async fn concurrent_requests_on_one_key_admit_exactly_the_limit<F: Fixture>(f: F) {
    let key = f.key("together");
    let year = Policy {
        period: Period::Calendar(CalendarUnit::Year, 1),
        ..fixed(60, 10)
    };
    let requests = (0..50).map(|_| strict(&**f.store(), vec![with(&key, year, 1, Role::Enforce)]));
    let seen = futures::future::join_all(requests).await;
    let admitted = seen.iter().filter(|s| s.charged).count();
    assert_eq!(admitted, 10);
    let look = strict(&**f.store(), vec![with(&key, year, 0, Role::Enforce)]).await;
    assert_eq!(look.before, [10]);
}

async fn token_bucket_burst_then_exact_refill<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("bucket"));
    // 2 per second (500 ms a token), bursts of 3.
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        period: Period::Seconds(1),
        limit: 2,
        burst: 3,
    };
    let take = |delta| with(&k, bucket, delta, Role::Enforce);
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(3)]).await;
    assert!(out.charged);
    assert_eq!(out.readings[0].remaining(true), 0);
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(1)]).await;
    if !out.charged {
        // Redis's clock moves: unless 500 ms passed, the wait is at most one token's refill.
        let wait = out.readings[0].wait;
        assert!(wait > 0 && wait <= 500_000, "wait {wait} µs");
        assert!(out.readings[0].over);
    }
    // A refund gives tokens back, never more than a full bucket.
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(-10)]).await;
    assert!(out.charged);
    assert_eq!(out.readings[0].remaining(true), 3);
    assert_eq!(f.stored().await, 0, "a full bucket needs no counter");
}

async fn sliding_window_rejects_within_the_window<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("sliding"));
    let sliding = Policy {
        algorithm: Algorithm::SlidingWindow,
        period: Period::Seconds(600),
        limit: 3,
        burst: 3,
    };
    let take = |delta| with(&k, sliding, delta, Role::Enforce);
    assert!(strict(&**s, vec![take(2)]).await.charged);
    assert!(strict(&**s, vec![take(1)]).await.charged);
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(1)]).await;
    assert!(!out.charged);
    // The hits leave at the earliest one window after their 30 s sub-window began.
    let wait = out.readings[0].wait;
    assert!(
        wait > 570 * MICROS_PER_SEC && wait <= 630 * MICROS_PER_SEC,
        "wait {wait} µs"
    );
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(-1)]).await;
    assert_eq!(out.readings[0].used_after, 2);
    assert!(strict(&**s, vec![take(1)]).await.charged);
    assert_eq!(f.stored().await, 1);
}

async fn every_algorithm_in_one_all_or_nothing_batch<F: Fixture>(f: F) {
    let s = f.store();
    let (a, b, c) = (f.key("fixed"), f.key("sliding"), f.key("bucket"));
    let sliding = Policy {
        algorithm: Algorithm::SlidingWindow,
        ..fixed(3600, 5)
    };
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        ..fixed(3600, 1)
    };
    let batch = |delta_c| {
        vec![
            with(&a, fixed(3600, 5), 1, Role::Enforce),
            with(&b, sliding, 1, Role::Enforce),
            with(&c, bucket, delta_c, Role::Enforce),
        ]
    };
    assert!(strict(&**s, batch(1)).await.charged);
    // The bucket (1 per hour) is empty: the whole request is refused, and the fixed and sliding
    // windows keep their counts.
    let seen = strict(&**s, batch(1)).await;
    assert_eq!(seen, outcome(&[1, 1, 1], false));
    // Looking at the bucket does not need a token: admitted, and the others are charged.
    let seen = strict(&**s, batch(0)).await;
    assert_eq!(seen, outcome(&[1, 1, 1], true));
    let look = strict(&**s, vec![with(&a, fixed(3600, 5), 0, Role::Enforce)]).await;
    assert_eq!(look.before, [2]);
}

async fn calendar_month_quota_counts_costs<F: Fixture>(f: F) {
    let (s, k) = (f.store(), f.key("storage"));
    let month = Policy {
        period: Period::Calendar(CalendarUnit::Month, 1),
        ..fixed(0, 10_737_418_240)
    };
    let take = |delta| with(&k, month, delta, Role::Enforce);
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(10_000_000_000)]).await;
    assert!(out.charged);
    assert_eq!(out.readings[0].remaining(true), 737_418_240);
    // Until the first of next month: never more than 31 days.
    assert!(out.readings[0].reset <= 31 * 86_400 * MICROS_PER_SEC);
    let out = apply_full(&**s, Admission::AllOrNothing, vec![take(1_000_000_000)]).await;
    assert!(!out.charged);
    assert_eq!(out.readings[0].wait, out.readings[0].reset);
}

/// Instantiates every generic case for both backends.
/// A dry run reads as the strict request would (readings and the verdict) and writes nothing,
/// on every algorithm.
async fn a_dry_run_decides_like_a_check_and_writes_nothing<F: Fixture>(f: F) {
    let (s, a, b) = (f.store(), f.key("a"), f.key("b"));
    strict(&**s, vec![enforce(&a, 3, 2)]).await;
    let fits = vec![enforce(&a, 3, 1), enforce(&b, 5, 2)];
    let dry = apply_full(&**s, Admission::DryRun, fits.clone()).await;
    assert!(!dry.charged);
    assert_eq!(
        dry.readings
            .iter()
            .map(|r| (r.used_before, r.used_after, r.over))
            .collect::<Vec<_>>(),
        [(2, 3, false), (0, 2, false)]
    );
    assert_eq!(value(&**s, &a).await, 2, "a dry run charged");
    assert_eq!(value(&**s, &b).await, 0, "a dry run charged");
    assert_eq!(f.stored().await, 1, "a dry run stored a counter");
    // Over: the dry run says so, and the strict request then agrees.
    let over = vec![enforce(&a, 3, 2)];
    let dry = apply_full(&**s, Admission::DryRun, over.clone()).await;
    assert!(dry.readings[0].over);
    let real = apply_full(&**s, Admission::AllOrNothing, over).await;
    // (Redis steps at its own clock: the waits differ by the microseconds between the calls.)
    let counts = |o: &Outcome| {
        o.readings
            .iter()
            .map(|r| (r.used_before, r.used_after, r.over))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&dry), counts(&real));
    assert!(!real.charged);
    // Every algorithm steps without writing.
    let policies = [
        Policy {
            algorithm: Algorithm::TokenBucket,
            ..fixed(60, 5)
        },
        Policy {
            algorithm: Algorithm::SlidingWindow,
            ..fixed(60, 5)
        },
    ];
    for (i, policy) in policies.into_iter().enumerate() {
        let k = f.key(&format!("alg{i}"));
        let dry = apply_full(
            &**s,
            Admission::DryRun,
            vec![with(&k, policy, 2, Role::Enforce)],
        )
        .await;
        assert_eq!(
            (dry.readings[0].used_before, dry.readings[0].over),
            (0, false)
        );
        let again = apply_full(
            &**s,
            Admission::DryRun,
            vec![with(&k, policy, 2, Role::Enforce)],
        )
        .await;
        assert_eq!(
            counts(&again),
            counts(&dry),
            "algorithm {i}: the first dry run wrote"
        );
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Memory::new()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Redis::new(stringify!($case)).await).await;
                }
            )*
        }
    };
}

conformance!(
    first_hit_counts_from_zero,
    limit_reached_exactly_then_rejected,
    all_or_nothing,
    charge_all_charges_rejected_requests,
    shadow_never_rejects_but_counts,
    quota_rejects_only_when_every_quota_hit_is_over,
    zero_delta_looks_without_charging,
    refund_floors_at_zero_and_creates_nothing,
    duplicate_keys_apply_in_batch_order,
    an_empty_batch_is_admitted,
    concurrent_requests_never_overshoot,
    concurrent_requests_on_one_key_admit_exactly_the_limit,
    token_bucket_burst_then_exact_refill,
    sliding_window_rejects_within_the_window,
    every_algorithm_in_one_all_or_nothing_batch,
    calendar_month_quota_counts_costs,
    a_dry_run_decides_like_a_check_and_writes_nothing,
);

// ---------------------------------------------------------------------------------------------
// Memory only.

#[tokio::test]
async fn memory_counters_expire_with_their_window() {
    let f = Memory::new();
    let (s, k) = (&*f.store, f.key("k"));
    let h = with(&k, fixed(30, 2), 2, Role::Enforce);
    strict(s, vec![h.clone()]).await;
    assert!(!strict(s, vec![h.clone()]).await.charged);

    f.clock.advance(Duration::from_secs(29));
    assert_eq!(value(s, &k).await, 2, "still inside the window");
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(value(s, &k).await, 0, "gone at the window's end");
    f.store.sweep();
    assert!(f.store.is_empty());
    assert_eq!(strict(s, vec![h]).await, outcome(&[0], true));
}

// ---------------------------------------------------------------------------------------------
// Redis only.

/// Each state's TTL is when it stops carrying information: the window's end, the bucket's refill,
/// the newest sub-window leaving. Later hits in the same window keep the window's end.
#[tokio::test]
async fn redis_expiry_follows_the_state() {
    let f = Redis::new("redis_expiry").await;
    let s = &*f.store;
    let within = |ttl: i64, low: i64, high: i64| {
        assert!(
            ttl >= low && ttl <= high,
            "PTTL {ttl} not in [{low}, {high}]"
        );
    };

    let k = f.key("fixed");
    let h = with(&k, fixed(90, 100), 1, Role::Enforce);
    strict(s, vec![h.clone()]).await;
    within(f.ttl_ms(&k).await, 1, 90_000);
    let first = f.ttl_ms(&k).await;
    strict(s, vec![h.clone()]).await;
    strict(s, vec![with(&k, fixed(90, 100), -1, Role::Enforce)]).await;
    // The same window end, give or take the milliseconds between the calls.
    within(f.ttl_ms(&k).await, first - 1_000, first);

    let k = f.key("bucket");
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        ..fixed(100, 10)
    };
    strict(s, vec![with(&k, bucket, 3, Role::Enforce)]).await;
    // Three tokens at 10 s each: full again in 30 s.
    within(f.ttl_ms(&k).await, 29_000, 30_000);

    let k = f.key("sliding");
    let sliding = Policy {
        algorithm: Algorithm::SlidingWindow,
        ..fixed(20, 10)
    };
    strict(s, vec![with(&k, sliding, 1, Role::Enforce)]).await;
    // The current one-second sub-window stops counting 20 s after it ends, which is 20 to 21 s
    // after the hit; less the milliseconds between the script and PTTL on a loaded machine.
    within(f.ttl_ms(&k).await, 19_000, 21_000);
}

/// Redis counts what a script runs: a fixed window's first hit in a window sets the TTL, later
/// hits in that window write the count alone (`TIME`, `HMGET`, `HSET`), and a token bucket sets
/// its state and TTL in one `SET`.
#[tokio::test]
async fn redis_steady_hits_run_the_fewest_commands() {
    let server = RedisServer::start();
    let f = Redis::on(&server, "redis_commands").await;
    let s = &*f.store;
    let calls = |info: &str, command: &str| -> u64 {
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().expect("a call count"))
    };
    let stats = || async {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut f.raw.clone())
            .await
            .expect("INFO");
        info
    };

    let k = f.key("fixed");
    // A calendar year, so no window ends between the hits.
    let year = Policy {
        period: Period::Calendar(CalendarUnit::Year, 1),
        ..fixed(60, 100)
    };
    let h = with(&k, year, 1, Role::Enforce);
    for _ in 0..3 {
        strict(s, vec![h.clone()]).await;
    }
    let info = stats().await;
    assert_eq!(calls(&info, "time"), 3);
    assert_eq!(calls(&info, "hmget"), 3);
    assert_eq!(calls(&info, "hset"), 3);
    assert_eq!(
        calls(&info, "pexpire"),
        1,
        "only the window's first hit sets the TTL"
    );
    let look = strict(s, vec![with(&k, year, 0, Role::Enforce)]).await;
    assert_eq!(look.before, [3]);
    assert!(
        f.ttl_ms(&k).await > 0,
        "the TTL set by the first hit is kept"
    );

    // The same through the compact form (a window in seconds; 2^30 s, so none ends meanwhile).
    let k = f.key("fixed-compact");
    let long = Policy {
        period: Period::Seconds(1 << 30),
        ..fixed(60, 100)
    };
    for _ in 0..3 {
        strict(s, vec![with(&k, long, 1, Role::Enforce)]).await;
    }
    let info = stats().await;
    assert_eq!(calls(&info, "hmget"), 7, "the year's four and three");
    assert_eq!(calls(&info, "hset"), 6);
    assert_eq!(calls(&info, "pexpire"), 2);
    let look = strict(s, vec![with(&k, long, 0, Role::Enforce)]).await;
    assert_eq!(look.before, [3]);
    assert!(f.ttl_ms(&k).await > 0);

    let k = f.key("bucket");
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        ..fixed(100, 10)
    };
    strict(s, vec![with(&k, bucket, 1, Role::Enforce)]).await;
    let info = stats().await;
    assert_eq!(calls(&info, "set"), 1);
    assert_eq!(
        calls(&info, "pexpire"),
        2,
        "the bucket's TTL comes with its SET"
    );
    assert!(f.ttl_ms(&k).await > 0);
}

/// Requests that queue behind a call in flight go to Redis together as one `EVALSHA` (the batcher),
/// and each is decided exactly as it would be alone, in arrival order: the same readings and
/// admissions as the same requests sent one after another, across algorithms, roles and
/// multi-hit requests.
#[tokio::test]
async fn redis_batched_requests_decide_as_sequential_ones() {
    let server = RedisServer::start();
    // One call in flight at most, so arrival order is Redis's order.
    let opts = RedisOptions {
        pool_size: 1,
        ..options()
    };
    let store = RedisStore::connect(&server.url(), opts)
        .await
        .expect("connect the store");
    let mut raw = raw_connection(&server.url()).await;
    let schema = KeySchema::new("batched:", None);
    // Periods no test run crosses, and a bucket refilling one token a day.
    let year = Policy {
        period: Period::Calendar(CalendarUnit::Year, 1),
        ..fixed(60, 10)
    };
    let sliding = Policy {
        algorithm: Algorithm::SlidingWindow,
        ..fixed(3600, 7)
    };
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        ..fixed(86_400, 5)
    };
    let quota = |limit| Policy {
        limit,
        burst: limit,
        ..year
    };
    let requests = |run: &str| -> Vec<Vec<Hit>> {
        let key = |name: &str| schema.counter_key(run, [("k", name)], &year);
        (0..60)
            .map(|i| match i % 4 {
                0 => vec![with(&key("fixed"), year, 1, Role::Enforce)],
                1 => vec![
                    with(&key("sliding"), sliding, 2, Role::Enforce),
                    with(&key("fixed"), year, 1, Role::Enforce),
                ],
                2 => vec![
                    with(&key("bucket"), bucket, 1, Role::Enforce),
                    with(&key("fixed"), year, 1, Role::Shadow),
                ],
                _ => vec![
                    with(&key("q1"), quota(3), 1, Role::Quota),
                    with(&key("q2"), quota(2), 1, Role::Quota),
                    with(&key("sliding"), sliding, 1, Role::Enforce),
                ],
            })
            .collect()
    };
    // Everything but the times, which differ between the two runs.
    let summary = |out: Outcome| {
        let readings: Vec<_> = out
            .readings
            .iter()
            .map(|r| (r.used_before, r.used_after, r.over))
            .collect();
        (out.charged, readings)
    };

    let mut sequential = Vec::new();
    for hits in requests("sequential") {
        sequential.push(summary(
            apply_full(&store, Admission::AllOrNothing, hits).await,
        ));
    }
    let calls_before = evalsha_calls(&mut raw).await;
    let together = requests("together")
        .into_iter()
        .map(|hits| apply_full(&store, Admission::AllOrNothing, hits));
    let batched: Vec<_> = futures::future::join_all(together)
        .await
        .into_iter()
        .map(summary)
        .collect();
    let calls = evalsha_calls(&mut raw).await - calls_before;

    assert_eq!(batched, sequential);
    assert!(
        sequential.iter().any(|(charged, _)| !charged),
        "the limits are reached, so order matters"
    );
    // The first request goes alone; the rest queue behind it and go together (64 at most per call).
    assert!(calls < 10, "60 requests took {calls} EVALSHA calls");
}

/// With a pipeline window (the reference's `REDIS_PIPELINE_WINDOW`), a request that could leave
/// alone waits for company: requests made meanwhile share its call, decided in arrival order, and
/// the call leaves early once `limit` requests wait.
#[tokio::test]
async fn redis_pipeline_window_gathers_requests_that_could_have_gone_alone() {
    let server = RedisServer::start();
    let mut raw = raw_connection(&server.url()).await;
    let schema = KeySchema::new("window:", None);
    let url = server.url();
    let store = |pipeline| {
        // Four places: without a window, requests made together each find one and go alone.
        let opts = RedisOptions {
            pool_size: 4,
            timeout: Duration::from_secs(60),
            pipeline,
            ..options()
        };
        RedisStore::connect(&url, opts)
    };
    let together = |store: RedisStore, run: &'static str, n: usize| {
        let key = schema.counter_key(run, [("k", "a")], &fixed(60, 10));
        async move {
            let requests = (0..n)
                .map(|_| apply_full(&store, Admission::AllOrNothing, vec![enforce(&key, 10, 1)]));
            let outs = futures::future::join_all(requests).await;
            outs.iter()
                .map(|o| o.readings[0].used_before)
                .collect::<Vec<_>>()
        }
    };

    // A window no run waits out: only the limit can send the call.
    let long = Pipeline {
        window: Duration::from_secs(30),
        limit: 5,
    };
    let waits = store(long).await.expect("connect");
    let before = evalsha_calls(&mut raw).await;
    let started = Instant::now();
    assert_eq!(together(waits, "limit", 5).await, [0, 1, 2, 3, 4]);
    assert_eq!(
        evalsha_calls(&mut raw).await - before,
        1,
        "five requests, one call"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the fifth request sent the call, not the window's end"
    );

    // A short window: two requests made together leave together when it ends...
    let short = Pipeline {
        window: Duration::from_millis(5),
        limit: 64,
    };
    let gathers = store(short).await.expect("connect");
    let before = evalsha_calls(&mut raw).await;
    assert_eq!(together(gathers, "short", 2).await, [0, 1]);
    assert_eq!(
        evalsha_calls(&mut raw).await - before,
        1,
        "one call for both"
    );

    // ...where without one each finds a free place and goes alone.
    let alone = store(Pipeline::default()).await.expect("connect");
    let before = evalsha_calls(&mut raw).await;
    assert_eq!(together(alone, "alone", 2).await, [0, 1]);
    assert_eq!(evalsha_calls(&mut raw).await - before, 2, "a call each");
}

async fn evalsha_calls(raw: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

#[tokio::test]
async fn redis_expired_counters_read_as_absent() {
    let f = Redis::new("redis_expired").await;
    let (s, k) = (&*f.store, f.key("k"));
    strict(s, vec![enforce(&k, 1, 1)]).await;
    let _: () = redis::cmd("PEXPIRE")
        .arg(&k)
        .arg(1)
        .query_async(&mut f.raw.clone())
        .await
        .expect("PEXPIRE");
    // Bounded wait for Redis's millisecond clock to pass the expiry.
    let deadline = Instant::now() + Duration::from_secs(2);
    while value(s, &k).await != 0 {
        assert!(Instant::now() < deadline, "the counter never expired");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let out = strict(s, vec![enforce(&k, 1, 1)]).await;
    assert_eq!(out, outcome(&[0], true));
    let ttl = f.ttl_ms(&k).await;
    assert!(
        ttl > 0 && ttl <= 60_000,
        "a new counter gets the window's expiry: {ttl}"
    );
}

/// The stored shapes are what `scripts.rs` documents, so operators can read them.
#[tokio::test]
async fn redis_stored_states_are_readable() {
    let f = Redis::new("redis_shapes").await;
    let s = &*f.store;
    let k = f.key("fixed");
    strict(s, vec![with(&k, fixed(60, 10), 4, Role::Enforce)]).await;
    let (start, count): (u64, u64) = redis::cmd("HMGET")
        .arg(&k)
        .arg("w")
        .arg("n")
        .query_async(&mut f.raw.clone())
        .await
        .expect("HMGET");
    assert_eq!(count, 4);
    assert_eq!(start % 60, 0, "the window start, aligned to the epoch");
    let k = f.key("bucket");
    let bucket = Policy {
        algorithm: Algorithm::TokenBucket,
        ..fixed(60, 10)
    };
    strict(s, vec![with(&k, bucket, 1, Role::Enforce)]).await;
    let tat: u64 = redis::cmd("GET")
        .arg(&k)
        .query_async(&mut f.raw.clone())
        .await
        .expect("GET");
    assert!(tat > 1_700_000_000 * MICROS_PER_SEC, "a TAT in µs: {tat}");
}

#[tokio::test]
async fn redis_reloads_a_flushed_script() {
    let f = Redis::new("redis_noscript").await;
    let k = f.key("k");
    strict(&*f.store, vec![enforce(&k, 5, 1)]).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut f.raw.clone())
        .await
        .expect("SCRIPT FLUSH");
    let out = strict(&*f.store, vec![enforce(&k, 5, 1)]).await;
    assert_eq!(out, outcome(&[1], true));
}

#[tokio::test]
async fn redis_ping() {
    let f = Redis::new("redis_ping").await;
    f.store.ping().await.expect("PING");
}

fn refused(err: &StoreError) -> bool {
    matches!(err, StoreError::Server(_) | StoreError::Unreachable(_))
}

#[tokio::test]
async fn redis_password_auth() {
    let server = RedisServer::start_with(Auth::Password("s3cret".into()));
    let f = Redis::on(&server, "auth").await;
    let k = f.key("k");
    assert_eq!(strict(&*f.store, vec![enforce(&k, 1, 1)]).await.before, [0]);

    let err = RedisStore::connect(&server.url_without_auth(), options())
        .await
        .err()
        .expect("no password must be refused");
    assert!(refused(&err), "{err:?}");
    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = RedisStore::connect(&wrong, options())
        .await
        .err()
        .expect("a wrong password must be refused");
    assert!(refused(&err), "{err:?}");
}

#[tokio::test]
async fn redis_acl_user_auth() {
    let server = RedisServer::start_with(Auth::User {
        name: "sluice".into(),
        password: "pw".into(),
    });
    let f = Redis::on(&server, "acl").await;
    let k = f.key("k");
    assert_eq!(strict(&*f.store, vec![enforce(&k, 1, 1)]).await.before, [0]);
    let wrong = format!("redis://sluice:nope@127.0.0.1:{}", server.port());
    let err = RedisStore::connect(&wrong, options())
        .await
        .err()
        .expect("a wrong password must be refused");
    assert!(refused(&err), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_a_bounded_transient_error() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(500);
    let store = RedisStore::connect(
        &server.url(),
        RedisOptions {
            timeout,
            pool_size: 2,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let k = b"outage:k".to_vec();
    strict(&store, vec![enforce(&k, 5, 1)]).await;
    server.stop();

    // Every connection of the pool, more than once: the first call finds the socket closed, the
    // next ones find the reconnect failing.
    for _ in 0..5 {
        let started = Instant::now();
        let err = store
            .apply(&Batch {
                hits: vec![enforce(&k, 5, 1)],
                admission: Admission::AllOrNothing,
            })
            .await
            .expect_err("Redis is down");
        assert!(err.is_transient(), "{err:?}");
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "took {:?}",
            started.elapsed()
        );
        let err = store.ping().await.expect_err("Redis is down");
        assert!(err.is_transient(), "{err:?}");
    }

    // Back up (empty): the store reconnects on its own within a few calls.
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        match apply_try(&store, vec![enforce(&k, 5, 1)]).await {
            Ok(out) => break out,
            Err(err) => {
                assert!(err.is_transient(), "{err:?}");
                assert!(Instant::now() < deadline, "no recovery: {err:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(out, outcome(&[0], true));
}

async fn apply_try<S: Store>(store: &S, hits: Vec<Hit>) -> Result<Seen, StoreError> {
    let out = store
        .apply(&Batch {
            hits,
            admission: Admission::AllOrNothing,
        })
        .await?;
    Ok(Seen {
        before: out.readings.iter().map(|r| r.used_before).collect(),
        charged: out.charged,
    })
}
