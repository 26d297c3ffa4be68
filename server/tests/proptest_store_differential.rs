//! The Redis script against the memory store: the same random batches (every algorithm, fixed and
//! calendar windows, concurrency pools with their leases, fair-share pools with their tenants,
//! repeated keys, refunds, looks, every role including overflow pairs, every admission (undos at
//! earlier instants, reconciliation of window and bucket counters), time moving
//! between batches) must produce the same outcomes from both. This is what keeps the Lua mirror of
//! `algorithm::step_with` and of `storage::Verdict` honest, down to the token bucket's and the fair
//! share's floating-point arithmetic.
//!
//! The same holds for the fair queues of pools (`redis_queues_match_memory`): random operations on
//! one pool's queue (enqueues of tenants of several weights, some refused as full, weightless or,
//! in a fair-share pool, larger than its capacity, enqueues of a ticket again, polls, withdrawals
//! of queued and granted tickets) interleaved with ordinary batches on the pool (lease releases
//! in a concurrency pool; charges, refunds and looks of tenants in a fair-share pool), with time
//! moving so that leases expire, windows roll over and tickets and grants reach their deadlines,
//! give the same statuses, grants in order, depths, times to the next move and pool states (a
//! concurrency pool's holders, a fair-share pool's reading for every tenant) from `queue.lua` as
//! from `algorithm::queue::apply`, down to the `(finish, id)` order of equal tags.
//!
//! Both stores read one manual clock: the Redis store pins the script's time to it
//! (`RedisClock::Pinned`), so Redis's own `TIME` does not enter. Expiry is covered by the
//! conformance suite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_server::algorithm::calendar::CalendarUnit;
use sluice_server::algorithm::lease::LeaseId;
use sluice_server::algorithm::queue::{Op, Waiter};
use sluice_server::algorithm::share::Tenant;
use sluice_server::algorithm::{Algorithm, Claim, Period, Policy};
use sluice_server::clock::{Clock, ManualClock};
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::backend::redis::{RedisClock, RedisOptions, RedisStore};
use sluice_server::storage::{Admission, Batch, Hit, Role, Store};
use sluice_tests::redis::RedisServer;

struct Shared {
    runtime: tokio::runtime::Runtime,
    redis: RedisStore,
    clock: Arc<ManualClock>,
    _server: RedisServer,
}

impl Shared {
    /// A Redis server and a store on it, pinned to a manual clock of their own: the tests run in
    /// parallel, and each moves its clock.
    fn start() -> Self {
        let server = RedisServer::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let clock = Arc::new(ManualClock::new(Duration::ZERO));
        let redis = runtime
            .block_on(RedisStore::connect(
                &server.url(),
                RedisOptions {
                    timeout: Duration::from_secs(2),
                    pool_size: 1,
                    clock: RedisClock::Pinned(clock.clone()),
                    ..Default::default()
                },
            ))
            .expect("connect");
        Shared {
            runtime,
            redis,
            clock,
            _server: server,
        }
    }
}

/// The batch test's.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(Shared::start)
}

/// `batch` decided by both stores, which must agree.
fn same_outcome(shared: &Shared, memory: &MemoryStore, batch: &Batch) -> Result<(), TestCaseError> {
    let expected = memory.apply_now(batch);
    let got = shared
        .runtime
        .block_on(shared.redis.apply(batch))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(got, expected, "batch {:?}", batch);
    Ok(())
}

/// A role; an overflow points at a hit position that may or may not exist before it.
fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        4 => Just(Role::Enforce),
        2 => Just(Role::Shadow),
        2 => Just(Role::Quota),
        1 => (0usize..4).prop_map(|of| Role::Overflow { of }),
    ]
}

/// A claim, read by the pools and ignored by counters: one of a few leases or tenants (weights
/// 0 to 3), or none.
fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        1 => Just(Claim::None),
        2 => (0u8..4).prop_map(|n| Claim::Lease(LeaseId([n; 16]))),
        2 => (0u8..3, 0u32..4).prop_map(|(n, weight)| Claim::Tenant(Tenant {
            id: vec![b'a' + n, b':', b'|'],
            weight,
        })),
    ]
}

/// An admission; an undo carries how far before the batch's time its charge was (resolved to an
/// instant when the batch runs).
fn admission() -> impl Strategy<Value = (Admission, u64)> {
    prop_oneof![
        3 => Just((Admission::AllOrNothing, 0)),
        2 => Just((Admission::ChargeAll, 0)),
        1 => Just((Admission::Reconcile, 0)),
        1 => (0u64..5_000_000).prop_map(|back| (Admission::Undo { at: 0 }, back)),
    ]
}

