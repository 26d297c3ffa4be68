//! The L1 over-limit cache against a real Redis: a client hammering at 100× its limit costs one
//! Redis call per admitted request plus at most one to learn the key is over, counted by Redis
//! itself (`INFO commandstats`), and the cache's hits and misses show on `/metrics`.

use sluice_tests::cluster::command_calls;
use sluice_tests::fault::metric;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, overall_codes, request};
use sluice_tests::sluice::Sluice;

const LIMIT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_far_over_its_limit_costs_one_redis_call_per_window() {
    let redis = RedisServer::start();
    let rules = format!(
        "domain: l1\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: {LIMIT}}}\n"
    );
    // Overrides in memory: in Redis, their reloads would be EVALSHA calls too.
    let sluice = Sluice::builder(&rules)
        .redis(&redis.url())
        .arg("--override-store")
        .arg("memory")
        .start();
    let mut client = sluice.grpc().await;
    let check = request("l1", vec![descriptor(&[("k", "hammer")])]);
    // One warm-up call on another key loads the script, so the counts below are checks only.
    let warm = request("l1", vec![descriptor(&[("k", "warm")])]);
    client.should_rate_limit(warm).await.expect("warm-up");
    let before = command_calls(&redis.cli(&["INFO", "commandstats"]), "evalsha");

    let codes = overall_codes(&mut client, &check, LIMIT * 100).await;
    assert!(codes[..LIMIT].iter().all(|c| *c == OK), "{codes:?}");
    assert!(codes[LIMIT..].iter().all(|c| *c == OVER_LIMIT));

    let calls = command_calls(&redis.cli(&["INFO", "commandstats"]), "evalsha") - before;
    eprintln!("{} checks, {calls} Redis calls", codes.len());
    assert!(
        calls <= LIMIT as u64 + 1,
        "{calls} Redis calls for {} checks",
        codes.len()
    );
    let metrics = reqwest::get(sluice.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    let hits = metric(&metrics, "sluice_l1_hits_total", "");
    assert!(
        hits >= (LIMIT * 99 - 1) as f64,
        "L1 answered {hits} checks: {metrics}"
    );
}
