//! The Redis script against the memory store: the same random batches (repeated keys, refunds,
//! looks, every role and admission) must produce the same outcomes from both. This is what keeps
//! the Lua mirror of `storage::rejects` and of the batch-order rule honest.
//!
//! Time does not move here (one window, long TTLs); expiry is covered by the conformance suite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_server::clock::ManualClock;
use sluice_server::storage::memory::MemoryStore;
use sluice_server::storage::redis::{RedisOptions, RedisStore};
use sluice_server::storage::{Admission, Batch, Hit, Role, Store};
use sluice_tests::redis::RedisServer;

struct Shared {
    runtime: tokio::runtime::Runtime,
    redis: RedisStore,
    _server: RedisServer,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let server = RedisServer::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let redis = runtime
            .block_on(RedisStore::connect(
                &server.url(),
                RedisOptions {
                    timeout: Duration::from_secs(2),
                    pool_size: 1,
                },
            ))
            .expect("connect");
        Shared {
            runtime,
            redis,
            _server: server,
        }
    })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Enforce), Just(Role::Shadow), Just(Role::Quota)]
}

fn admission() -> impl Strategy<Value = Admission> {
    prop_oneof![Just(Admission::AllOrNothing), Just(Admission::ChargeAll)]
}

/// `(key index, limit, delta, role)`: three keys, so batches often repeat one.
fn batch() -> impl Strategy<Value = (Admission, Vec<(u8, u64, i64, Role)>)> {
    (
        admission(),
        prop::collection::vec((0u8..3, 0u64..6, -3i64..=4, role()), 0..5),
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
    fn redis_matches_memory(batches in prop::collection::vec(batch(), 1..25)) {
        static CASE: AtomicU64 = AtomicU64::new(0);
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let shared = shared();
        let memory = MemoryStore::new(
            1_000,
            Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000))),
        );
        for (admission, hits) in batches {
            let batch = Batch {
                admission,
                hits: hits
                    .into_iter()
                    .map(|(k, limit, delta, role)| Hit {
                        key: format!("diff:{case}:{k}").into_bytes(),
                        ttl_secs: 600,
                        limit,
                        delta,
                        role,
                    })
                    .collect(),
            };
            let expected = memory.apply_now(&batch);
            let got = shared
                .runtime
                .block_on(shared.redis.apply(&batch))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, expected, "batch {:?}", batch);
        }
    }
}
