//! TLS to a Redis Cluster and to a Sentinel deployment, end to end, with the ACL user of
//! `docs/operations.md` (its base line and the addition it documents for the deployment, read
//! from the page): every node speaks TLS only and requires client certificates (certificates
//! made here), the nodes talk TLS among themselves (`tls-cluster`, `tls-replication`), and
//! Sluice decides through them exactly. A Sluice given another CA refuses the nodes'
//! certificates: the CA bundle is what verifies Cluster nodes and sentinels too.
//!
//! Cluster nodes and the master a sentinel names are reached at the address Redis announces
//! (`127.0.0.1`), so the server certificate names that address as well as `localhost`.

use std::time::Duration;

use futures::future::join_all;
use sluice_tests::cluster::Cluster;
use sluice_tests::node::RedisNode;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sentinel::SentinelSetup;
use sluice_tests::sluice::{Sluice, SluiceBuilder};
use sluice_tests::tls::{Pki, create_user, documented_acl};

const LIMIT: usize = 5;
const PASSWORD: &str = "another-s3cret-for-this-test";

fn rules() -> String {
    format!(
        "domain: tls\ndescriptors:\n  - key: k\n    \
         rate_limit: {{unit: hour, requests_per_unit: {LIMIT}}}\n"
    )
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Sluice's own flags for TLS trusting `ca`, with `pki`'s client certificate, and the documented
/// user.
fn with_tls_flags(builder: SluiceBuilder, ca: &std::path::Path, pki: &Pki) -> SluiceBuilder {
    builder
        .arg("--redis-tls")
        .arg("--redis-tls-ca")
        .arg(&path(ca))
        .arg("--redis-tls-cert")
        .arg(&path(&pki.client.0))
        .arg("--redis-tls-key")
        .arg(&path(&pki.client.1))
        .arg("--redis-auth")
        .arg(&format!("sluice:{PASSWORD}"))
}

/// `attempts` concurrent checks of each value from each replica: every value must be admitted
/// exactly `LIMIT` times in all.
async fn contend(replicas: &[&Sluice], values: &[String], attempts: usize) {
    let mut calls = Vec::new();
    for sluice in replicas {
        for value in values {
            for _ in 0..attempts {
                let check = request("tls", vec![descriptor(&[("k", value)])]);
                calls.push(async move {
                    let mut client = sluice.grpc().await;
                    let code = client
                        .should_rate_limit(check)
                        .await
                        .expect("a decision")
                        .into_inner()
                        .overall_code;
                    (value.clone(), code)
                });
            }
        }
    }
    let answers = join_all(calls).await;
    for value in values {
        let codes: Vec<i32> = answers
            .iter()
            .filter(|(v, _)| v == value)
            .map(|(_, c)| *c)
            .collect();
        let admitted = codes.iter().filter(|&&c| c == OK).count();
        let refused = codes.iter().filter(|&&c| c == OVER_LIMIT).count();
        assert_eq!(
            (admitted, refused),
            (LIMIT, codes.len() - LIMIT),
            "value {value}: {codes:?}"
        );
    }
}

/// Every key is under the user's pattern, and no command of Sluice's was refused.
fn assert_within_acl(node: &RedisNode) {
    let keys = node.cli(&["KEYS", "*"]);
    assert!(keys.lines().all(|k| k.starts_with("sl:")), "{keys}");
    let denied = node.cli(&["ACL", "LOG"]);
    assert!(
        denied.trim().is_empty(),
        "ACL LOG on {}: {denied}",
        node.addr()
    );
}

/// A Sluice that trusts another CA never connects: it logs why and stays not ready.
fn assert_other_ca_refused(sluice: &Sluice) {
    assert!(
        sluice.wait_for_log("UnknownIssuer", Duration::from_secs(15)),
        "a certificate from an unknown CA was accepted: {:?}",
        sluice.logs()
    );
}

async fn not_ready(sluice: &Sluice) -> bool {
    reqwest::get(sluice.url("/healthcheck"))
        .await
        .map(|r| r.status().as_u16() != 200)
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_with_the_documented_user_decides_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "");
    let cluster = tokio::task::block_in_place(|| {
        let cluster = Cluster::start_with(3, 0, Duration::from_secs(5), Some(&pki));
        let acl = documented_acl(PASSWORD, &["cluster|slots"]);
        for node in &cluster.nodes {
            create_user(node, &acl);
        }
        cluster
    });
    // Values whose counters sit on at least two masters.
    let values: Vec<String> = (0..6).map(|i| format!("v{i}")).collect();
    let masters: std::collections::HashSet<usize> = values
        .iter()
        .map(|v| cluster.master_of(&format!("sl:{{}}3:tls|1:k|{}:{v}|f3600", v.len())))
        .collect();
    assert!(
        masters.len() >= 2,
        "values spread over masters: {masters:?}"
    );

    let start = |ca: &std::path::Path| {
        with_tls_flags(Sluice::builder(&rules()), ca, &pki)
            .redis_cluster(&cluster.seeds())
            .start()
    };
    let a = start(&pki.ca);
    let b = start(&pki.ca);
    a.wait_ready(Duration::from_secs(20)).await;
    b.wait_ready(Duration::from_secs(20)).await;
    contend(&[&a, &b], &values, 4).await;
    // Every admitted check was decided by a script in the Cluster (refusals may come from the L1
    // cache); concurrent checks may share a script run (batched per node).
    let evalsha = tokio::task::block_in_place(|| cluster.calls("evalsha"));
    let mut decided = 0.0;
    for s in [&a, &b] {
        decided += s.metric("sluice_redis_script_requests_total").await;
    }
    assert!(
        decided >= (values.len() * LIMIT) as f64 && evalsha >= 1 && evalsha as f64 <= decided,
        "decided in the Cluster: {decided} requests in {evalsha} scripts run"
    );
    for node in &cluster.nodes {
        assert_within_acl(node);
    }

    let other = Pki::generate(dir.path(), "other-");
    let refused = start(&other.ca);
    tokio::task::block_in_place(|| assert_other_ca_refused(&refused));
    assert!(not_ready(&refused).await, "ready without a trusted Cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_deployment_with_the_documented_user_decides_and_follows_a_failover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "");
    let mut setup = tokio::task::block_in_place(|| {
        let setup = SentinelSetup::start_with(1, Some(&pki));
        let acl = documented_acl(PASSWORD, &["+role"]);
        for node in &setup.data {
            create_user(node, &acl);
        }
        setup
    });
    let master = setup.data[0].port();
    let replica = setup.data[1].port();
    assert_eq!(setup.master_port(), Some(master));

    // The reference's variables, TLS to the sentinels and to the master alike.
    let address = setup.address();
    let start = |ca: &std::path::Path| {
        Sluice::builder(&rules())
            .env("BACKEND_TYPE", "redis")
            .env("REDIS_TYPE", "sentinel")
            .env("REDIS_URL", &address)
            .env("REDIS_AUTH", &format!("sluice:{PASSWORD}"))
            .env("REDIS_TLS", "true")
            .env("REDIS_TLS_CACERT", &path(ca))
            .env("REDIS_TLS_CLIENT_CERT", &path(&pki.client.0))
            .env("REDIS_TLS_CLIENT_KEY", &path(&pki.client.1))
            // Decisions, not the budget, are under test (as the builder sets for --backend).
            .arg("--store-budget-ms")
            .arg("1000")
            .start()
    };
    let sluice = start(&pki.ca);
    sluice.wait_ready(Duration::from_secs(20)).await;
    let values: Vec<String> = (0..3).map(|i| format!("before{i}")).collect();
    contend(&[&sluice], &values, 2 * LIMIT).await;
    tokio::task::block_in_place(|| assert_within_acl(&setup.data[0]));

    // The master dies; the sentinel promotes the replica (over TLS) and Sluice follows it.
    tokio::task::block_in_place(|| {
        setup.node(master).kill();
        assert!(
            sluice_tests::node::wait_until(Duration::from_secs(20), || {
                setup.master_port() == Some(replica)
            }),
            "the sentinel never promoted the replica"
        );
        let followed = sluice.wait_for_logs("following the master", 2, Duration::from_secs(10));
        assert!(
            followed.len() == 2 && followed[1].contains(&format!("127.0.0.1:{replica}")),
            "Sluice never followed the new master: {:?}",
            sluice.logs()
        );
    });
    let values: Vec<String> = (0..3).map(|i| format!("after{i}")).collect();
    contend(&[&sluice], &values, 2 * LIMIT).await;
    tokio::task::block_in_place(|| assert_within_acl(setup.node(replica)));

    let other = Pki::generate(dir.path(), "other-");
    let refused = start(&other.ca);
    tokio::task::block_in_place(|| assert_other_ca_refused(&refused));
    assert!(
        not_ready(&refused).await,
        "ready without a trusted sentinel"
    );
}
