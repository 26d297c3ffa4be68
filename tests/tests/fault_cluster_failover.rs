//! Failover on a Redis Cluster under steady gRPC load: 3 masters with a replica each; the master
//! serving the load's counters is killed and its replica promoted (after `cluster-node-timeout`).
//! Its own test binary, so no other cluster test shares the machine with it.
//!
//! Run with `--nocapture` to see the latency of each phase.

use std::time::Duration;

use sluice_tests::cluster::Cluster;
use sluice_tests::fault::scenario::UnderLoad;

/// A master with a replica is killed under load: the cluster promotes the replica (after
/// `cluster-node-timeout`), and Sluice follows the new slot map. Answers stay within the budget,
/// `deny` answers while the slot has no master, and decisions are normal again within 2 s of the
/// promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_to_a_replica_under_load() {
    let mut cluster =
        tokio::task::block_in_place(|| Cluster::start(3, 1, Duration::from_millis(1000)));
    let master = tokio::task::block_in_place(|| cluster.master_of("{v}"));
    let seeds = cluster.seeds();
    let load = UnderLoad::start(
        &["allow", "deny"],
        true,
        &["--redis-type", "cluster", "--redis-url", &seeds],
    )
    .await;

    let run = load
        .fail_over(
            &mut cluster,
            |cluster| cluster.nodes[master].kill(),
            |cluster| {
                cluster
                    .try_master_of("{v}")
                    .filter(|m| *m != master && cluster.healthy())
            },
        )
        .await;
    run.check("cluster failover");
}
