//! `--local-batch` against a real Redis: three real `sluice` replicas, each run with
//! `--local-batch=100ms --replicas 3`, and concurrent gRPC clients hammering one fixed-window key
//! for several windows. Each window must admit at least its limit and at most the documented bound
//! `limit + N × floor(limit / N)`; Redis must end up holding every admitted hit (none lost, none
//! counted twice); and Redis must see far fewer calls than there were decisions (counted by Redis
//! itself, `INFO commandstats`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_tests::cluster::command_calls;
use sluice_tests::fault::metric;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

const LIMIT: u64 = 30;
const REPLICAS: u64 = 3;
/// The window, in seconds: long enough for a load phase, the last flushes and a check.
const WINDOW: u64 = 4;
const WINDOWS: usize = 3;
const CLIENTS_PER_REPLICA: usize = 2;
/// Most checks one client sends in a window.
const MAX_CHECKS: u64 = 3_000;

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Sleeps until `offset` into the next window and returns that window's start (seconds).
async fn next_window(offset: Duration) -> u64 {
    let now = since_epoch();
    let start = now.as_secs() / WINDOW * WINDOW + WINDOW;
    let at = Duration::from_secs(start) + offset;
    tokio::time::sleep(at.saturating_sub(now)).await;
    start
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_admit_within_the_bound_flush_every_hit_and_spare_redis() {
    let redis = RedisServer::start();
    let rules = format!(
        "domain: batch\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, \
         unit_multiplier: {WINDOW}, requests_per_unit: {LIMIT}}}\n"
    );
    // Overrides in memory: in Redis, their reloads would be EVALSHA calls too.
    let replicas: Vec<Sluice> = (0..REPLICAS)
        .map(|_| {
            Sluice::builder(&rules)
                .redis(&redis.url())
                .arg("--local-batch=100ms")
                .arg("--replicas")
                .arg("3")
                .arg("--override-store")
                .arg("memory")
                .start()
        })
        .collect();
    let check = request("batch", vec![descriptor(&[("k", "hot")])]);
    let q = LIMIT / REPLICAS;
    let bound = LIMIT + REPLICAS * q;

    let mut decisions_total = 0;
    let mut calls_total = 0;
    for round in 0..WINDOWS {
        let start = next_window(Duration::from_millis(150)).await;
        let calls_before = command_calls(&redis.cli(&["INFO", "commandstats"]), "evalsha");
        let load_until = tokio::time::Instant::now() + Duration::from_millis(1_800);
        let admitted = Arc::new(AtomicU64::new(0));
        let decisions = Arc::new(AtomicU64::new(0));
        let mut clients = Vec::new();
        for sluice in &replicas {
            for _ in 0..CLIENTS_PER_REPLICA {
                let mut client = sluice.grpc().await;
                let (check, admitted, decisions) =
                    (check.clone(), admitted.clone(), decisions.clone());
                clients.push(tokio::spawn(async move {
                    for _ in 0..MAX_CHECKS {
                        if tokio::time::Instant::now() >= load_until {
                            break;
                        }
                        let reply = client.should_rate_limit(check.clone()).await;
                        let code = reply.expect("a decision").into_inner().overall_code;
                        assert!(code == OK || code == OVER_LIMIT, "{code}");
                        decisions.fetch_add(1, Ordering::Relaxed);
                        if code == OK {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
        }
        for c in clients {
            c.await.expect("client task");
        }
        let admitted = admitted.load(Ordering::Relaxed);
        let decisions = decisions.load(Ordering::Relaxed);
        assert!(
            since_epoch() < Duration::from_secs(start + WINDOW - 1),
            "round {round}: the load ran past its window; the machine is too slow for this test"
        );

        // Every admitted hit reaches Redis's counter of this window within a few flushes.
        let key = redis
            .keys()
            .into_iter()
            .find(|k| k.contains("hot"))
            .expect("the counter's key");
        let stored = || -> (u64, u64) {
            let field = |f| redis.cli(&["HGET", &key, f]).trim().parse().unwrap_or(0);
            (field("w"), field("n"))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1_000);
        while stored() != (start, admitted) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let calls = command_calls(&redis.cli(&["INFO", "commandstats"]), "evalsha") - calls_before;
        eprintln!(
            "window {round}: {decisions} decisions, {admitted} admitted (limit {LIMIT}, bound \
             {bound}), {calls} EVALSHA calls, Redis holds {:?}",
            stored()
        );
        assert_eq!(
            stored(),
            (start, admitted),
            "round {round}: Redis's counter of the window holds every admitted hit, once"
        );
        assert!(
            (LIMIT..=bound).contains(&admitted),
            "round {round}: admitted {admitted}, expected between {LIMIT} and {bound}"
        );
        assert!(
            decisions >= 8 * LIMIT,
            "round {round}: only {decisions} decisions; demand must far exceed the limit"
        );
        assert!(
            calls * 8 <= decisions,
            "round {round}: {calls} Redis calls for {decisions} decisions"
        );
        decisions_total += decisions;
        calls_total += calls;
    }
    eprintln!("{decisions_total} decisions, {calls_total} EVALSHA calls in {WINDOWS} windows");

    let mut flushed = 0.0;
    let mut local = 0.0;
    for sluice in &replicas {
        let text = reqwest::get(sluice.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics");
        flushed += metric(&text, "sluice_local_batch_flushed_hits_total", "");
        local += metric(&text, "sluice_local_batch_admits_total", "")
            + metric(&text, "sluice_local_batch_rejects_total", "");
        assert_eq!(
            metric(&text, "sluice_local_batch_flush_failures_total", ""),
            0.0
        );
    }
    assert!(flushed > 0.0, "hits were flushed in batches");
    assert!(
        local >= decisions_total as f64 / 2.0,
        "{local} of {decisions_total} checks decided from the local views"
    );
}

/// The same on a Redis Cluster: the batching layer sits above the store, and its flushes go to
/// each counter's slot like any other call. Two replicas, one window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_too() {
    use sluice_tests::cluster::Cluster;
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let rules = format!(
        "domain: batch\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, \
         unit_multiplier: {WINDOW}, requests_per_unit: {LIMIT}}}\n"
    );
    let replicas: Vec<Sluice> = (0..2)
        .map(|_| {
            Sluice::builder(&rules)
                .redis_cluster(&cluster.seeds())
                .arg("--store-budget-ms")
                .arg("1000")
                .arg("--local-batch=100ms")
                .arg("--replicas")
                .arg("2")
                .arg("--override-store")
                .arg("memory")
                .start()
        })
        .collect();
    for r in &replicas {
        r.wait_ready(Duration::from_secs(15)).await;
    }
    let check = request("batch", vec![descriptor(&[("k", "hot")])]);
    let bound = LIMIT + 2 * (LIMIT / 2);
    let start = next_window(Duration::from_millis(150)).await;
    let load_until = tokio::time::Instant::now() + Duration::from_millis(1_500);
    let admitted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for sluice in &replicas {
        for _ in 0..CLIENTS_PER_REPLICA {
            let mut client = sluice.grpc().await;
            let (check, admitted) = (check.clone(), admitted.clone());
            clients.push(tokio::spawn(async move {
                for _ in 0..MAX_CHECKS {
                    if tokio::time::Instant::now() >= load_until {
                        break;
                    }
                    let code = client
                        .should_rate_limit(check.clone())
                        .await
                        .expect("a decision")
                        .into_inner()
                        .overall_code;
                    if code == OK {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    for c in clients {
        c.await.expect("client task");
    }
    let admitted = admitted.load(Ordering::Relaxed);
    // The counter's key (with its hash tag on a Cluster), from the master that holds it.
    let (node, key) = cluster
        .nodes
        .iter()
        .find_map(|n| {
            let keys = n.try_cli(&["--scan", "--pattern", "*hot*"])?;
            let key = keys.lines().find(|k| !k.is_empty())?.to_owned();
            Some((n, key))
        })
        .expect("the counter's key on some master");
    let stored = || -> (u64, u64) {
        let field = |f| node.cli(&["HGET", &key, f]).trim().parse().unwrap_or(0);
        (field("w"), field("n"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_000);
    while stored() != (start, admitted) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "cluster: {admitted} admitted (limit {LIMIT}, bound {bound}), Redis holds {:?}",
        stored()
    );
    assert_eq!(
        stored(),
        (start, admitted),
        "the Cluster holds every admitted hit, once"
    );
    assert!((LIMIT..=bound).contains(&admitted), "admitted {admitted}");
}