/// Limits small enough to be reached, windows from a second to a calendar month, and token
/// buckets whose refill interval is rarely a whole number of microseconds.
fn policy() -> impl Strategy<Value = Policy> {
    let algorithm = prop_oneof![
        Just(Algorithm::FixedWindow),
        Just(Algorithm::SlidingWindow),
        Just(Algorithm::TokenBucket),
        Just(Algorithm::Concurrency),
        Just(Algorithm::FairShare),
    ];
    let period = prop_oneof![
        3 => prop_oneof![Just(1u64), Just(3), Just(7), Just(60)].prop_map(Period::Seconds),
        1 => prop_oneof![
            Just(CalendarUnit::Day),
            Just(CalendarUnit::Week),
            Just(CalendarUnit::Month),
        ]
        .prop_map(|u| Period::Calendar(u, 1)),
    ];
    (algorithm, period, 0u64..7, 1u64..8).prop_map(|(algorithm, period, limit, burst)| {
        // Calendar windows are fixed windows only, as the config enforces.
        let algorithm = match period {
            Period::Calendar(..) => Algorithm::FixedWindow,
            _ => algorithm,
        };
        Policy {
            algorithm,
            period,
            limit,
            burst: if algorithm == Algorithm::TokenBucket {
                burst
            } else {
                limit
            },
        }
    })
}

/// `(key index, delta, role, claim)` per hit: three counters, so batches often repeat one.
type RawBatch = ((Admission, u64), u64, Vec<(u8, i64, Role, Claim)>);

fn batch() -> impl Strategy<Value = RawBatch> {
    (
        admission(),
        // Time passing before the batch: often none, sometimes across windows.
        prop_oneof![2 => Just(0u64), 2 => 0u64..2_000_000, 1 => 0u64..90_000_000],
        prop::collection::vec((0u8..3, -3i64..=4, role(), claim()), 0..5),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_store_differential.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn redis_matches_memory(
        policies in prop::collection::vec(policy(), 3),
        start in 1_700_000_000_000_000u64..1_800_000_000_000_000,
        batches in prop::collection::vec(batch(), 1..25),
    ) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let shared = shared();
        shared.clock.set(Duration::from_micros(start));
        let memory = MemoryStore::new(1_000, shared.clock.clone());
        for ((admission, back), advance, hits) in batches {
            shared.clock.advance(Duration::from_micros(advance));
            let admission = match admission {
                Admission::Undo { .. } => Admission::Undo {
                    at: shared.clock.now().as_micros() as u64 - back,
                },
                other => other,
            };
            // Undos and reconciliation concern window and bucket counters only: neither the
            // cluster store nor the local share sends them for pools.
            let counted = |k: &u8| {
                !matches!(admission, Admission::Undo { .. } | Admission::Reconcile)
                    || !matches!(
                        policies[usize::from(*k)].algorithm,
                        Algorithm::Concurrency | Algorithm::FairShare
                    )
            };
            let batch = Batch {
                admission,
                hits: hits
                    .iter()
                    .filter(|(k, ..)| counted(k))
                    .enumerate()
                    .map(|(i, (k, delta, role, claim))| Hit {
                        key: format!("diff:{case}:{k}").into_bytes(),
                        policy: policies[usize::from(*k)],
                        delta: *delta,
                        // An overflow belongs to an earlier hit, as the limiter builds them.
                        role: match *role {
                            Role::Overflow { of } if of < i => Role::Overflow { of },
                            Role::Overflow { .. } => Role::Enforce,
                            r => r,
                        },
                        claim: claim.clone(),
                    })
                    .collect(),
            };
            same_outcome(shared, &memory, &batch)?;
        }
    }

    /// The compact forms (`scripts::Compact`): the script decides and writes in its own short
    /// path and Rust steps the state it read, and that must still be exactly the memory store.
    #[test]
    fn compact_requests_match_memory(
        policies in prop::collection::vec(counter_policy(), 2),
        start in 1_700_000_000_000_000u64..1_800_000_000_000_000,
        requests in prop::collection::vec(single_hit(), 1..40),
    ) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        static COMPACT: OnceLock<Shared> = OnceLock::new();
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let shared = COMPACT.get_or_init(Shared::start);
        shared.clock.set(Duration::from_micros(start));
        let memory = MemoryStore::new(1_000, shared.clock.clone());
        for (admission, advance, k, delta) in requests {
            shared.clock.advance(Duration::from_micros(advance));
            let batch = Batch {
                admission,
                hits: vec![Hit {
                    key: format!("compact:{case}:{k}").into_bytes(),
                    policy: policies[usize::from(k)],
                    delta,
                    role: Role::Enforce,
                    claim: Claim::None,
                }],
            };
            same_outcome(shared, &memory, &batch)?;
        }
    }
}

