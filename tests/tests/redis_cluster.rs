//! Sluice on a real Redis Cluster (`redis-server --cluster-enabled` nodes joined by
//! `redis-cli --cluster create`): several replicas contending for one limit admit exactly the
//! limit, a request whose counters sit in different hash slots stays all-or-nothing (the slot
//! that charged is refunded when another rejected), and `shard_by` puts a tenant's counters in
//! one slot; a slot migrating to another master (ASK, then MOVED) keeps the count exact.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use sluice_tests::cluster::{Cluster, command_calls};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, overall_codes, request};
use sluice_tests::sluice::Sluice;

const LIMIT: usize = 40;

fn rules() -> String {
    format!(
        "domain: c\ndescriptors:\n  - key: user\n    rate_limit: {{unit: year, requests_per_unit: {LIMIT}}}\n  \
         - key: team\n    rate_limit: {{unit: year, requests_per_unit: 1000000}}\n"
    )
}

const TENANTS: &str = "domain: o\nshard_by: org\ndescriptors:\n  - key: org\n    \
    rate_limit: {unit: year, requests_per_unit: 5}\n    descriptors:\n      - key: user\n        \
    rate_limit: {unit: year, requests_per_unit: 3}\n";

/// The counter key Sluice writes on a Cluster for one `key: value` entry of a yearly fixed
/// window, with its hash tag.
fn key(tag: &str, domain: &str, entries: &[(&str, &str)]) -> String {
    let field = |s: &str| format!("{}:{s}", s.len());
    let mut k = format!("sl:{{{tag}}}{}", field(domain));
    for (e, v) in entries {
        k.push_str(&format!("|{}|{}", field(e), field(v)));
    }
    k + "|f31536000"
}

fn slot(cluster: &Cluster, key: &str) -> u16 {
    cluster.nodes[0]
        .cli(&["CLUSTER", "KEYSLOT", key])
        .trim()
        .parse()
        .expect("slot")
}

/// A fixed window's count, read from the master serving the key.
fn count(cluster: &Cluster, key: &str) -> u64 {
    let node = &cluster.nodes[cluster.master_of(key)];
    node.cli(&["HGET", key, "n"]).trim().parse().unwrap_or(0)
}

