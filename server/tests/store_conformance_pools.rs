//! The pools every store must hold the same way: concurrency leases, weighted fair share and
//! `overflow: parent` pairs, on the memory store and on a real `redis-server`.
//!
//! Both stores run on one manual clock here (the Redis store pins the script's time to it), so
//! lease TTLs and windows move exactly. Redis's own clock and key expiry are covered at the end,
//! with bounded polling.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sluice_server::algorithm::lease::{Lease, LeaseId};
use sluice_server::algorithm::share::Tenant;
use sluice_server::algorithm::{Algorithm, Claim, MICROS_PER_SEC, Period, Policy};
use sluice_server::clock::ManualClock;
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::backend::redis::{RedisClock, RedisOptions, RedisStore};
use sluice_server::storage::{Admission, Batch, Hit, Outcome, Role, Store};
use sluice_tests::redis::RedisServer;

/// A round minute.
const T0: Duration = Duration::from_secs(1_700_000_040);

/// A store on a manual clock.
trait Fixture {
    type S: Store;
    fn store(&self) -> &Arc<Self::S>;
    fn clock(&self) -> &ManualClock;
    fn key(&self, name: &str) -> Vec<u8>;
    fn reclaimed(&self) -> u64;
}

struct Memory {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
}

impl Fixture for Memory {
    type S = MemoryStore;
    fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
    fn key(&self, name: &str) -> Vec<u8> {
        name.as_bytes().to_vec()
    }
    fn reclaimed(&self) -> u64 {
        self.store.leases_reclaimed()
    }
}

fn memory() -> Memory {
    let clock = Arc::new(ManualClock::new(T0));
    Memory {
        store: Arc::new(MemoryStore::new(10_000, clock.clone())),
        clock,
    }
}

fn shared_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

struct Redis {
    store: Arc<RedisStore>,
    clock: Arc<ManualClock>,
    prefix: String,
}

impl Fixture for Redis {
    type S = RedisStore;
    fn store(&self) -> &Arc<RedisStore> {
        &self.store
    }
    fn clock(&self) -> &ManualClock {
        &self.clock
    }
    fn key(&self, name: &str) -> Vec<u8> {
        format!("{}{name}", self.prefix).into_bytes()
    }
    fn reclaimed(&self) -> u64 {
        self.store.leases_reclaimed()
    }
}

