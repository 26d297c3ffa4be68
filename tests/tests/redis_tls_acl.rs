//! TLS and the minimal ACL user, end to end: a real `redis-server` that only speaks TLS and
//! requires client certificates (certificates made here with rcgen: a CA, a server certificate
//! for `localhost`, a client certificate), and the ACL user of `docs/operations.md`, read from the
//! page itself so the documented line is the one tested. Sluice connects by name (`localhost`,
//! which is also the SNI name and the name the server certificate must carry), through both its
//! own flags and the reference's `REDIS_TLS*` variables, and decides with that user alone; the
//! user can run nothing dangerous.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_tests::node::{RedisNode, base_args, free_port_pair};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;
use sluice_tests::tls::{Pki, create_user, documented_acl};

const RULES: &str = "domain: tls\ndescriptors:\n  - key: k\n    \
    rate_limit: {unit: hour, requests_per_unit: 3}\n";

const PASSWORD: &str = "s3cret-for-this-test";

fn start_redis(dir: &Path, pki: &Pki) -> RedisNode {
    let port = free_port_pair(0);
    let mut args = base_args(port, dir);
    pki.serve_tls_only(&mut args, false);
    RedisNode::start(port, args, pki.cli_access())
}

async fn decide_three_then_over(sluice: &Sluice, value: &str) {
    let mut client = sluice.grpc().await;
    let check = request("tls", vec![descriptor(&[("k", value)])]);
    let mut codes = Vec::new();
    for _ in 0..4 {
        let reply = client
            .should_rate_limit(check.clone())
            .await
            .expect("a decision");
        codes.push(reply.into_inner().overall_code);
    }
    assert_eq!(codes, [OK, OK, OK, OVER_LIMIT], "decided in Redis over TLS");
}

async fn wait_ready(sluice: &Sluice) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(sluice.url("/healthcheck"))
            .await
            .expect("GET /healthcheck")
            .status();
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never ready over TLS: {:?}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_the_minimal_acl_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "");
    let redis = tokio::task::block_in_place(|| start_redis(dir.path(), &pki));
    create_user(&redis, &documented_acl(PASSWORD, &[]));
    let ca = pki.ca.to_string_lossy().into_owned();
    let cert = pki.client.0.to_string_lossy().into_owned();
    let key = pki.client.1.to_string_lossy().into_owned();
    let port = redis.port();

    // Sluice's own flags: rediss:// by host name, credentials apart, CA and client certificate.
    let sluice = Sluice::builder(RULES)
        .redis(&format!("rediss://localhost:{port}"))
        .arg("--redis-auth")
        .arg(&format!("sluice:{PASSWORD}"))
        .arg("--redis-tls-ca")
        .arg(&ca)
        .arg("--redis-tls-cert")
        .arg(&cert)
        .arg("--redis-tls-key")
        .arg(&key)
        // Overrides would need more than the counters' ACL line (operations.md says which).
        .arg("--override-store")
        .arg("memory")
        .start();
    wait_ready(&sluice).await;
    decide_three_then_over(&sluice, "flags").await;

    // The reference's variables: host:port, REDIS_AUTH user:password, REDIS_TLS and its files.
    let reference = Sluice::builder(RULES)
        .env("BACKEND_TYPE", "redis")
        .env("REDIS_URL", &format!("localhost:{port}"))
        .env("REDIS_AUTH", &format!("sluice:{PASSWORD}"))
        .env("REDIS_TLS", "true")
        .env("REDIS_TLS_CACERT", &ca)
        .env("REDIS_TLS_CLIENT_CERT", &cert)
        .env("REDIS_TLS_CLIENT_KEY", &key)
        // As the builder sets for --backend redis: decisions, not the budget, are under test.
        .arg("--store-budget-ms")
        .arg("1000")
        .arg("--override-store")
        .arg("memory")
        .start();
    wait_ready(&reference).await;
    decide_three_then_over(&reference, "env").await;

    // The counters are in Redis, under the user's key pattern.
    let keys = redis.cli(&["KEYS", "*"]);
    assert_eq!(
        keys.lines().filter(|k| k.starts_with("sl:")).count(),
        2,
        "{keys}"
    );
    assert!(keys.lines().all(|k| k.starts_with("sl:")), "{keys}");
    // No command of Sluice's was refused.
    let denied = redis.cli(&["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");
}