fn replica(cluster: &Cluster) -> Sluice {
    Sluice::builder(&rules())
        .file("tenants.yaml", TENANTS)
        .redis_cluster(&cluster.seeds())
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_admit_exactly_the_limit_and_stay_all_or_nothing_across_slots() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    // Two counters in different slots (on a Cluster each counter stands alone by default): pick
    // a team value whose key does not share the user's slot.
    let user_key = key("", "c", &[("user", "u")]);
    let team = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| {
            slot(&cluster, &key("", "c", &[("team", t)])) != slot(&cluster, &user_key)
                && cluster.master_of(&key("", "c", &[("team", t)])) != cluster.master_of(&user_key)
        })
        .expect("a team value on another master");
    let team_key = key("", "c", &[("team", &team)]);

    let replicas: Vec<Sluice> = (0..3).map(|_| replica(&cluster)).collect();
    let check = request(
        "c",
        vec![descriptor(&[("user", "u")]), descriptor(&[("team", &team)])],
    );
    // 3 replicas × 3 clients × 30 checks, all at once.
    let mut tasks = Vec::new();
    for sluice in &replicas {
        for _ in 0..3 {
            let mut client = sluice.grpc().await;
            let check = check.clone();
            tasks.push(tokio::spawn(async move {
                overall_codes(&mut client, &check, 30).await
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        let codes = t.await.expect("client task");
        assert!(
            codes.iter().all(|c| *c == OK || *c == OVER_LIMIT),
            "{codes:?}"
        );
        admitted += codes.iter().filter(|c| **c == OK).count();
    }
    assert_eq!(admitted, LIMIT, "admitted across 3 replicas");
    let user_key_c = user_key.clone();
    let user_count = tokio::task::block_in_place(|| count(&cluster, &user_key));
    assert_eq!(user_count, LIMIT as u64, "the user's counter");
    // Rejected requests charged the team's slot, then refunded it (in the background): the team
    // counter settles at what was admitted.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let team_count = tokio::task::block_in_place(|| count(&cluster, &team_key));
        if team_count == LIMIT as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "team counter {team_count}, admitted {LIMIT}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // shard_by: org puts the org's and its users' counters in the org's slot; one script decides
    // them both.
    let mut client = replicas[0].grpc().await;
    let tenant = request(
        "o",
        vec![
            descriptor(&[("org", "acme")]),
            descriptor(&[("org", "acme"), ("user", "bob")]),
        ],
    );
    let codes = overall_codes(&mut client, &tenant, 5).await;
    assert_eq!(codes, [OK, OK, OK, OVER_LIMIT, OVER_LIMIT]);
    let org_key = key("acme", "o", &[("org", "acme")]);
    let user_key = key("acme", "o", &[("org", "acme"), ("user", "bob")]);
    assert_eq!(slot(&cluster, &org_key), slot(&cluster, &user_key));
    let (org, user) =
        tokio::task::block_in_place(|| (count(&cluster, &org_key), count(&cluster, &user_key)));
    assert_eq!(
        (org, user),
        (3, 3),
        "all-or-nothing within the tenant's slot"
    );

    // Explained across slots: a dry run in each slot, judged together, writing nothing.
    let (_dir, tokens) = sluice_tests::admin::token_file();
    let explaining = Sluice::builder(&rules())
        .redis_cluster(&cluster.seeds())
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("path"))
        .start();
    let admin = sluice_tests::admin::Admin::new(explaining.http_addr);
    let body = serde_json::json!({"domain": "c", "descriptors": [
        {"entries": [{"key": "user", "value": "u"}]},
        {"entries": [{"key": "team", "value": team}]},
    ]});
    let (status, e) = admin.post("/explain", body).await;
    assert_eq!(status, 200, "{e}");
    assert_eq!(e["code"], "OVER_LIMIT", "{e:#}");
    assert_eq!(e["descriptors"][0]["limits"][0]["used"], LIMIT, "{e:#}");
    assert_eq!(e["descriptors"][1]["code"], "OK", "{e:#}");
    let counts =
        tokio::task::block_in_place(|| (count(&cluster, &user_key_c), count(&cluster, &team_key)));
    assert_eq!(
        counts,
        (LIMIT as u64, LIMIT as u64),
        "the explanation charged"
    );
}

const MIGRATING: &str = "domain: m\ndescriptors:\n  - key: k\n    \
    rate_limit: {unit: year, requests_per_unit: 10}\n";

/// `n` checks of `check`, in turn: their overall codes.
async fn codes(sluice: &Sluice, check: &RateLimitRequest, n: usize) -> Vec<i32> {
    overall_codes(&mut sluice.grpc().await, check, n).await
}

/// A counter's slot moves to another master while Sluice counts on it: during the migration
/// the old master answers ASK (the key has left), afterwards MOVED; Sluice follows both and the
/// limit holds exactly across the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_and_moved_are_followed_while_a_slot_migrates() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let sluice = Sluice::builder(MIGRATING)
        .redis_cluster(&cluster.seeds())
        .start();
    let counter = key("", "m", &[("k", "moving")]);
    let check = request("m", vec![descriptor(&[("k", "moving")])]);
    let (src, dst) = tokio::task::block_in_place(|| {
        let src = cluster.master_of(&counter);
        (src, (src + 1) % 3)
    });
    assert_eq!(codes(&sluice, &check, 3).await, [OK; 3]);

    // Migration under way: the key moves, the slot still belongs to the old master.
    let slot = tokio::task::block_in_place(|| cluster.begin_migration(&counter, src, dst));
    let asking_before = tokio::task::block_in_place(|| {
        command_calls(&cluster.nodes[dst].cli(&["INFO", "commandstats"]), "asking")
    });
    assert_eq!(
        codes(&sluice, &check, 3).await,
        [OK; 3],
        "decided after ASK"
    );
    let asking = tokio::task::block_in_place(|| {
        command_calls(&cluster.nodes[dst].cli(&["INFO", "commandstats"]), "asking")
    });
    assert!(
        asking > asking_before,
        "Sluice followed ASK to the importing node"
    );

    // Migration done: every master names the new owner; the old one now answers MOVED.
    tokio::task::block_in_place(|| cluster.finish_migration(&slot, dst));
    let after = codes(&sluice, &check, 6).await;
    assert_eq!(
        after,
        [OK, OK, OK, OK, OVER_LIMIT, OVER_LIMIT],
        "decided after MOVED"
    );
    let stored = tokio::task::block_in_place(|| {
        assert_eq!(cluster.master_of(&counter), dst);
        count(&cluster, &counter)
    });
    assert_eq!(stored, 10, "every admitted hit counted across the move");
}