async fn redis(test: &str) -> Redis {
    let clock = Arc::new(ManualClock::new(T0));
    let store = RedisStore::connect(
        &shared_server().url(),
        RedisOptions {
            timeout: Duration::from_secs(2),
            pool_size: 2,
            clock: RedisClock::Pinned(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    Redis {
        store: Arc::new(store),
        clock,
        prefix: format!("pools:{test}:"),
    }
}

fn pool(slots: u64, ttl_secs: u64) -> Policy {
    Policy {
        algorithm: Algorithm::Concurrency,
        period: Period::Seconds(ttl_secs),
        limit: slots,
        burst: slots,
    }
}

fn share(capacity: u64, secs: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FairShare,
        period: Period::Seconds(secs),
        limit: capacity,
        burst: capacity,
    }
}

fn fixed(limit: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FixedWindow,
        period: Period::Seconds(3600),
        limit,
        burst: limit,
    }
}

fn id(n: u8) -> LeaseId {
    LeaseId([n; 16])
}

fn lease_hit(key: &[u8], policy: Policy, delta: i64, lease: Option<LeaseId>) -> Hit {
    Hit {
        key: key.to_vec(),
        policy,
        delta,
        role: Role::Enforce,
        claim: lease.map_or(Claim::None, Claim::Lease),
    }
}

fn tenant_hit(key: &[u8], policy: Policy, name: &str, weight: u32) -> Hit {
    Hit {
        key: key.to_vec(),
        policy,
        delta: 1,
        role: Role::Enforce,
        claim: Claim::Tenant(Tenant {
            id: name.as_bytes().to_vec(),
            weight,
        }),
    }
}

async fn apply<S: Store>(store: &S, admission: Admission, hits: Vec<Hit>) -> Outcome {
    store
        .apply(&Batch { hits, admission })
        .await
        .expect("the store answers")
}

async fn one<S: Store>(store: &S, hit: Hit) -> Outcome {
    apply(store, Admission::AllOrNothing, vec![hit]).await
}

const SEC: u64 = MICROS_PER_SEC;

// ---------------------------------------------------------------------------------------------
// Leases.

async fn leases_fill_the_pool_then_wait_for_the_soonest_expiry<F: Fixture>(f: F) {
    let (s, k) = (&**f.store(), f.key("uploads"));
    let p = pool(2, 60);
    assert!(one(s, lease_hit(&k, p, 1, Some(id(1)))).await.charged);
    f.clock().advance(Duration::from_secs(10));
    let second = one(s, lease_hit(&k, p, 1, Some(id(2)))).await;
    assert!(second.charged);
    assert_eq!(second.readings[0].used_after, 2);
    assert_eq!(second.readings[0].reset, 60 * SEC);
    let full = one(s, lease_hit(&k, p, 1, Some(id(3)))).await;
    assert!(!full.charged);
    assert!(full.readings[0].over);
    assert_eq!(
        full.readings[0].wait,
        50 * SEC,
        "lease 1 expires 50 s from now"
    );
    let held = s.holders(&k).await.expect("holders");
    let ids: Vec<LeaseId> = held.iter().map(|l: &Lease| l.id).collect();
    assert_eq!(ids, [id(1), id(2)], "soonest expiry first");
    assert_eq!(
        held[0].expires_at,
        (T0 + Duration::from_secs(60)).as_micros() as u64
    );
}

async fn release_renew_and_reclaim<F: Fixture>(f: F) {
    let (s, k) = (&**f.store(), f.key("jobs"));
    let p = pool(1, 30);
    assert!(one(s, lease_hit(&k, p, 1, Some(id(1)))).await.charged);
    assert!(!one(s, lease_hit(&k, p, 1, Some(id(2)))).await.charged);
    // Someone else's id releases nothing.
    let stranger = one(s, lease_hit(&k, p, -1, Some(id(9)))).await;
    assert_eq!(stranger.readings[0].used_after, 1);
    // Renewing never rejects and moves the expiry.
    f.clock().advance(Duration::from_secs(29));
    let renewed = one(s, lease_hit(&k, p, 1, Some(id(1)))).await;
    assert!(renewed.charged);
    assert_eq!(renewed.readings[0].reset, 30 * SEC);
    let released = one(s, lease_hit(&k, p, -1, Some(id(1)))).await;
    assert_eq!(
        (
            released.readings[0].used_before,
            released.readings[0].used_after
        ),
        (1, 0)
    );
    assert!(s.holders(&k).await.expect("holders").is_empty());

    // A holder that vanished: its lease stops counting after the TTL, and the next write
    // reclaims it.
    assert!(one(s, lease_hit(&k, p, 1, Some(id(4)))).await.charged);
    f.clock().advance(Duration::from_secs(29));
    assert!(!one(s, lease_hit(&k, p, 1, Some(id(5)))).await.charged);
    let before = f.reclaimed();
    f.clock().advance(Duration::from_secs(1));
    assert!(s.holders(&k).await.expect("holders").is_empty());
    let taken = one(s, lease_hit(&k, p, 1, Some(id(5)))).await;
    assert!(taken.charged, "the expired lease's slot is free");
    assert_eq!(taken.readings[0].used_before, 0);
    assert_eq!(f.reclaimed() - before, 1);
}

async fn looks_and_anonymous_releases<F: Fixture>(f: F) {
    let (s, k) = (&**f.store(), f.key("pool"));
    let p = pool(3, 60);
    for n in 1..=2 {
        one(s, lease_hit(&k, p, 1, Some(id(n)))).await;
    }
    let look = one(s, lease_hit(&k, p, 0, None)).await;
    assert_eq!(look.readings[0].remaining(false), 1);
    assert_eq!(
        one(s, lease_hit(&k, p, 1, None)).await.readings[0].used_after,
        2,
        "no id, no lease"
    );
    // The admin reset: a release without an id empties the pool.
    let reset = one(s, lease_hit(&k, p, -1, None)).await;
    assert_eq!(reset.readings[0].used_after, 0);
    assert!(one(s, lease_hit(&k, p, 0, None)).await.readings[0].used_before == 0);
}

async fn a_rejected_request_takes_no_lease<F: Fixture>(f: F) {
    let (s, k, other) = (&**f.store(), f.key("pool"), f.key("rate"));
    let p = pool(5, 60);
    one(s, lease_hit(&other, fixed(1), 1, None)).await;
    for admission in [Admission::AllOrNothing, Admission::ChargeAll] {
        let out = apply(
            s,
            admission,
            vec![
                lease_hit(&k, p, 1, Some(id(1))),
                lease_hit(&other, fixed(1), 1, None),
            ],
        )
        .await;
        assert!(out.readings[1].over);
        assert!(!out.readings[0].over);
        let look = one(s, lease_hit(&k, p, 0, None)).await;
        assert_eq!(look.readings[0].used_before, 0, "{admission:?}");
    }
}

async fn concurrent_acquisitions_never_exceed_the_pool<F: Fixture>(f: F) {
    const TASKS: u8 = 48;
    const SLOTS: u64 = 7;
    let k = f.key("race");
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let store = Arc::clone(f.store());
            let k = k.clone();
            tokio::spawn(async move {
                let out = one(&*store, lease_hit(&k, pool(SLOTS, 600), 1, Some(id(n)))).await;
                u64::from(out.charged)
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("task");
    }
    assert_eq!(admitted, SLOTS);
    assert_eq!(
        f.store().holders(&k).await.expect("holders").len() as u64,
        SLOTS
    );
}

// ---------------------------------------------------------------------------------------------
// Fair share.

/// Each tenant sends `rate` evenly spaced requests per window, interleaved, for `windows` windows
/// from the clock's current instant (a window start). Returns admissions per window per tenant.
async fn drive<F: Fixture>(
    f: &F,
    key: &[u8],
    policy: Policy,
    windows: u64,
    tenants: &[(&str, u32, u64)],
) -> Vec<Vec<u64>> {
    let window = policy.period.nominal_secs() * SEC;
    let start = f.clock().now_micros();
    let mut arrivals: Vec<(u64, usize)> = Vec::new();
    for (t, &(_, _, rate)) in tenants.iter().enumerate() {
        let total = rate * windows;
        for n in 0..total {
            arrivals.push((n * window * windows / total, t));
        }
    }
    arrivals.sort();
    let mut admitted = vec![vec![0u64; tenants.len()]; windows as usize];
    for (at, t) in arrivals {
        f.clock().set(Duration::from_micros(start + at));
        let (name, weight, _) = tenants[t];
        let out = one(&**f.store(), tenant_hit(key, policy, name, weight)).await;
        if out.charged {
            admitted[(at / window) as usize][t] += 1;
        }
    }
    f.clock()
        .set(Duration::from_micros(start + windows * window));
    admitted
}

trait ClockExt {
    fn now_micros(&self) -> u64;
}

impl ClockExt for ManualClock {
    fn now_micros(&self) -> u64 {
        use sluice_server::clock::Clock;
        self.now().as_micros() as u64
    }
}

async fn fair_share_two_to_one_both_saturating<F: Fixture>(f: F) {
    let k = f.key("share");
    let got = drive(
        &f,
        &k,
        share(150, 10),
        3,
        &[("gold", 2, 400), ("basic", 1, 400)],
    )
    .await;
    for (w, window) in got.iter().enumerate() {
        assert_eq!(
            window[0] + window[1],
            150,
            "window {w} fully used: {window:?}"
        );
        let ratio = window[0] as f64 / window[1] as f64;
        assert!((ratio / 2.0 - 1.0).abs() <= 0.05, "window {w}: {window:?}");
    }
}

async fn fair_share_idle_and_new_tenants<F: Fixture>(f: F) {
    let k = f.key("share");
    let p = share(100, 10);
    let both = drive(&f, &k, p, 2, &[("a", 1, 300), ("b", 1, 300)]).await;
    assert_eq!(both[1], [50, 50]);
    // B goes idle: A has the whole capacity from the next full window on.
    let alone = drive(&f, &k, p, 2, &[("a", 1, 300)]).await;
    assert!(alone[0][0] > 50, "{alone:?}");
    assert_eq!(alone[1][0], 100);
    // C arrives: it gets its share (weight 3 of 4) in its first window.
    let joined = drive(&f, &k, p, 1, &[("a", 1, 300), ("c", 3, 300)]).await;
    assert_eq!(joined[0], [25, 75]);
}

async fn fair_share_borrower_never_takes_a_guarantee<F: Fixture>(f: F) {
    let k = f.key("share");
    let p = share(200, 10);
    // `steady` asks for 60 of its 100 every window; `greedy` asks for 1000.
    let got = drive(&f, &k, p, 3, &[("greedy", 1, 1000), ("steady", 1, 60)]).await;
    for window in &got[1..] {
        assert_eq!(window[1], 60, "{got:?}");
        assert_eq!(window[0], 140, "the rest is lent: {got:?}");
    }
}

async fn fair_share_records_refused_demand<F: Fixture>(f: F) {
    let (s, k, gate) = (&**f.store(), f.key("share"), f.key("gate"));
    let p = share(10, 60);
    // `a` takes the whole idle pool; `b`'s requests are refused by another limit, yet its
    // arrivals make it active, so `a` can no longer borrow its share.
    for _ in 0..5 {
        one(s, tenant_hit(&k, p, "a", 1)).await;
    }
    one(s, lease_hit(&gate, fixed(0), 1, None)).await;
    let refused = apply(
        s,
        Admission::AllOrNothing,
        vec![
            tenant_hit(&k, p, "b", 1),
            lease_hit(&gate, fixed(0), 1, None),
        ],
    )
    .await;
    assert!(!refused.charged);
    let a = one(s, tenant_hit(&k, p, "a", 1)).await;
    assert!(!a.charged, "b's reserve holds the rest: {a:?}");
    let b = one(s, tenant_hit(&k, p, "b", 1)).await;
    assert!(b.charged);
}

// ---------------------------------------------------------------------------------------------
// Overflow: parent.

fn overflow_pair(own: &[u8], parent: &[u8], own_limit: u64, parent_limit: u64) -> Vec<Hit> {
    let mut o = lease_hit(parent, fixed(parent_limit), 1, None);
    o.role = Role::Overflow { of: 0 };
    vec![lease_hit(own, fixed(own_limit), 1, None), o]
}

async fn overflow_draws_on_the_parent_only_when_over<F: Fixture>(f: F) {
    let (s, app, team) = (&**f.store(), f.key("app"), f.key("team"));
    let look = |k: &[u8]| lease_hit(k, fixed(u64::MAX), 0, None);
    for _ in 0..2 {
        assert!(
            apply(s, Admission::AllOrNothing, overflow_pair(&app, &team, 2, 3))
                .await
                .charged
        );
    }
    assert_eq!(
        one(s, look(&team)).await.readings[0].used_before,
        0,
        "within its own limit"
    );
    for n in 1..=3 {
        let out = apply(s, Admission::AllOrNothing, overflow_pair(&app, &team, 2, 3)).await;
        assert!(out.charged, "overflow {n}");
        assert!(out.readings[0].over);
    }
    assert_eq!(
        one(s, look(&app)).await.readings[0].used_before,
        2,
        "never beyond its own"
    );
    assert_eq!(one(s, look(&team)).await.readings[0].used_before, 3);
    let out = apply(s, Admission::AllOrNothing, overflow_pair(&app, &team, 2, 3)).await;
    assert!(!out.charged, "the team's budget is spent too");
    assert_eq!(one(s, look(&team)).await.readings[0].used_before, 3);
    // Under charge-all the refused request is counted on both, as every limit is.
    let out = apply(s, Admission::ChargeAll, overflow_pair(&app, &team, 2, 3)).await;
    assert!(out.charged);
    assert_eq!(one(s, look(&app)).await.readings[0].used_before, 3);
    assert_eq!(one(s, look(&team)).await.readings[0].used_before, 4);
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::memory()).await;
                }
            )*
        }
        mod redis_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::redis(stringify!($case)).await).await;
                }
            )*
        }
    };
}

