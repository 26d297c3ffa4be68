//! Fair queues on real Redis deployments, on Redis's own clock: a Redis Cluster grants and orders
//! exactly as one Redis (and the memory store) does, for a pool key with a tenant's hash tag and
//! for one hashed whole, in a concurrency pool and in a fair-share pool (there on a clock pinned
//! by the test, since a fair share depends on where in its window it is); the queue keys expire
//! after their latest deadline and vanish with the last ticket or grant; and a grant made through
//! one store wakes the waiters of another store over pub/sub, also after the subscription was
//! killed, until the store is dropped, and on a Sentinel deployment speaking TLS only.
//!
//! The exact mirror of the algorithm, instant by instant, is `redis_queues_match_memory` in
//! `proptest_store_differential.rs`.

use std::sync::Arc;
use std::time::Duration;

use sluice_server::algorithm::lease::LeaseId;
use sluice_server::algorithm::queue::{Op, Status, Waiter};
use sluice_server::algorithm::share::Tenant;
use sluice_server::algorithm::{Algorithm, Claim, MICROS_PER_SEC, Period, Policy, Reading};
use sluice_server::clock::ManualClock;
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::backend::redis::queue::{CHANNEL, queue_keys};
use sluice_server::storage::backend::redis::{
    RedisClock, RedisOptions, RedisStore, RedisTarget, RedisType, TargetOptions, TlsFiles,
};
use sluice_server::storage::{Admission, Batch, Hit, Role, Store};
use sluice_tests::cluster::Cluster;
use sluice_tests::node::{RedisNode, wait_until};
use sluice_tests::redis::RedisServer;
use sluice_tests::sentinel::SentinelSetup;
use sluice_tests::tls::Pki;

/// Long enough that nothing expires while a test runs.
const TTL_SECS: u64 = 60;
const WAIT: u64 = 30 * MICROS_PER_SEC;
/// How long a wake-up may take to arrive.
const WAKE_WITHIN: Duration = Duration::from_secs(5);

fn pool(slots: u64) -> Policy {
    Policy {
        algorithm: Algorithm::Concurrency,
        period: Period::Seconds(TTL_SECS),
        limit: slots,
        burst: slots,
    }
}

/// A store on the one Redis `server`, for a deployment with key prefix `prefix`.
async fn connect(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(&server.url(), options(prefix))
        .await
        .expect("connect to Redis")
}

fn options(prefix: &str) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        pool_size: 2,
        key_prefix: prefix.into(),
        ..Default::default()
    }
}

/// Ids whose byte order is not their arrival order: `order` leads.
fn id(order: u8, n: u8) -> LeaseId {
    let mut bytes = [0u8; 16];
    bytes[0] = order;
    bytes[15] = n;
    LeaseId(bytes)
}

fn enqueue(id: LeaseId, tenant: &str, weight: u32, max_depth: u64) -> Op {
    Op::Enqueue {
        waiter: Waiter {
            id,
            tenant: tenant.as_bytes().to_vec(),
            weight,
            cost: 1,
            wait: WAIT,
        },
        max_depth,
    }
}

async fn release<S: Store>(store: &S, key: &[u8], lease: LeaseId) {
    let batch = Batch {
        hits: vec![Hit {
            key: key.to_vec(),
            policy: pool(2),
            delta: -1,
            role: Role::Enforce,
            claim: Claim::Lease(lease),
        }],
        admission: Admission::AllOrNothing,
    };
    let outcome = store.apply(&batch).await.expect("release");
    assert!(outcome.charged);
}

