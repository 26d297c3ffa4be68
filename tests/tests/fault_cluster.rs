//! Fault injection on a 3-master Redis Cluster under steady gRPC load: the master serving the
//! load's counters is killed (`SIGKILL`) and restarted (it rejoins with its slots), then hung
//! (`SIGSTOP`) and resumed; the other masters keep running. The same checks as on one Redis
//! (`fault_standalone.rs`): every answer within the store budget plus a small margin, each
//! domain's failure policy while the slot's master is away, normal decisions within 2 s of its
//! return, no acknowledged hit lost (append-only files), `local` hits reconciled.
//!
//! Run with `--nocapture` to see the latency of each phase.

use std::time::{Duration, Instant};

use sluice_tests::cluster::Cluster;
use sluice_tests::fault::{Phase, budget, decided_within, margin, metric, normal_again};
use sluice_tests::load::{Answer, Load, Sample};
use sluice_tests::node::RedisNode;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::Sluice;

fn rules(domain: &str, mode: &str) -> String {
    format!(
        "domain: {domain}\nfailure_mode: {mode}\nshard_by: k\ndescriptors:\n  - key: k\n    \
         rate_limit: {{unit: year, requests_per_unit: 1000000000}}\n"
    )
}

/// The requests of the load, by position.
const ALLOW: usize = 0;
const DENY: usize = 1;
const LOCAL: usize = 2;

fn count(samples: &[Sample], request: usize, answer: Answer) -> u64 {
    samples
        .iter()
        .filter(|s| s.request == request && s.answer == answer)
        .count() as u64
}

fn redis_count(redis: &RedisNode, domain: &str) -> u64 {
    // `shard_by: k` puts every domain's counter in the slot of `{v}`, served by one master.
    let key = format!("sl:{{v}}{}:{domain}|1:k|1:v|f31536000", domain.len());
    redis.cli(&["HGET", &key, "n"]).trim().parse().unwrap_or(0)
}

