//! Fault injection on one Redis under steady gRPC load: killed (`SIGKILL`) and restarted, then
//! hung (`SIGSTOP`) and resumed. Every answer must come within the store budget plus a small
//! margin, follow each domain's failure policy while Redis is away, and be normal again within
//! 2 s of Redis answering; no hit Redis acknowledged is lost (Redis keeps an append-only file,
//! which it writes before replying, so a killed process loses nothing it acknowledged), and the
//! hits a `local` domain admitted meanwhile end up in Redis.
//!
//! Run with `--nocapture` to see the latency of each phase.

use sluice_tests::fault::metric;
use sluice_tests::fault::scenario::{Step, UnderLoad};
use sluice_tests::fault::stored;
use sluice_tests::node::{CliAccess, RedisNode, base_args, free_port_pair};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_hung_and_restarted_under_load() {
    let dir = tempfile::tempdir().expect("redis directory");
    let port = free_port_pair(0);
    let mut args = base_args(port, dir.path());
    args.extend(["--appendonly", "yes", "--appendfsync", "no"].map(String::from));
    let mut redis = RedisNode::start(port, args, CliAccess::default());
    let url = format!("redis://127.0.0.1:{port}");
    let load = UnderLoad::start(&["allow", "deny", "local"], false, &["--redis-url", &url]).await;

    let run = load
        .kill_restart_hang(|step| match step {
            Step::Kill => redis.kill(),
            Step::Restart => redis.restart(),
            // A restarted standalone Redis serves as soon as it answers, which `restart` waits
            // for.
            Step::Rejoin => {}
            Step::Pause => redis.pause(),
            Step::Resume => redis.resume(),
        })
        .await;
    let metrics = run
        .check("standalone", |domain| stored(&redis, domain, false))
        .await;
    assert_eq!(
        metric(&metrics, "sluice_breaker_state", ""),
        0.0,
        "the breaker closed again"
    );
    assert!(metric(&metrics, "sluice_store_call_duration_seconds_count", "") > 0.0);
}
