//! Criterion benches for the per-request hot path: descriptor matching, counter-key encoding,
//! each algorithm's step, the memory store's batch apply, and a whole `RateLimiter::check` on the
//! memory store, per algorithm.
//!
//! Run: `cargo bench -p sluice-server --bench hot_path`. Inputs come from a fixed-seed generator
//! so runs are comparable.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_server::algorithm::{self, Algorithm, Period, Policy, State};
use sluice_server::clock::{ManualClock, SystemClock};
use sluice_server::config::parse_str;
use sluice_server::limiter::{CheckRequest, Descriptor, Entry, LimiterOptions, RateLimiter};
use sluice_server::metrics::Metrics;
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::keys::KeySchema;
use sluice_server::storage::{Admission, Batch, Hit, Role};

const ALGORITHMS: [Algorithm; 3] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::TokenBucket,
];

/// A limit that the benches never reach.
fn roomy(algorithm: Algorithm) -> Policy {
    Policy {
        algorithm,
        period: Period::Seconds(60),
        limit: u64::MAX / 4,
        burst: u64::MAX / 4,
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A config like a platform team's: per-app default, per-team nesting, some exact overrides and
/// a few wildcard paths, every limit using `algorithm`.
fn rules_yaml(exact_apps: usize, algorithm: Algorithm) -> String {
    rules_yaml_fixed(exact_apps).replace(
        "requests_per_unit:",
        &format!("algorithm: {}, requests_per_unit:", algorithm.as_str()),
    )
}

fn rules_yaml_fixed(exact_apps: usize) -> String {
    let mut y = String::from(
        "domain: edge\ndescriptors:\n  - key: app_id\n    rate_limit: {unit: minute, requests_per_unit: 1000000}\n",
    );
    for i in 0..exact_apps {
        y.push_str(&format!(
            "  - key: app_id\n    value: premium-{i}\n    rate_limit: {{unit: minute, requests_per_unit: 5000000}}\n"
        ));
    }
    y.push_str(
        "  - key: team\n    rate_limit: {unit: hour, requests_per_unit: 100000000}\n    descriptors:\n      - key: app_id\n        rate_limit: {unit: minute, requests_per_unit: 1000000}\n",
    );
    for p in ["/api/v1/*", "/api/v2/*", "/admin/*"] {
        y.push_str(&format!(
            "  - key: path\n    value: \"{p}\"\n    rate_limit: {{unit: second, requests_per_unit: 1000000}}\n"
        ));
    }
    y
}

fn descriptor(entries: &[(&str, String)]) -> Descriptor {
    Descriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_string(),
                value: v.clone(),
            })
            .collect(),
        ..Default::default()
    }
}

fn requests(n: usize, keys: u64, descriptors: usize) -> Vec<CheckRequest> {
    let mut rng = Rng(0x5eed);
    (0..n)
        .map(|_| {
            let app = format!("app-{}", rng.next() % keys);
            let team = format!("team-{}", rng.next() % 16);
            let all = [
                descriptor(&[("app_id", app.clone())]),
                descriptor(&[("team", team), ("app_id", app)]),
                descriptor(&[("path", format!("/api/v1/items/{}", rng.next() % 100))]),
            ];
            CheckRequest {
                domain: "edge".into(),
                descriptors: all.into_iter().take(descriptors).collect(),
                hits_addend: 1,
            }
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    for exact in [10usize, 1000] {
        let rules = parse_str("bench.yaml", &rules_yaml_fixed(exact)).expect("valid rules");
        let reqs = requests(1024, 10_000, 3);
        g.bench_with_input(BenchmarkId::new("3_descriptors", exact), &exact, |b, _| {
            let mut i = 0;
            let mut entries: Vec<(&str, &str)> = Vec::with_capacity(4);
            b.iter(|| {
                let r = &reqs[i % reqs.len()];
                i += 1;
                for d in &r.descriptors {
                    entries.clear();
                    entries.extend(d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())));
                    black_box(rules.lookup("edge", &entries));
                }
            });
        });
    }
    g.finish();
}

fn key_encoding(c: &mut Criterion) {
    let schema = KeySchema::new("prefix:", None);
    let policy = roomy(Algorithm::FixedWindow);
    c.bench_function("counter_key/2_entries", |b| {
        b.iter(|| {
            schema.counter_key(
                black_box("edge"),
                [("team", "team-7"), ("app_id", "app-12345")],
                &policy,
            )
        });
    });
}