async fn pause_for(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_hung_and_restarted_under_load() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let master = tokio::task::block_in_place(|| cluster.master_of("{v}"));
    let sluice = Sluice::builder(&rules("allow", "allow"))
        .file("deny.yaml", &rules("deny", "deny"))
        .file("local.yaml", &rules("local", "local"))
        .arg("--backend")
        .arg("redis")
        .arg("--redis-type")
        .arg("cluster")
        .arg("--redis-url")
        .arg(&cluster.seeds())
        .arg("--store-budget-ms")
        .arg(&budget().as_millis().to_string())
        .arg("--deny-with")
        .arg("over_limit")
        .arg("--redis-timeout-ms")
        .arg("250")
        .start();
    let requests = ["allow", "deny", "local"]
        .map(|d| request(d, vec![descriptor(&[("k", "v")])]))
        .to_vec();
    // Redis from the first check on: the healthy phase must be decided by Redis.
    sluice.wait_ready(Duration::from_secs(10)).await;
    let load = Load::start(
        sluice.grpc_addr,
        requests,
        2,
        Duration::from_millis(5),
        Duration::from_secs(60),
    )
    .await;

    // Each fault has the instant it started and the instant it was in effect: answers sent in
    // between may still come from Redis.
    let t0 = Instant::now();
    pause_for(Duration::from_secs(1)).await;
    let killing = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[master].kill());
    let killed = Instant::now();
    pause_for(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| cluster.nodes[master].restart());
    let restarted = Instant::now();
    // A restarted node serves its slots once it has rejoined its peers (`cluster_state:ok`):
    // that is when Redis is back for the load's counters.
    tokio::task::block_in_place(|| {
        assert!(
            cluster.wait_healthy(Duration::from_secs(10)),
            "the cluster did not recover"
        );
    });
    let back = Instant::now();
    eprintln!(
        "the restarted master rejoined the cluster {:?} after its process started",
        back.duration_since(restarted)
    );
    pause_for(Duration::from_millis(2500)).await;
    let stopping = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[master].pause());
    let stopped = Instant::now();
    pause_for(Duration::from_millis(1500)).await;
    let resuming = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[master].resume());
    let resumed = Instant::now();
    pause_for(Duration::from_millis(2500)).await;
    let samples = load.stop().await;
    let end = Instant::now();

    let bound = budget() + margin();
    let phases = [
        Phase::new("cluster: healthy", &samples, t0, killing),
        Phase::new("cluster: killed (SIGKILL)", &samples, killing, restarted),
        Phase::new("cluster: restarted", &samples, restarted, stopping),
        Phase::new("cluster: hung (SIGSTOP)", &samples, stopping, resumed),
        Phase::new("cluster: resumed (SIGCONT)", &samples, resumed, end),
    ];
    for p in &phases {
        p.report_and_bound(bound);
    }
    let undecided: Vec<(Duration, usize, Answer)> = samples
        .iter()
        .filter(|s| !matches!(s.answer, Answer::Ok | Answer::OverLimit))
        .map(|s| (s.at.duration_since(t0), s.request, s.answer))
        .collect();
    assert!(
        undecided.is_empty(),
        "every answer is a decision (no error, no UNAVAILABLE): {undecided:?}"
    );
    // The policies while Redis is away, and normal decisions otherwise.
    for p in &phases {
        assert!(
            p.answers(ALLOW).iter().all(|a| *a == Answer::Ok),
            "{}",
            p.name
        );
        assert!(
            p.answers(LOCAL).iter().all(|a| *a == Answer::Ok),
            "{}",
            p.name
        );
    }
    let healthy = decided_within(&samples, DENY, t0, killing);
    assert!(healthy.iter().all(|a| *a == Answer::Ok), "{healthy:?}");
    for (name, from, to) in [("killed", killed, restarted), ("hung", stopped, resuming)] {
        let deny = decided_within(&samples, DENY, from, to);
        assert!(
            !deny.is_empty() && deny.iter().all(|a| *a == Answer::OverLimit),
            "{name}: deny answers {deny:?}"
        );
    }
    for (name, returned, until) in [("restart", back, stopping), ("SIGCONT", resumed, end)] {
        let after = normal_again(&samples, DENY, returned, until, Answer::Ok)
            .unwrap_or_else(|| panic!("decisions never normal again after the {name}"));
        eprintln!("normal decisions {after:?} after the {name}");
        assert!(after <= Duration::from_secs(2), "{name}: {after:?}");
    }

    // Nothing Redis acknowledged is lost, and what `local` admitted was handed over. A call that
    // timed out during the hang may still have run when Redis resumed: counts may exceed the
    // acknowledged hits by at most the timed-out calls.
    let metrics = reqwest::get(sluice.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let timeouts = metric(&metrics, "sluice_store_failures_total", "kind=\"timeout\"") as u64;
    let acknowledged = count(&samples, DENY, Answer::Ok);
    let stored = tokio::task::block_in_place(|| redis_count(&cluster.nodes[master], "deny"));
    assert!(
        (acknowledged..=acknowledged + timeouts).contains(&stored),
        "deny: {acknowledged} acknowledged, {timeouts} timeouts, {stored} in Redis"
    );
    let admitted = count(&samples, LOCAL, Answer::Ok);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored = tokio::task::block_in_place(|| redis_count(&cluster.nodes[master], "local"));
        if stored >= admitted {
            assert!(
                stored <= admitted + timeouts,
                "local: {admitted} admitted, {timeouts} timeouts, {stored} in Redis"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "local: {admitted} admitted, only {stored} in Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reconciled = metric(&metrics, "sluice_reconciled_hits_total", "");
    assert!(reconciled > 0.0, "local hits were reconciled: {metrics}");
    for (mode, result) in [("allow", "ok"), ("deny", "over_limit"), ("local", "ok")] {
        let labels = format!("mode=\"{mode}\",result=\"{result}\"");
        assert!(
            metric(&metrics, "sluice_failure_mode_decisions_total", &labels) > 0.0,
            "{labels}"
        );
    }
    assert!(metric(&metrics, "sluice_breaker_transitions_total", "to=\"open\"") >= 2.0);
}
