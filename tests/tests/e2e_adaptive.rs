//! End-to-end: adaptive limits in the real `sluice` binary. A synthetic upstream in the test (a
//! real HTTP server on 127.0.0.1) answers after `base + per_request × requests in flight`; a load
//! loop acquires a lease of the adaptive pool through Sluice's lease API, calls the upstream,
//! releases, and reports each response's latency on `POST /reports`. The pool must settle where
//! the upstream's p99 is within 10 % of the target, and grow again when the upstream speeds up;
//! three replicas on one Redis must apply one limit; two replicas whose overrides live in a real
//! etcd add up their reports there (neither has enough alone) and apply one limit.
//!
//! Intervals are 1 s. Every wait is a bounded poll (of the test's own measurements and of
//! `/metrics`); the loop stops at a deadline or a count.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot_free::Samples;
use serde_json::{Value, json};
use sluice_tests::admin::{Admin, rlconfig, token_file};
use sluice_tests::etcd::EtcdServer;
use sluice_tests::redis::RedisServer;
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_tests::upstream::Upstream;

const TARGET_MS: f64 = 200.0;
const BASE_MS: u64 = 10;
const RULE: &str = "a.upstream_pay";

/// The two tests load this 2-core machine on purpose; one at a time, so neither measures the
/// other's load as its upstream's latency.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rules(concurrency: u64, target_ms: f64, max: u64) -> String {
    format!(
        "domain: a
descriptors:
  - key: upstream
    value: pay
    rate_limit:
      concurrency: {concurrency}
      adaptive: {{signal: latency, target: {target_ms}ms, quantile: 0.99, min: 5, max: {max}, interval: 1s}}
"
    )
}

/// The latencies the load loop saw, by the second they ended in.
mod parking_lot_free {
    use std::sync::Mutex;
    use std::time::Instant;

    #[derive(Default)]
    pub struct Samples(Mutex<Vec<(Instant, f64)>>);

    impl Samples {
        pub fn push(&self, at: Instant, ms: f64) {
            self.0.lock().expect("samples").push((at, ms));
        }

        /// The p99 of the samples that ended in `[from, to)`, and how many there were.
        pub fn p99(&self, from: Instant, to: Instant) -> (f64, usize) {
            let mut v: Vec<f64> = self
                .0
                .lock()
                .expect("samples")
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, ms)| *ms)
                .collect();
            if v.is_empty() {
                return (0.0, 0);
            }
            v.sort_by(f64::total_cmp);
            let rank = ((0.99 * v.len() as f64).ceil() as usize).clamp(1, v.len());
            (v[rank - 1], v.len())
        }
    }
}

/// `workers` clients, each looping: acquire a lease from one of `replicas` (in turn), call the
/// upstream, release, queue a report; a reporter posts the queue every 100 ms. Runs until `stop`.
fn load(
    replicas: Vec<String>,
    upstream: std::net::SocketAddr,
    workers: usize,
    samples: Arc<Samples>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .expect("client");
    let queue = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let descriptors = json!([{"entries": [{"key": "upstream", "value": "pay"}]}]);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, replicas, samples, stop, queue, descriptors) = (
            client.clone(),
            replicas.clone(),
            Arc::clone(&samples),
            Arc::clone(&stop),
            Arc::clone(&queue),
            descriptors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut turn = w;
            while !stop.load(Ordering::Relaxed) {
                turn += 1;
                let sluice = &replicas[turn % replicas.len()];
                let acquired = client
                    .post(format!("{sluice}/leases/acquire"))
                    .json(&json!({"domain": "a", "descriptors": descriptors, "wait_ms": 200}))
                    .send()
                    .await;
                let Ok(acquired) = acquired else { continue };
                if acquired.status() != 200 {
                    continue;
                }
                let lease: Value = acquired.json().await.expect("lease json");
                let id = lease["lease_id"].as_str().expect("lease id").to_owned();
                let started = Instant::now();
                let ok = client
                    .get(format!("http://{upstream}/work"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200);
                let ended = Instant::now();
                let ms = (ended - started).as_secs_f64() * 1000.0;
                let _ = client
                    .post(format!("{sluice}/leases/release"))
                    .json(&json!({"domain": "a", "descriptors": descriptors, "lease_id": id}))
                    .send()
                    .await;
                samples.push(ended, ms);
                queue.lock().expect("queue").push(json!({
                    "descriptor": [{"key": "upstream", "value": "pay"}],
                    "latency_ms": ms,
                    "status": if ok { 200 } else { 502 },
                }));
            }
        }));
    }
    tasks.push(tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        let mut turn = 0;
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            let batch: Vec<Value> = std::mem::take(&mut *queue.lock().expect("queue"));
            if batch.is_empty() {
                continue;
            }
            turn += 1;
            let sluice = &replicas[turn % replicas.len()];
            let answer = client
                .post(format!("{sluice}/reports"))
                .json(&json!({"domain": "a", "reports": batch}))
                .send()
                .await
                .expect("POST /reports");
            assert_eq!(answer.status(), 200);
        }
    }));
    tasks
}

