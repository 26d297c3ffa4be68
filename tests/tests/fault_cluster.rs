//! Fault injection on a 3-master Redis Cluster under steady gRPC load: the master serving the
//! load's counters is killed (`SIGKILL`) and restarted (it rejoins with its slots), then hung
//! (`SIGSTOP`) and resumed; the other masters keep running. The same checks as on one Redis
//! (`fault_standalone.rs`): every answer within the store budget plus a small margin, each
//! domain's failure policy while the slot's master is away, normal decisions within 2 s of its
//! return, no acknowledged hit lost (append-only files), `local` hits reconciled.
//!
//! Run with `--nocapture` to see the latency of each phase.

use std::time::Duration;

use sluice_tests::cluster::Cluster;
use sluice_tests::fault::scenario::{Step, UnderLoad};
use sluice_tests::fault::stored;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_hung_and_restarted_under_load() {
    let mut cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    // `shard_by: k` puts every domain's counter in the slot of `{v}`, served by this master.
    let master = tokio::task::block_in_place(|| cluster.master_of("{v}"));
    let seeds = cluster.seeds();
    let load = UnderLoad::start(
        &["allow", "deny", "local"],
        true,
        &["--redis-type", "cluster", "--redis-url", &seeds],
    )
    .await;

    let run = load
        .kill_restart_hang(|step| match step {
            Step::Kill => cluster.nodes[master].kill(),
            Step::Restart => cluster.nodes[master].restart(),
            // A restarted node serves its slots once it has rejoined its peers
            // (`cluster_state:ok`): that is when Redis is back for the load's counters.
            Step::Rejoin => assert!(
                cluster.wait_healthy(Duration::from_secs(10)),
                "the cluster did not recover"
            ),
            Step::Pause => cluster.nodes[master].pause(),
            Step::Resume => cluster.nodes[master].resume(),
        })
        .await;
    run.check("cluster", |domain| {
        stored(&cluster.nodes[master], domain, true)
    })
    .await;
}