/// Fixed and sliding windows and token buckets in seconds, the counters the script's compact
/// forms serve.
fn counter_policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(Algorithm::FixedWindow),
            Just(Algorithm::SlidingWindow),
            Just(Algorithm::TokenBucket)
        ],
        prop_oneof![Just(1u64), Just(3), Just(60)],
        0u64..7,
        1u64..8,
    )
        .prop_map(|(algorithm, secs, limit, burst)| Policy {
            algorithm,
            period: Period::Seconds(secs),
            limit,
            burst: if algorithm == Algorithm::TokenBucket {
                burst
            } else {
                limit
            },
        })
}

/// `(admission, time passing, key index, delta)`: mostly requests the compact forms carry (one
/// enforced hit, all-or-nothing or dry, delta >= 0), among general ones on the same counters
/// (charge-all, refunds).
type SingleHit = (Admission, u64, u8, i64);

fn single_hit() -> impl Strategy<Value = SingleHit> {
    (
        prop_oneof![
            4 => Just(Admission::AllOrNothing),
            1 => Just(Admission::DryRun),
            1 => Just(Admission::ChargeAll),
        ],
        prop_oneof![2 => Just(0u64), 2 => 0u64..700_000, 1 => 0u64..5_000_000],
        0u8..2,
        prop_oneof![4 => 0i64..=3, 1 => -2i64..0],
    )
}

/// Queue tenants by index: weight 0 cannot queue; the names carry the bytes a key schema would not.
const TENANTS: [(&[u8], u32); 5] = [
    (b"a", 1),
    (b"b:|", 2),
    (b"c\xff", 3),
    (b"d", 5),
    (b"zero", 0),
];

#[derive(Debug, Clone)]
enum QueueAction {
    /// A new ticket; `order` is its id's first byte, so ids are not in arrival order. `cost` is
    /// what a fair-share pool is asked for (a concurrency pool's ticket is one lease whatever it
    /// says).
    Enqueue {
        tenant: u8,
        order: u8,
        wait_ms: u16,
        cost: u64,
    },
    /// An issued ticket enqueued again: a look while it is known, a fresh ticket once gone.
    Again {
        which: u8,
        wait_ms: u16,
    },
    Poll {
        which: u8,
    },
    Withdraw {
        which: u8,
    },
    /// A concurrency pool's holder releases its lease through a batch, as a request's release
    /// does; in a fair-share pool, tenant `which % 5` is charged `delta` through a batch, as a
    /// request of an unqueued rule on the same pool is (or refunded, as an undo is).
    Release {
        which: u8,
        delta: i64,
    },
}

/// A wait in ms; whole tenths of a second often, so that deadlines fall exactly on the instant of
/// a later action (time moves by whole tenths too).
fn wait_ms() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..3000, (0u16..30).prop_map(|k| k * 100)]
}

fn queue_action() -> impl Strategy<Value = (QueueAction, u16)> {
    let action = prop_oneof![
        5 => (0u8..5, any::<u8>(), wait_ms(), 1u64..=3).prop_map(
            |(tenant, order, wait_ms, cost)| QueueAction::Enqueue { tenant, order, wait_ms, cost },
        ),
        1 => (any::<u8>(), wait_ms()).prop_map(|(which, wait_ms)| QueueAction::Again { which, wait_ms }),
        2 => any::<u8>().prop_map(|which| QueueAction::Poll { which }),
        1 => any::<u8>().prop_map(|which| QueueAction::Withdraw { which }),
        3 => (any::<u8>(), -1i64..=2).prop_map(|(which, delta)| QueueAction::Release { which, delta }),
    ];
    // Time passing before the action: often none, sometimes past a lease's TTL or a window.
    let advance = prop_oneof![
        3 => Just(0u16),
        3 => 0u16..700,
        2 => 0u16..4000,
        2 => (0u16..20).prop_map(|k| k * 100),
    ];
    (action, advance)
}

fn pick<T: Copy>(items: &[T], which: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(which) % items.len()])
}

