//! What quota notifications add to a check: a check refused by a quota on the memory store, with
//! no notifier, with the notifier every server has and nothing configured, with an event already
//! raised in its window, and with a new event raised by every check.
//!
//! Run: `cargo bench -p sluice-server --bench notify`. Its own binary, with mimalloc as the
//! global allocator as `sluice` has (`main.rs`): a raised event is allocated by the checking
//! thread and freed by the dispatcher's, which the system allocator makes a lock's worth dearer
//! than the server pays.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_server::clock::{ManualClock, SystemClock};
use sluice_server::config::parse_str;
use sluice_server::limiter::{CheckRequest, Descriptor, Entry, LimiterOptions, RateLimiter};
use sluice_server::metrics::Metrics;
use sluice_server::notify::{self, EventSet, Notifications};
use sluice_server::storage::backend::memory::MemoryStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// The scenarios, each a check that a quota refuses:
/// - `off`: no notifier (a limiter built without one);
/// - `idle`: the notifier every server has, nothing configured for the domain;
/// - `duplicate`: a sink takes the event, already raised in this window (the de-dup table says
///   so: one hash, one atomic swap);
/// - `fresh`: every check raises a new event (the notifier's clock moves a window per check):
///   de-dup, the event built, `try_send` to the queue, which a dispatcher on another thread
///   drains (routed to no sink, so only the check path's share is measured).
fn notifications(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let yaml = "domain: edge\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 0, kind: quota}\n";
    let reqs: Vec<CheckRequest> = (0..4096)
        .map(|i| CheckRequest {
            domain: "edge".into(),
            descriptors: vec![descriptor(&[("tenant", format!("tenant-{i}"))])],
            hits_addend: 1,
        })
        .collect();
    let mut g = c.benchmark_group("check_memory_notify");
    for scenario in ["off", "idle", "duplicate", "fresh"] {
        let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
        let mut metrics = Metrics::new();
        let global = matches!(scenario, "duplicate" | "fresh").then(|| Notifications {
            events: EventSet::ALL,
            webhooks: Vec::new(),
            redis_stream: None,
            override_lead: Duration::from_secs(600),
        });
        let notifier = (scenario != "off").then(|| {
            let _inside = runtime.enter();
            notify::start(
                notify::Setup {
                    global,
                    redis: None,
                    clock: clock.clone(),
                },
                metrics.registry(),
            )
        });
        let mut limiter = RateLimiter::new(
            parse_str("bench.yaml", yaml).expect("valid rules"),
            Arc::new(MemoryStore::new(1_000_000, Arc::new(SystemClock))),
            Arc::new(metrics),
            LimiterOptions::default(),
        );
        if let Some(n) = notifier {
            limiter = limiter.with_notifier(n);
        }
        g.bench_function(scenario, |b| {
            let mut i = 0;
            b.iter(|| {
                let r = &reqs[if scenario == "duplicate" {
                    0
                } else {
                    i % reqs.len()
                }];
                i += 1;
                if scenario == "fresh" {
                    clock.advance(Duration::from_secs(1));
                }
                runtime.block_on(limiter.check(r)).expect("decided")
            });
        });
        // Whether the dispatcher kept up: events it could not take were dropped, not queued.
        if scenario == "fresh" {
            let text = limiter.metrics().encode();
            let line = |name: &str| {
                text.lines()
                    .find(|l| l.starts_with(name))
                    .unwrap_or(name)
                    .to_owned()
            };
            eprintln!(
                "{}; {}",
                line("sluice_notifications_emitted_total{kind=\"quota_exhausted\"}"),
                line("sluice_notifications_dropped_total{reason=\"queue_full\"}")
            );
        }
    }
    g.finish();
}

criterion_group!(benches, notifications);
criterion_main!(benches);
