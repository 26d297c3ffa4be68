//! Cross-request batching on a real 3-master Redis Cluster: requests queued while a node's calls
//! are in flight leave together as one script per node, whatever their slots, and every decision
//! stays exact (N concurrent checks on a limit of L admit exactly L).

use std::time::Duration;

use sluice_tests::cluster::{Cluster, command_calls};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, overall_codes, request};
use sluice_tests::sluice::{Sluice, sample_of};

const RULES: &str = "domain: b\ndescriptors:\n  - key: user\n    \
    rate_limit: {unit: year, requests_per_unit: 10}\n  - key: hot\n    \
    rate_limit: {unit: year, requests_per_unit: 100}\n";

const CLIENTS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_are_batched_per_node_and_decided_exactly() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let sluice = Sluice::builder(RULES)
        .redis_cluster(&cluster.seeds())
        // One call in flight per node: whatever the machine's speed, concurrent checks queue.
        .arg("--redis-pool-size")
        .arg("1")
        .start();
    let evalsha_before: Vec<u64> = tokio::task::block_in_place(|| {
        cluster
            .nodes
            .iter()
            .map(|n| command_calls(&n.cli(&["INFO", "commandstats"]), "evalsha"))
            .collect()
    });

    // Every client its own user (its own counter, so its own slot, spread over the 3 masters):
    // 15 checks on a limit of 10, all clients at once.
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = sluice.grpc().await;
        tasks.push(tokio::spawn(async move {
            let check = request("b", vec![descriptor(&[("user", &format!("u{c}"))])]);
            overall_codes(&mut client, &check, 15).await
        }));
    }
    for t in tasks {
        let codes = t.await.expect("client task");
        assert_eq!(
            codes.iter().filter(|c| **c == OK).count(),
            10,
            "one user's checks: {codes:?}"
        );
        assert!(codes.iter().all(|c| *c == OK || *c == OVER_LIMIT));
    }

    // One hot counter, 8 checks from each client at once: exactly its limit admitted.
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut client = sluice.grpc().await;
        tasks.push(tokio::spawn(async move {
            let check = request("b", vec![descriptor(&[("hot", "h")])]);
            let mut admitted = 0;
            for _ in 0..8 {
                let reply = client
                    .should_rate_limit(check.clone())
                    .await
                    .expect("a decision");
                admitted += usize::from(reply.into_inner().overall_code == OK);
            }
            admitted
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("client task");
    }
    assert_eq!(admitted, 100, "the hot counter's limit");

    let scrape = sluice.metrics().await;
    let calls = sample_of(&scrape, "sluice_redis_script_calls_total");
    let requests = sample_of(&scrape, "sluice_redis_script_requests_total");
    // (Checks of a counter known to be over may be answered without Redis.)
    assert!(requests >= (CLIENTS * 10 + 100) as f64, "{requests}");
    // Per-slot batching could not share a call between different users; per node it does.
    assert!(
        requests / calls > 1.5,
        "requests per script call {requests} / {calls}"
    );
    let evalsha: Vec<u64> = tokio::task::block_in_place(|| {
        cluster
            .nodes
            .iter()
            .zip(&evalsha_before)
            .map(|(n, before)| command_calls(&n.cli(&["INFO", "commandstats"]), "evalsha") - before)
            .collect()
    });
    assert!(
        evalsha.iter().all(|&e| e > 0),
        "every master decided some: {evalsha:?}"
    );
    assert_eq!(
        evalsha.iter().sum::<u64>() as f64,
        calls,
        "one EVALSHA per script call"
    );
}

/// The counter key Sluice writes on a Cluster for `user: value` (a yearly fixed window).
fn user_key(value: &str) -> String {
    format!("sl:{{}}1:b|4:user|{}:{value}|f31536000", value.len())
}

/// A slot moves to another master behind the node batchers' back: the batches on its old master
/// still carry its requests, which come back unwritten and are decided through the Cluster's
/// redirections, while the other requests of those batches are decided where they are. No
/// request is lost or counted twice: every user's limit admits exactly its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slot_moved_under_batched_load_is_decided_exactly_once() {
    let cluster = tokio::task::block_in_place(|| Cluster::start(3, 0, Duration::from_secs(5)));
    let sluice = Sluice::builder(RULES)
        .redis_cluster(&cluster.seeds())
        .arg("--redis-pool-size")
        .arg("1")
        .start();
    // 16 users on one master; the first one's slot will move.
    let src = tokio::task::block_in_place(|| cluster.master_of(&user_key("v0")));
    let users: Vec<String> = tokio::task::block_in_place(|| {
        (0..)
            .map(|i| format!("v{i}"))
            .filter(|v| cluster.master_of(&user_key(v)) == src)
            .take(16)
            .collect()
    });
    let check = |user: &str| request("b", vec![descriptor(&[("user", user)])]);
    let mut client = sluice.grpc().await;
    for user in &users {
        let reply = client
            .should_rate_limit(check(user))
            .await
            .expect("a decision");
        assert_eq!(reply.into_inner().overall_code, OK);
    }

    // Move the first user's slot (and its counter) to another master.
    let moving = user_key(&users[0]);
    let dst = (src + 1) % 3;
    tokio::task::block_in_place(|| {
        let slot = cluster.begin_migration(&moving, src, dst);
        cluster.finish_migration(&slot, dst);
        assert_eq!(cluster.master_of(&moving), dst);
    });

    // Two clients per user, 6 checks each, all at once: 9 more admitted per user.
    let mut tasks = Vec::new();
    for c in 0..32 {
        let user = users[c % 16].clone();
        let mut client = sluice.grpc().await;
        tasks.push(tokio::spawn(async move {
            let check = request("b", vec![descriptor(&[("user", &user)])]);
            let mut admitted = 0;
            for _ in 0..6 {
                let reply = client
                    .should_rate_limit(check.clone())
                    .await
                    .expect("a decision");
                let code = reply.into_inner().overall_code;
                assert!(code == OK || code == OVER_LIMIT, "{code}");
                admitted += usize::from(code == OK);
            }
            (user, admitted)
        }));
    }
    let mut admitted = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (user, n) = t.await.expect("client task");
        *admitted.entry(user).or_default() += n;
    }
    for user in &users {
        assert_eq!(admitted[user], 9, "user {user}: {admitted:?}");
        let key = user_key(user);
        let stored: u64 = tokio::task::block_in_place(|| {
            let node = &cluster.nodes[cluster.master_of(&key)];
            node.cli(&["HGET", &key, "n"])
                .trim()
                .parse()
                .expect("a count")
        });
        assert_eq!(stored, 10, "user {user}'s counter");
    }
}