/// Both stores see the same pool: a concurrency pool's holders, or what a look (delta 0) of every
/// tenant reads in a fair-share pool (its admitted units, its share, its reserves: the whole
/// state as it matters).
fn same_pool(
    shared: &Shared,
    memory: &MemoryStore,
    key: &[u8],
    policy: Policy,
    step: usize,
) -> Result<(), TestCaseError> {
    if policy.algorithm != Algorithm::FairShare {
        let holders = shared
            .runtime
            .block_on(shared.redis.holders(key))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            holders,
            memory.holders_now(key),
            "holders after step {}",
            step
        );
        return Ok(());
    }
    for (name, weight) in TENANTS {
        let look = Batch {
            hits: vec![Hit {
                key: key.to_vec(),
                policy,
                delta: 0,
                role: Role::Enforce,
                claim: Claim::Tenant(Tenant {
                    id: name.to_vec(),
                    weight,
                }),
            }],
            admission: Admission::AllOrNothing,
        };
        let expected = memory.apply_now(&look);
        let got = shared
            .runtime
            .block_on(shared.redis.apply(&look))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, expected, "{:?} after step {}", name, step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 384,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_store_differential_queues.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// A concurrency pool of `slots` leases of `period_secs`, or a fair-share pool of `slots`
    /// units per window of `period_secs`.
    #[test]
    fn redis_queues_match_memory(
        fair_share in any::<bool>(),
        slots in 0u64..5,
        period_secs in 1u64..4,
        max_depth in 1u64..8,
        start in 1_700_000_000_000_000u64..1_800_000_000_000_000,
        actions in prop::collection::vec(queue_action(), 1..80),
    ) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        static QUEUES: OnceLock<Shared> = OnceLock::new();
        let shared = QUEUES.get_or_init(Shared::start);
        shared.clock.set(Duration::from_micros(start));
        let memory = MemoryStore::new(1_000, shared.clock.clone());
        let key = format!("qdiff:{case}|l").into_bytes();
        let policy = Policy {
            algorithm: if fair_share {
                Algorithm::FairShare
            } else {
                Algorithm::Concurrency
            },
            period: Period::Seconds(period_secs),
            limit: slots,
            burst: slots,
        };
        // Every ticket issued so far, with its tenant and cost.
        let mut issued: Vec<(LeaseId, u8, u64)> = Vec::new();
        for (n, (action, advance_ms)) in actions.into_iter().enumerate() {
            shared.clock.advance(Duration::from_millis(u64::from(advance_ms)));
            let enqueue = |id, tenant: u8, wait_ms: u16, cost: u64| {
                let (name, weight) = TENANTS[usize::from(tenant)];
                Op::Enqueue {
                    waiter: Waiter {
                        id,
                        tenant: name.to_vec(),
                        weight,
                        cost,
                        wait: u64::from(wait_ms) * 1000,
                    },
                    max_depth,
                }
            };
            let unknown = LeaseId([0xee; 16]);
            let op = match action {
                QueueAction::Enqueue { tenant, order, wait_ms, cost } => {
                    let mut bytes = [0u8; 16];
                    bytes[0] = order;
                    bytes[14..].copy_from_slice(&(n as u16).to_be_bytes());
                    issued.push((LeaseId(bytes), tenant, cost));
                    enqueue(LeaseId(bytes), tenant, wait_ms, cost)
                }
                QueueAction::Again { which, wait_ms } => match pick(&issued, which) {
                    Some((id, tenant, cost)) => enqueue(id, tenant, wait_ms, cost),
                    None => Op::Poll(unknown),
                },
                QueueAction::Poll { which } => Op::Poll(pick(&issued, which).map_or(unknown, |i| i.0)),
                QueueAction::Withdraw { which } => {
                    Op::Withdraw(pick(&issued, which).map_or(unknown, |i| i.0))
                }
                QueueAction::Release { which, delta } => {
                    let (delta, claim) = if fair_share {
                        let (name, weight) = TENANTS[usize::from(which) % TENANTS.len()];
                        let tenant = Tenant {
                            id: name.to_vec(),
                            weight,
                        };
                        (delta, Claim::Tenant(tenant))
                    } else {
                        let held: Vec<LeaseId> =
                            memory.holders_now(&key).iter().map(|l| l.id).collect();
                        let Some(id) = pick(&held, which) else { continue };
                        (-1, Claim::Lease(id))
                    };
                    let batch = Batch {
                        hits: vec![Hit {
                            key: key.clone(),
                            policy,
                            delta,
                            role: Role::Enforce,
                            claim,
                        }],
                        admission: Admission::AllOrNothing,
                    };
                    same_outcome(shared, &memory, &batch)?;
                    same_pool(shared, &memory, &key, policy, n)?;
                    continue;
                }
            };
            let expected = memory.queue_now(&key, &policy, &op);
            let got = shared
                .runtime
                .block_on(shared.redis.queue(&key, &policy, &op))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, expected, "step {} {:?}", n, op);
            same_pool(shared, &memory, &key, policy, n)?;
        }
    }
}