conformance!(
    leases_fill_the_pool_then_wait_for_the_soonest_expiry,
    release_renew_and_reclaim,
    looks_and_anonymous_releases,
    a_rejected_request_takes_no_lease,
    concurrent_acquisitions_never_exceed_the_pool,
    fair_share_two_to_one_both_saturating,
    fair_share_idle_and_new_tenants,
    fair_share_borrower_never_takes_a_guarantee,
    fair_share_records_refused_demand,
    overflow_draws_on_the_parent_only_when_over,
);

// ---------------------------------------------------------------------------------------------
// Redis's own clock: a holder that vanished loses its lease after the TTL, and the pool's key
// expires once nothing in it matters.

#[tokio::test]
async fn redis_reclaims_a_vanished_holders_lease_on_its_own_clock() {
    let server = shared_server();
    let store = RedisStore::connect(
        &server.url(),
        RedisOptions {
            timeout: Duration::from_secs(2),
            pool_size: 1,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let k = b"pools:real-clock:pool".to_vec();
    let p = pool(1, 1);
    assert!(one(&store, lease_hit(&k, p, 1, Some(id(1)))).await.charged);
    assert!(!one(&store, lease_hit(&k, p, 1, Some(id(2)))).await.charged);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&k)
        .query_async(
            &mut redis::Client::open(server.url())
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("connect"),
        )
        .await
        .expect("PTTL");
    assert!(
        ttl > 1_000 && ttl <= 2_000,
        "one TTL past the last expiry: {ttl} ms"
    );
    // The holder never comes back: within a bound, the slot frees by itself.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if one(&store, lease_hit(&k, p, 1, Some(id(2)))).await.charged {
            break;
        }
        assert!(Instant::now() < deadline, "the lease was never reclaimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.leases_reclaimed(), 1);
    let held = store.holders(&k).await.expect("holders");
    assert_eq!(held.iter().map(|l| l.id).collect::<Vec<_>>(), [id(2)]);
}