async fn limit_of(sluice: &Sluice) -> f64 {
    sluice
        .metric(&format!("sluice_adaptive_limit{{rule=\"{RULE}\"}}"))
        .await
}

/// Seconds of the run, each with the limit Sluice had and the p99 the upstream served.
async fn watch(
    sluice: &Sluice,
    samples: &Samples,
    within: Duration,
    mut done: impl FnMut(&[(f64, f64, usize)]) -> bool,
) -> Vec<(f64, f64, usize)> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut from = Instant::now();
    while Instant::now() < deadline {
        let mut next = tokio::time::interval_at(
            tokio::time::Instant::from_std(from + Duration::from_secs(1)),
            Duration::from_secs(1),
        );
        next.tick().await;
        let to = from + Duration::from_secs(1);
        let (p99, n) = samples.p99(from, to);
        seen.push((limit_of(sluice).await, p99, n));
        from = to;
        if done(&seen) {
            break;
        }
    }
    seen
}

/// Three seconds in a row with the limit unchanged and the p99 within 10 % of target.
fn settled(seen: &[(f64, f64, usize)]) -> bool {
    seen.len() >= 3
        && seen[seen.len() - 3..].iter().all(|(limit, p99, n)| {
            *n > 50
                && (p99 - TARGET_MS).abs() <= TARGET_MS * 0.1
                && *limit == seen[seen.len() - 1].0
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_settles_at_the_upstreams_target_and_rises_when_it_speeds_up() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let up = Upstream::start(Duration::from_millis(BASE_MS), Duration::from_millis(8)).await;
    let (_dir, tokens) = token_file();
    let sluice = Sluice::builder(&rules(8, TARGET_MS, 150))
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("utf-8"))
        .start();
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks = load(
        vec![sluice.url("")],
        up.addr,
        80,
        Arc::clone(&samples),
        Arc::clone(&stop),
    );

    // 10 ms + 8 ms per request in flight: 200 ms is reached near 24 in flight.
    let slow = watch(&sluice, &samples, Duration::from_secs(18), settled).await;
    eprintln!("slow upstream, (limit, p99 ms, responses) per second: {slow:?}");
    assert!(settled(&slow), "did not settle: {slow:?}");
    let settled_at = started.elapsed();
    let at = slow.last().expect("a second").0;
    let overshoot = slow.iter().map(|s| s.1).fold(0.0, f64::max);
    eprintln!(
        "settled at {at} after {settled_at:?}; p99 {:.1} ms; highest p99 on the way {overshoot:.1} ms",
        slow.last().expect("a second").1
    );

    // The upstream gets twice as fast: the limit grows until the target is met again.
    up.per_request_us.store(4_000, Ordering::Relaxed);
    let fast = watch(&sluice, &samples, Duration::from_secs(20), |seen| {
        settled(seen) && seen.last().is_some_and(|s| s.0 > at * 1.5)
    })
    .await;
    eprintln!("fast upstream, (limit, p99 ms, responses) per second: {fast:?}");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let high = fast.last().expect("a second").0;
    assert!(high > at * 1.5, "the limit did not rise: {fast:?}");
    assert!(settled(&fast), "did not settle again: {fast:?}");

    // Operators see the override by `adaptive`, and its audit entries with the signal.
    let admin = Admin::new(sluice.http_addr);
    let (status, overrides) = admin.get("/overrides").await;
    assert_eq!(status, 200, "{overrides}");
    let list = overrides["overrides"].as_array().expect("a list");
    assert_eq!(list.len(), 1, "{overrides}");
    assert_eq!(list[0]["by"], "adaptive");
    assert_eq!(list[0]["concurrency"].as_f64(), Some(high), "{overrides}");
    let (status, audit) = admin.get("/audit").await;
    assert_eq!(status, 200, "{audit}");
    let last = &audit["entries"][0];
    assert_eq!(last["who"], "adaptive", "{last}");
    assert_eq!(last["after"]["signal"]["signal"], "latency", "{last}");
    assert!(last["before"]["concurrency"].is_u64(), "{last}");
    let rlconfig = rlconfig(&sluice).await;
    assert!(rlconfig.contains("by adaptive"), "{rlconfig}");
    assert!(
        rlconfig.contains("adaptive=latency q0.99<=200ms 5..150"),
        "{rlconfig}"
    );
    let metrics = sluice.metrics().await;
    assert!(
        sample_of(
            &metrics,
            "sluice_adaptive_reports_total{result=\"accepted\"}"
        ) > 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_apply_one_adaptive_limit() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let up = Upstream::start(Duration::from_millis(BASE_MS), Duration::from_millis(8)).await;
    // 10 ms + 8 ms per request in flight against 100 ms: the pool of 60 is far too large.
    // Each change is also pushed to a Redis stream, by the replica that decided it.
    let yaml = rules(60, 100.0, 100)
        + "notifications:\n  events: [adaptive_change]\n  redis_stream: {key: adaptive-events}\n";
    let (_dir, tokens) = token_file();
    let replicas: Vec<Sluice> = (0..3)
        .map(|_| {
            Sluice::builder(&yaml)
                .redis(&redis.url())
                .arg("--admin-token-file")
                .arg(tokens.to_str().expect("utf-8"))
                .start()
        })
        .collect();
    let samples = Arc::new(Samples::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(
        replicas.iter().map(|s| s.url("")).collect(),
        up.addr,
        60,
        Arc::clone(&samples),
        Arc::clone(&stop),
    );
    // Bounded poll: every replica applies the same adaptive override, below the configured 60,
    // twice in a row.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut agreed = Vec::new();
    let mut every = tokio::time::interval(Duration::from_millis(500));
    loop {
        every.tick().await;
        let mut limits = Vec::new();
        for s in &replicas {
            limits.push(adaptive_pool(&rlconfig(s).await));
        }
        let same = limits.iter().all(|l| *l == limits[0]) && limits[0].is_some_and(|l| l < 60);
        agreed.push((limits.clone(), same));
        if agreed.len() >= 2 && agreed[agreed.len() - 2..].iter().all(|(_, same)| *same) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas never agreed: {agreed:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    eprintln!("limits per replica, per poll: {agreed:?}");
    // One override, written by one replica per interval: the fleet's decisions add up to one a
    // second at most, whichever replica made them.
    let decided: f64 = {
        let mut total = 0.0;
        for s in &replicas {
            let m = s.metrics().await;
            for result in ["increase", "decrease", "hold", "too_few_reports"] {
                total += sample_of(
                    &m,
                    &format!("sluice_adaptive_decisions_total{{result=\"{result}\"}}"),
                );
            }
        }
        total
    };
    assert!(decided >= 1.0, "no interval was decided");
    assert!(
        decided <= 20.0,
        "{decided} decisions in at most 16 s: more than one replica decides an interval"
    );

    // One `adaptive_change` per change the fleet made (whichever replica made it), each with a
    // distinct id, the limit before and after, and the signal that moved it.
    let mut changes = 0.0;
    for s in &replicas {
        let m = s.metrics().await;
        for result in ["increase", "decrease"] {
            changes += sample_of(
                &m,
                &format!("sluice_adaptive_decisions_total{{result=\"{result}\"}}"),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = adaptive_events(&redis);
        if events.len() as f64 >= changes || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events.len() as f64, changes, "{events:#?}");
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        events.len(),
        "an event raised twice: {events:#?}"
    );
    let first = &events[0];
    assert_eq!(first["rule"], RULE);
    assert_eq!(first["domain"], "a");
    let change = &first["change"];
    assert_eq!(change["before"], 60, "{first}");
    assert!(change["after"].as_u64().is_some_and(|a| a < 60), "{first}");
    assert_eq!(change["signal"]["signal"], "latency");
    assert!(
        change["signal"]["value_ms"]
            .as_f64()
            .is_some_and(|v| v > 100.0),
        "{first}"
    );
    assert_eq!(
        change["descriptor"],
        json!([{"key": "upstream", "value": "pay"}])
    );
    assert!(
        first["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("adaptive: decrease 60 -> ")),
        "{first}"
    );
}

/// The `adaptive_change` events on the stream `adaptive-events`, oldest first.
fn adaptive_events(redis: &RedisServer) -> Vec<Value> {
    let out = redis.cli(&["XRANGE", "adaptive-events", "-", "+"]);
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON event"))
        .inspect(|e| assert_eq!(e["kind"], "adaptive_change", "{e}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_etcd_overrides_add_up_their_reports_and_apply_one_limit() {
    let etcd = EtcdServer::start();
    let (_dir, tokens) = token_file();
    let replicas: Vec<Sluice> = (0..2)
        .map(|_| {
            Sluice::builder(&rules(60, 100.0, 100))
                .etcd_overrides(&etcd.url())
                .arg("--admin-token-file")
                .arg(tokens.to_str().expect("utf-8"))
                .start()
        })
        .collect();
    // Each replica hears 12 slow responses a second: under `min_reports` (20) alone, over it
    // together. Only the fleet's sum can move the limit.
    let http = reqwest::Client::new();
    let report = json!({"domain": "a", "reports": [
        {"descriptor": [{"key": "upstream", "value": "pay"}], "latency_ms": 400.0, "status": 200},
        {"descriptor": [{"key": "upstream", "value": "pay"}], "latency_ms": 420.0, "status": 200},
        {"descriptor": [{"key": "upstream", "value": "pay"}], "latency_ms": 380.0, "status": 200}]});
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut every = tokio::time::interval(Duration::from_millis(250));
    let mut polls = 0;
    let applied = loop {
        every.tick().await;
        for r in &replicas {
            let answer: Value = http
                .post(r.url("/reports"))
                .json(&report)
                .send()
                .await
                .expect("reports")
                .json()
                .await
                .expect("json");
            assert_eq!(answer["accepted"], 3, "{answer}");
        }
        polls += 1;
        if polls % 2 == 0 {
            let mut limits = Vec::new();
            for r in &replicas {
                limits.push(adaptive_pool(&rlconfig(r).await));
            }
            if limits[0].is_some() && limits.iter().all(|l| *l == limits[0]) {
                break limits[0];
            }
        }
        assert!(
            Instant::now() < deadline,
            "no adaptive limit applied through etcd"
        );
    };
    // 400 ms against 100 ms: the first decision halves the pool.
    assert_eq!(applied, Some(30));
    let mut decided = 0.0;
    for r in &replicas {
        decided += r
            .metric("sluice_adaptive_decisions_total{result=\"decrease\"}")
            .await;
    }
    assert!(decided >= 1.0);
    let (status, audit) = Admin::new(replicas[1].http_addr).get("/audit").await;
    assert_eq!(status, 200);
    let entry = &audit["entries"][0];
    assert_eq!(entry["who"], "adaptive", "{audit}");
    assert!(
        entry["after"]["signal"]["reports"]
            .as_u64()
            .is_some_and(|n| n >= 20),
        "{entry}"
    );
}

/// The pool size an adaptive override applies, from `/rlconfig`'s line
/// `a.upstream_pay: override [upstream=pay] concurrency=23 (id …) by adaptive, …`.
fn adaptive_pool(rlconfig: &str) -> Option<u64> {
    rlconfig
        .lines()
        .find(|l| l.contains("by adaptive"))
        .and_then(|l| l.split("concurrency=").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
}