/// Two slots, two tenants backlogged 2:1, a withdrawal while waiting, refusals, releases and a
/// withdrawn grant: every step's status, grants and depth.
async fn scenario<S: Store>(store: &S, key: &[u8]) -> Vec<(Status, Vec<LeaseId>, u64)> {
    let mut steps = Vec::new();
    let mut step = async |op: Op| {
        let out = store.queue(key, &pool(2), &op).await.expect("queue op");
        steps.push((out.status, out.granted.clone(), out.depth));
        out
    };
    step(enqueue(id(9, 1), "first", 1, 9)).await;
    step(enqueue(id(9, 2), "first", 1, 9)).await;
    for n in 0..5 {
        // Equal tags across the two tenants are ordered by id: `order` decides.
        step(enqueue(id(200 - n * 40, 10 + n), "heavy", 2, 9)).await;
        step(enqueue(id(n * 40, 20 + n), "light", 1, 9)).await;
    }
    step(enqueue(id(7, 30), "late", 1, 9)).await;
    step(enqueue(id(7, 31), "heavy", 2, 9)).await;
    step(enqueue(id(7, 32), "none", 0, 99)).await;
    step(Op::Withdraw(id(40, 21))).await;
    let mut holders = vec![id(9, 1), id(9, 2)];
    for _ in 0..6 {
        release(store, key, holders.remove(0)).await;
        let out = step(Op::Poll(id(7, 30))).await;
        holders.extend(out.granted);
    }
    // A grant given up: its slot passes on within the same operation.
    let gone = holders.remove(0);
    let out = step(Op::Withdraw(gone)).await;
    assert_eq!(out.granted.len(), 1, "{out:?}");
    steps
}

fn memory_scenario() -> Vec<(Status, Vec<LeaseId>, u64)> {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
    let memory = MemoryStore::new(1_000, clock);
    futures::executor::block_on(scenario(&memory, b"pool|l"))
}

fn cluster_key(tag: &str) -> Vec<u8> {
    format!("q:sl:{{{tag}}}5:queue|4:user|1:u|l").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grants_and_orders_as_one_redis_does() {
    let expected = memory_scenario();
    assert!(expected.iter().any(|s| s.0 == Status::Full));
    assert!(expected.iter().any(|s| s.0 == Status::Unweighted));
    assert!(expected.iter().filter(|s| !s.1.is_empty()).count() >= 8);

    let server = RedisServer::start();
    let single = connect(&server, "q:").await;
    let key = b"q:sl:5:queue|4:user|1:u|l";
    assert_eq!(scenario(&single, key).await, expected, "one Redis");

    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let target = RedisTarget::parse(
        RedisType::Cluster,
        &cluster.seeds(),
        TargetOptions::default(),
    )
    .expect("cluster seeds");
    let store = RedisStore::open(target, options("q:"))
        .await
        .expect("open the Cluster");
    // A tenant's tag (`shard_by`), and the empty tag of a counter on its own: the queue keys
    // must land in the pool's slot either way, or the script would be refused (CROSSSLOT).
    for key in [cluster_key("acme"), cluster_key("")] {
        assert_eq!(
            scenario(&store, &key).await,
            expected,
            "{}",
            String::from_utf8_lossy(&key)
        );
        let node = &cluster.nodes
            [tokio::task::block_in_place(|| cluster.master_of(&String::from_utf8_lossy(&key)))];
        // The queue still holds tickets: its keys expire a little after the latest deadline.
        for k in queue_keys(&key, true).iter().take(3) {
            let k = String::from_utf8_lossy(k);
            let ttl: i64 = node.cli(&["PTTL", &k]).trim().parse().expect("PTTL");
            assert!((25_000..=31_000).contains(&ttl), "{k}: {ttl}");
        }
    }

    // Wake-ups: the subscription is on the first seed, and a grant on any master reaches it over
    // the cluster bus.
    let mut wakeups = store.queue_changes().expect("Redis has wake-ups");
    subscribed_on(&cluster.nodes[0], &format!("q:{CHANNEL}"));
    let key = (0..)
        .map(|n| cluster_key(&format!("t{n}")))
        .find(|k| {
            tokio::task::block_in_place(|| cluster.master_of(&String::from_utf8_lossy(k))) != 0
        })
        .expect("a key on another master");
    // Granted to its own caller: nothing to announce. The waiting ticket the withdrawal passes
    // the slot to is announced.
    let op = async |op: Op| store.queue(&key, &pool(1), &op).await.expect("queue op");
    assert_eq!(
        op(enqueue(id(1, 1), "t", 1, 9)).await.status,
        Status::Granted
    );
    assert_eq!(
        op(enqueue(id(1, 2), "t", 1, 9)).await.status,
        Status::Waiting { ahead: 0 }
    );
    assert_eq!(op(Op::Withdraw(id(1, 1))).await.granted, vec![id(1, 2)]);
    let woken = tokio::time::timeout(WAKE_WITHIN, wakeups.recv()).await;
    assert_eq!(woken.expect("a wake-up in time").expect("open"), key);
}

/// A fair-share pool of `capacity` units per window of `WINDOW_SECS`.
fn shares(capacity: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FairShare,
        period: Period::Seconds(WINDOW_SECS),
        limit: capacity,
        burst: capacity,
    }
}

