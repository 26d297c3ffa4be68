//! End-to-end: weights that follow behaviour (`standing`) on three real `sluice` replicas sharing
//! one real redis-server. A tenant that asks for more than its share window after window is
//! refused on whichever replica it reaches; the replicas add up their refusals per window in
//! Redis, one of them decides, and every replica applies the penalty (an override by `standing`,
//! audited); a paid tier refused as often keeps its weight; a tenant within its share is left
//! alone; once the noisy tenant calms down its weight comes back everywhere. The same again with
//! each replica counting in its own memory and the overrides (and the windows' refusals) in a
//! real etcd.
//!
//! Windows are one second: the test waits for each step by polling, bounded, never by sleeping
//! for a window's length.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::admin::{Admin, rlconfig, token_file};
use sluice_tests::etcd::EtcdServer;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_tests::tls::documented_acl;

const RULES: &str = "domain: s
descriptors:
  - key: tenant
    rate_limit:
      unit: second
      capacity: 20
      weights: {gold: 4}
      weight: 2
      standing: {penalty: 0.5, after: 3, recover_after: 2, keep_tier_weights: true}
";

const PENALTY: &str = "s.tenant: override [tenant=noisy] weight=1";

/// Sends `tenant`'s checks every `every` to the replicas in turn until `stop`, for at most 40 s.
fn drive(
    replicas: &[&Sluice],
    tenant: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let addrs: Vec<_> = replicas.iter().map(|s| s.grpc_addr).collect();
    tokio::spawn(async move {
        let mut clients = Vec::new();
        for a in addrs {
            clients.push(
                envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(format!("http://{a}"))
                    .await
                    .expect("connect"),
            );
        }
        let until = Instant::now() + Duration::from_secs(40);
        let mut tick = tokio::time::interval(every);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            tick.tick().await;
            let n = clients.len();
            let c = &mut clients[i % n];
            i += 1;
            let _ = c
                .should_rate_limit(request("s", vec![descriptor(&[("tenant", tenant)])]))
                .await;
        }
    })
}

/// Polls every replica's `/rlconfig` until `want` holds for all of them; how long it took.
async fn until_all(
    replicas: &[&Sluice],
    within: Duration,
    want: impl Fn(&str) -> bool,
) -> Duration {
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        let mut all = true;
        for r in replicas {
            all &= want(&rlconfig(r).await);
        }
        if all {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not on every replica within {within:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenant_is_penalised_fleet_wide_and_recovers_while_a_tier_keeps_its_weight() {
    let redis = RedisServer::start();
    // Through exactly the documented ACL user: counters, overrides and the fleet's keys.
    let password = "standing-e2e-password";
    for line in documented_acl(password, &["sluice-overrides", "sluice-adaptive"]) {
        let words: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(redis.cli(&words).trim(), "OK", "{words:?}");
    }
    let url = format!("redis://sluice:{password}@127.0.0.1:{}", redis.port());
    let (_dir, tokens) = token_file();
    let replicas: Vec<Sluice> = (0..3)
        .map(|_| {
            Sluice::builder(RULES)
                .redis(&url)
                .arg("--admin-token-file")
                .arg(tokens.to_str().expect("utf-8"))
                .start()
        })
        .collect();
    noisy_calm_and_gold(replicas, Duration::from_millis(25)).await;
    let denied = redis.cli(&["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "refused:\n{denied}");
}

/// The same with counters in each replica's memory and overrides in a real etcd: each replica
/// refuses the noisy tenant from its own pool, and the windows' refusals are added up in etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_etcd_overrides_add_up_refusals_there() {
    let etcd = EtcdServer::start();
    let (_dir, tokens) = token_file();
    let replicas: Vec<Sluice> = (0..3)
        .map(|_| {
            Sluice::builder(RULES)
                .etcd_overrides(&etcd.url())
                .arg("--admin-token-file")
                .arg(tokens.to_str().expect("utf-8"))
                .start()
        })
        .collect();
    // Each replica's own pool of 20 a second must be outrun by each hog alone: 120 a second
    // each, 40 per replica.
    noisy_calm_and_gold(replicas, Duration::from_micros(8_333)).await;
}

/// Noisy and gold send a check every `hog_every` (in turn to each replica), calm every 500 ms.
async fn noisy_calm_and_gold(owned: Vec<Sluice>, hog_every: Duration) {
    let replicas: Vec<&Sluice> = owned.iter().collect();

    // 20 a second shared by weight: gold 4, noisy and calm 2 each. Noisy and gold ask for more
    // than the pool every window, in turn on every replica; calm asks for 2 a second. Calm may
    // be refused, as a newcomer to a pool the others already spent (with counters in each
    // replica's memory, to every pool it reaches), but within its guarantee: never its doing.
    let stop_noisy = Arc::new(AtomicBool::new(false));
    let stop_rest = Arc::new(AtomicBool::new(false));
    let tasks = [
        drive(&replicas, "noisy", hog_every, Arc::clone(&stop_noisy)),
        drive(&replicas, "gold", hog_every, Arc::clone(&stop_rest)),
        drive(
            &replicas,
            "calm",
            Duration::from_millis(500),
            Arc::clone(&stop_rest),
        ),
    ];

    // Three windows refused past its guarantee, then the decision: every replica applies
    // weight 2 × 0.5.
    let took = until_all(&replicas, Duration::from_secs(10), |c| c.contains(PENALTY)).await;
    eprintln!("the penalty reached every replica {took:?} after the load started");

    // Quiet for two windows: the weight comes back everywhere; gold keeps being refused.
    stop_noisy.store(true, Ordering::Relaxed);
    let calmed = Instant::now();
    let took = until_all(&replicas, Duration::from_secs(10), |c| {
        !c.contains("[tenant=noisy]")
    })
    .await;
    eprintln!("the penalty was lifted on every replica {took:?} after the tenant stopped");
    // Not before a whole quiet window has passed (the manual-clock tests pin the exact count).
    assert!(
        calmed.elapsed() >= Duration::from_secs(1),
        "lifted within a window of the last refusal"
    );
    stop_rest.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }

    // Gold (a tier, kept) and calm (within its share) never got an override.
    for r in &replicas {
        let c = rlconfig(r).await;
        assert!(
            !c.contains("[tenant=gold]") && !c.contains("[tenant=calm]"),
            "{c}"
        );
    }
    let mut kept = 0.0;
    for r in &replicas {
        kept += sample_of(
            &r.metrics().await,
            "sluice_standing_changes_total{result=\"tier_kept\"}",
        );
    }
    assert!(kept >= 1.0, "gold was never considered");

    // Both changes are audited by `standing`, with why.
    let (status, audit) = Admin::new(replicas[0].http_addr).get("/audit").await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    let by_standing: Vec<&Value> = entries.iter().filter(|e| e["who"] == "standing").collect();
    let actions: Vec<&str> = by_standing
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["override.delete", "override.set"], "{audit}");
    let set = by_standing[1];
    assert_eq!(set["after"]["weight"], 1, "{set}");
    assert_eq!(set["after"]["standing"]["refused_windows"], 3, "{set}");
    assert_eq!(by_standing[0]["before"]["weight"], 1);
}