/// One hit on a counter that already holds some state, a microsecond later each time.
fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("step");
    for algorithm in ALGORITHMS {
        let policy = roomy(algorithm);
        let mut now = 1_700_000_000_000_000u64;
        let mut state = State::Empty;
        for _ in 0..50 {
            now += 1_700_000;
            state = algorithm::step(&policy, &state, now, 1).next;
        }
        g.bench_function(algorithm.as_str(), |b| {
            b.iter(|| {
                now += 1;
                black_box(algorithm::step(&policy, black_box(&state), now, 1))
            });
        });
    }
    g.finish();
}

fn memory_store(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_store/apply_3_hits");
    for algorithm in ALGORITHMS {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let store = MemoryStore::new(1_000_000, clock.clone());
        let mut rng = Rng(42);
        let batches: Vec<Batch> = (0..4096)
            .map(|_| Batch {
                hits: (0..3)
                    .map(|j| Hit {
                        key: format!("k{j}:{}", rng.next() % 10_000).into_bytes(),
                        policy: roomy(algorithm),
                        delta: 1,
                        role: Role::Enforce,
                        claim: Default::default(),
                    })
                    .collect(),
                admission: Admission::AllOrNothing,
            })
            .collect();
        g.bench_function(algorithm.as_str(), |b| {
            let mut i = 0;
            b.iter(|| {
                let batch = &batches[i % batches.len()];
                i += 1;
                clock.advance(Duration::from_micros(3));
                black_box(store.apply_now(batch))
            });
        });
    }
    g.finish();
}

fn check(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("check_memory");
    for (algorithm, descriptors) in ALGORITHMS
        .into_iter()
        .map(|a| (a, 1usize))
        .chain([(Algorithm::FixedWindow, 3)])
    {
        let limiter = RateLimiter::new(
            parse_str("bench.yaml", &rules_yaml(100, algorithm)).expect("valid rules"),
            Arc::new(MemoryStore::new(1_000_000, Arc::new(SystemClock))),
            Arc::new(Metrics::new()),
            LimiterOptions::default(),
        );
        let reqs = requests(4096, 10_000, descriptors);
        g.bench_with_input(
            BenchmarkId::new(algorithm.as_str(), format!("{descriptors}_descriptors")),
            &descriptors,
            |b, _| {
                let mut i = 0;
                b.iter(|| {
                    let r = &reqs[i % reqs.len()];
                    i += 1;
                    runtime.block_on(limiter.check(r)).expect("decided")
                });
            },
        );
    }
    g.finish();
}

/// A lease acquired and released through `check_within` on a pool that is never full, with and
/// without a `queue`: what a queue costs a request that does not wait.
fn pool_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("check_memory_pool");
    for (name, queue) in [
        ("plain", ""),
        ("queued", ", queue: {max_wait_ms: 1000, max_depth: 100}"),
    ] {
        let yaml = format!(
            "domain: d\ndescriptors:\n  - key: job\n    rate_limit: {{concurrency: 10000{queue}}}\n"
        );
        let limiter = Arc::new(RateLimiter::new(
            parse_str("bench.yaml", &yaml).expect("valid rules"),
            Arc::new(MemoryStore::new(1_000_000, Arc::new(SystemClock))),
            Arc::new(Metrics::new()),
            LimiterOptions::default(),
        ));
        let entry = |lease: Option<String>| {
            let mut entries = vec![("job".to_owned(), "j".to_owned())];
            entries.extend(lease.map(|id| ("sluice.lease_id".to_owned(), id)));
            let release = entries.len() == 2;
            CheckRequest {
                domain: "d".into(),
                descriptors: vec![Descriptor::from_parts(entries, None, None, release)],
                hits_addend: 0,
            }
        };
        let acquire = entry(None);
        g.bench_function(format!("{name}/acquire_release"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let d = limiter.check_within(&acquire, None).await.expect("decided");
                    let id = d.lease.expect("granted").id.to_string();
                    black_box(limiter.check_within(&entry(Some(id)), None).await)
                })
            });
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    matching,
    key_encoding,
    steps,
    memory_store,
    check,
    pool_round_trip
);
criterion_main!(benches);
