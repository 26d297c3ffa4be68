//! Failover on a Redis Cluster under steady gRPC load: 3 masters with a replica each; the master
//! serving the load's counters is killed and its replica promoted (after `cluster-node-timeout`).
//! Its own test binary, so no other cluster test shares the machine with it.
//!
//! Run with `--nocapture` to see the latency of each phase.

use std::time::{Duration, Instant};

use sluice_tests::cluster::Cluster;
use sluice_tests::fault::{Phase, budget, margin, normal_again};
use sluice_tests::load::{Answer, Load};
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::Sluice;

fn rules(domain: &str, mode: &str) -> String {
    format!(
        "domain: {domain}\nfailure_mode: {mode}\nshard_by: k\ndescriptors:\n  - key: k\n    \
         rate_limit: {{unit: year, requests_per_unit: 1000000000}}\n"
    )
}

const ALLOW: usize = 0;
const DENY: usize = 1;

async fn pause_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// A master with a replica is killed under load: the cluster promotes the replica (after
/// `cluster-node-timeout`), and Sluice follows the new slot map. Answers stay within the budget,
/// `deny` answers while the slot has no master, and decisions are normal again within 2 s of the
/// promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_to_a_replica_under_load() {
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(3, 1, Duration::from_millis(1000)));
    let master = tokio::task::block_in_place(|| cluster.master_of("{v}"));
    let sluice = Sluice::builder(&rules("allow", "allow"))
        .file("deny.yaml", &rules("deny", "deny"))
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
    let requests = ["allow", "deny"]
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
    let t0 = Instant::now();
    pause_for(Duration::from_secs(1)).await;
    let killing = Instant::now();
    tokio::task::block_in_place(|| cluster.nodes[master].kill());
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    let promoted_node = loop {
        let now_master = tokio::task::block_in_place(|| {
            cluster
                .try_master_of("{v}")
                .filter(|m| *m != master && cluster.healthy())
        });
        if let Some(m) = now_master {
            break m;
        }
        assert!(Instant::now() < deadline, "no replica was promoted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let promoted = Instant::now();
    pause_for(Duration::from_millis(2500)).await;
    let samples = load.stop().await;
    let end = Instant::now();
    eprintln!(
        "failover: node {promoted_node} serves the slot {:?} after the kill",
        promoted.duration_since(killed)
    );
    let bound = budget() + margin();
    let phases = [
        Phase::new("cluster failover: healthy", &samples, t0, killing),
        Phase::new(
            "cluster failover: master killed",
            &samples,
            killing,
            promoted,
        ),
        Phase::new(
            "cluster failover: after the promotion",
            &samples,
            promoted,
            end,
        ),
    ];
    for p in &phases {
        p.report_and_bound(bound);
        assert!(
            p.answers(ALLOW).iter().all(|a| *a == Answer::Ok),
            "{}",
            p.name
        );
    }
    assert!(
        samples
            .iter()
            .all(|s| matches!(s.answer, Answer::Ok | Answer::OverLimit)),
        "every answer is a decision"
    );
    assert!(
        phases[1].answers(DENY).contains(&Answer::OverLimit),
        "deny while the slot has no master"
    );
    let after = normal_again(&samples, DENY, killed, end, Answer::Ok)
        .expect("decisions never normal again after the failover");
    let late = after.saturating_sub(promoted.duration_since(killed));
    eprintln!("normal decisions {late:?} after the promotion");
    assert!(
        late <= Duration::from_secs(2),
        "{late:?} after the promotion"
    );
}