const WINDOW_SECS: u64 = 10;
/// A window's start: the fair-share scenario's clock starts a second into it.
const WINDOW_START: u64 = 1_700_000_000;

fn ask(id: LeaseId, tenant: &str, weight: u32, cost: u64, max_depth: u64) -> Op {
    Op::Enqueue {
        waiter: Waiter {
            id,
            tenant: tenant.as_bytes().to_vec(),
            weight,
            cost,
            wait: WAIT,
        },
        max_depth,
    }
}

/// What a fair-share scenario saw: every step's status, grants, depth and time to the next move,
/// and at the end each tenant's reading of the pool (a look, delta 0).
type ShareSteps = (Vec<(Status, Vec<LeaseId>, u64, u64)>, Vec<Reading>);

/// A fair-share pool of 4 units, tenants `heavy` (weight 3) and `light` (1) asking 1 to 3 units
/// on `clock`: grants while the window's units last, a tenant's later tickets behind its refused
/// one, refusals (oversized, weightless, full), a granted ticket withdrawn (refunded and passed
/// on), a waiter withdrawn, and the next window's refill going to the queue by weight.
async fn share_scenario<S: Store>(store: &S, clock: &ManualClock, key: &[u8]) -> ShareSteps {
    clock.set(Duration::from_secs(WINDOW_START + 1));
    let mut steps = Vec::new();
    let mut step = async |op: Op| {
        let out = store.queue(key, &shares(4), &op).await.expect("queue op");
        steps.push((out.status, out.granted.clone(), out.depth, out.moves_in));
        out
    };
    step(ask(id(9, 1), "heavy", 3, 2, 9)).await;
    step(ask(id(9, 2), "light", 1, 1, 9)).await;
    step(ask(id(8, 3), "heavy", 3, 2, 9)).await;
    step(ask(id(200, 4), "light", 1, 1, 9)).await;
    step(ask(id(7, 5), "heavy", 3, 5, 9)).await;
    step(ask(id(7, 6), "none", 0, 1, 9)).await;
    step(ask(id(7, 7), "light", 1, 1, 2)).await;
    clock.advance(Duration::from_millis(1500));
    step(Op::Withdraw(id(9, 1))).await;
    for n in 0..3 {
        step(ask(id(100 - n * 30, 10 + n), "heavy", 3, 1, 9)).await;
        step(ask(id(n * 30, 20 + n), "light", 1, 2, 9)).await;
    }
    step(Op::Withdraw(id(30, 21))).await;
    step(Op::Poll(id(0, 20))).await;
    // The next window: its units go to the queue first.
    clock.advance(Duration::from_secs(WINDOW_SECS));
    step(Op::Poll(id(0, 20))).await;
    step(ask(id(1, 30), "late", 1, 1, 9)).await;
    let mut readings = Vec::new();
    for (tenant, weight) in [("heavy", 3), ("light", 1), ("late", 1)] {
        let look = Batch {
            hits: vec![Hit {
                key: key.to_vec(),
                policy: shares(4),
                delta: 0,
                role: Role::Enforce,
                claim: Claim::Tenant(Tenant {
                    id: tenant.as_bytes().to_vec(),
                    weight,
                }),
            }],
            admission: Admission::AllOrNothing,
        };
        readings.extend(store.apply(&look).await.expect("look").readings);
    }
    (steps, readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_queues_fair_share_as_one_redis_does() {
    let clock = Arc::new(ManualClock::new(Duration::ZERO));
    let memory = MemoryStore::new(1_000, clock.clone());
    let expected = share_scenario(&memory, &clock, b"pool|s").await;
    let statuses: Vec<Status> = expected.0.iter().map(|s| s.0).collect();
    for status in [
        Status::Oversized,
        Status::Unweighted,
        Status::Full,
        Status::Gone,
    ] {
        assert!(statuses.contains(&status), "{status:?} in {expected:?}");
    }
    // Grants at the first asks, after the withdrawn grant's refund, and at the refill.
    let granting: Vec<usize> = (expected.0.iter().enumerate())
        .filter(|(_, s)| !s.1.is_empty())
        .map(|(n, _)| n)
        .collect();
    assert!(granting.len() >= 4, "{expected:?}");
    assert!(
        granting.contains(&7) && granting.contains(&16),
        "{expected:?}"
    );

    // The time is the test's: a fair share depends on where in the window each step falls.
    let pinned = || RedisOptions {
        clock: RedisClock::Pinned(clock.clone()),
        ..options("q:")
    };
    let server = RedisServer::start();
    let single = RedisStore::connect(&server.url(), pinned())
        .await
        .expect("connect to Redis");
    let key = b"q:sl:5:queue|4:user|1:u|s";
    assert_eq!(
        share_scenario(&single, &clock, key).await,
        expected,
        "one Redis"
    );

    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let target = RedisTarget::parse(
        RedisType::Cluster,
        &cluster.seeds(),
        TargetOptions::default(),
    )
    .expect("cluster seeds");
    let store = RedisStore::open(target, pinned())
        .await
        .expect("open the Cluster");
    for tag in ["acme", ""] {
        let key = format!("q:sl:{{{tag}}}5:queue|4:user|1:u|s").into_bytes();
        let name = String::from_utf8_lossy(&key).into_owned();
        assert_eq!(
            share_scenario(&store, &clock, &key).await,
            expected,
            "{name}"
        );
        // The tickets' fields and the grants live in the pool's slot, beside the pool.
        let node = &cluster.nodes[tokio::task::block_in_place(|| cluster.master_of(&name))];
        for k in [&key[..]]
            .into_iter()
            .chain(queue_keys(&key, true).iter().map(|k| &k[..]))
        {
            let k = String::from_utf8_lossy(k);
            if k.ends_with("|qi") || k.ends_with("|qg") || k.ends_with("|s") {
                assert_eq!(node.cli(&["EXISTS", &k]).trim(), "1", "{k}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_share_grants_keep_the_queue_keys_until_withdrawn() {
    let server = RedisServer::start();
    let store = connect(&server, "").await;
    let mut raw = raw_connection(&server).await;
    let key = b"sl:5:shares|s";
    let keys = queue_keys(key, false);
    let pool = Policy {
        period: Period::Seconds(TTL_SECS),
        ..shares(1)
    };
    let out = store
        .queue(key, &pool, &ask(id(1, 1), "t", 1, 1, 9))
        .await
        .expect("enqueue");
    assert_eq!((out.status, out.depth), (Status::Granted, 0));
    // No ticket waits, but the grant is kept (with its fields) until its waiter's deadline.
    for k in [&keys[4], &keys[5]] {
        let ttl = pttl(&mut raw, k).await;
        assert!((25_000..=31_000).contains(&ttl), "{ttl}");
    }
    // The pool's state expires as a batch's would: at the end of the window after its own.
    let ttl = pttl(&mut raw, key).await;
    assert!(TTL_SECS as i64 * 1000 - 5000 < ttl && ttl <= 2 * TTL_SECS as i64 * 1000);
    let out = store
        .queue(key, &pool, &ask(id(1, 2), "t", 1, 2, 9))
        .await
        .expect("enqueue");
    assert_eq!(out.status, Status::Oversized);
    // The grant withdrawn, its unit is refunded and the queue is no state.
    let out = store
        .queue(key, &pool, &Op::Withdraw(id(1, 1)))
        .await
        .expect("withdraw");
    assert_eq!(out.status, Status::Gone);
    assert_eq!(exists(&mut raw, &keys).await, 0);
    let look = Batch {
        hits: vec![Hit {
            key: key.to_vec(),
            policy: pool,
            delta: 1,
            role: Role::Enforce,
            claim: Claim::Tenant(Tenant {
                id: b"t".to_vec(),
                weight: 1,
            }),
        }],
        admission: Admission::DryRun,
    };
    let outcome = store.apply(&look).await.expect("dry run");
    assert!(!outcome.readings[0].over, "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_keys_expire_after_the_latest_deadline_and_vanish_when_empty() {
    let server = RedisServer::start();
    let store = connect(&server, "").await;
    let mut raw = raw_connection(&server).await;
    let key = b"sl:5:queue|l";
    let keys = queue_keys(key, false);
    let out = store
        .queue(key, &pool(1), &enqueue(id(1, 1), "t", 1, 9))
        .await
        .expect("enqueue");
    assert_eq!(out.status, Status::Granted);
    // A queue emptied by its grant is no state.
    assert_eq!(exists(&mut raw, &keys).await, 0);
    // The pool expires as a batch would expire it: one TTL past its last lease.
    let ttl = pttl(&mut raw, key).await;
    assert!((2 * TTL_SECS as i64 - 5) * 1000 < ttl && ttl <= 2 * TTL_SECS as i64 * 1000);

    let out = store
        .queue(key, &pool(1), &enqueue(id(1, 2), "t", 1, 9))
        .await
        .expect("enqueue");
    assert_eq!(out.status, Status::Waiting { ahead: 0 });
    for k in &keys[..3] {
        let ttl = pttl(&mut raw, k).await;
        assert!((25_000..=31_000).contains(&ttl), "{ttl}");
    }
    store
        .queue(key, &pool(1), &Op::Withdraw(id(1, 2)))
        .await
        .expect("withdraw");
    assert_eq!(exists(&mut raw, &keys).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_through_one_store_wakes_the_waiters_of_another() {
    let server = RedisServer::start();
    let granting = connect(&server, "pfx:").await;
    let waiting = connect(&server, "pfx:").await;
    let mut raw = raw_connection(&server).await;
    let channel = format!("pfx:{CHANNEL}");
    let mut wakeups = waiting.queue_changes().expect("Redis has wake-ups");
    subscribers(&mut raw, &channel, 1).await;

    // A ticket granted to its own caller or one that waits publishes nothing: the first
    // wake-up is the grant a withdrawal hands to the waiting ticket.
    let (full, free) = (&b"pfx:full|l"[..], &b"pfx:free|l"[..]);
    let op = async |key: &[u8], op: Op| granting.queue(key, &pool(1), &op).await.expect("queue op");
    let mut wake = async || {
        tokio::time::timeout(WAKE_WITHIN, wakeups.recv())
            .await
            .expect("a wake-up in time")
            .expect("the feed is open")
    };
    let first = op(full, enqueue(id(1, 1), "t", 1, 9)).await;
    assert_eq!(first.status, Status::Granted);
    let second = op(full, enqueue(id(1, 2), "t", 1, 9)).await;
    assert_eq!(second.status, Status::Waiting { ahead: 0 });
    let third = op(free, enqueue(id(2, 1), "t", 1, 9)).await;
    assert_eq!(third.status, Status::Granted);
    let withdrawn = op(full, Op::Withdraw(id(1, 1))).await;
    assert_eq!(withdrawn.granted, vec![id(1, 2)]);
    assert_eq!(wake().await, full);

    // The subscription is killed: it comes back, and a grant made by a poll after a release
    // through a batch wakes the waiters again.
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut raw)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    subscribers(&mut raw, &channel, 1).await;
    let fourth = op(full, enqueue(id(1, 3), "t", 1, 9)).await;
    assert_eq!(fourth.status, Status::Waiting { ahead: 0 });
    release(&granting, full, id(1, 2)).await;
    // As the limiter does after a release: a poll for no ticket only dispatches.
    let polled = op(full, Op::Poll(id(9, 9))).await;
    assert_eq!(polled.granted, vec![id(1, 3)]);
    assert_eq!(wake().await, full);

    // The subscription ends with the store.
    drop(waiting);
    subscribers(&mut raw, &channel, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_ups_come_from_the_sentinel_master_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "queues");
    let mut setup = tokio::task::block_in_place(|| SentinelSetup::start_with(1, Some(&pki)));
    let read = |p: &std::path::Path| std::fs::read(p).expect("PEM file");
    let target = RedisTarget::parse(
        RedisType::Sentinel,
        &setup.address(),
        TargetOptions {
            tls: true,
            tls_files: TlsFiles {
                ca: Some(read(&pki.ca)),
                client: Some((read(&pki.client.0), read(&pki.client.1))),
            },
            ..Default::default()
        },
    )
    .expect("sentinel address");
    let open = async || {
        let store = RedisStore::open(target.clone(), options("s:"))
            .await
            .expect("open the Sentinel deployment");
        store.ping().await.expect("the master answers");
        store
    };
    let (granting, waiting) = (open().await, open().await);
    let mut wakeups = waiting.queue_changes().expect("Redis has wake-ups");
    let master = setup.master_port().expect("a master");
    let master = setup.node(master);
    subscribed_on(master, &format!("s:{CHANNEL}"));
    let key = b"s:sl:5:queue|l";
    let op = async |op: Op| granting.queue(key, &pool(1), &op).await.expect("queue op");
    assert_eq!(
        op(enqueue(id(1, 1), "t", 1, 9)).await.status,
        Status::Granted
    );
    assert_eq!(
        op(enqueue(id(1, 2), "t", 1, 9)).await.status,
        Status::Waiting { ahead: 0 }
    );
    assert_eq!(op(Op::Withdraw(id(1, 1))).await.granted, vec![id(1, 2)]);
    let woken = tokio::time::timeout(WAKE_WITHIN, wakeups.recv()).await;
    assert_eq!(woken.expect("a wake-up in time").expect("open"), key);
}

/// Waits (bounded) until `node` has a subscriber on `channel`.
fn subscribed_on(node: &RedisNode, channel: &str) {
    let subscribed = tokio::task::block_in_place(|| {
        wait_until(WAKE_WITHIN, || {
            node.cli(&["PUBSUB", "NUMSUB", channel]).lines().nth(1) == Some("1")
        })
    });
    assert!(
        subscribed,
        "no subscriber on {channel} at port {}",
        node.port()
    );
}

async fn raw_connection(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn pttl(raw: &mut redis::aio::MultiplexedConnection, key: &[u8]) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query_async(raw)
        .await
        .expect("PTTL")
}

async fn exists(raw: &mut redis::aio::MultiplexedConnection, keys: &[Vec<u8>]) -> i64 {
    redis::cmd("EXISTS")
        .arg(keys)
        .query_async(raw)
        .await
        .expect("EXISTS")
}

/// Waits (bounded) until `channel` has `count` subscribers: a subscription opens in the
/// background, and a message published before it would be lost.
async fn subscribers(raw: &mut redis::aio::MultiplexedConnection, channel: &str, count: i64) {
    let deadline = tokio::time::Instant::now() + WAKE_WITHIN;
    loop {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(raw)
            .await
            .expect("PUBSUB NUMSUB");
        if n == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} has {n} subscribers, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
