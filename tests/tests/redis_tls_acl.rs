//! TLS and the minimal ACL user, end to end: a real `redis-server` that only speaks TLS and
//! requires client certificates (certificates made here with rcgen: a CA, a server certificate
//! for `localhost`, a client certificate), and the ACL user of `docs/operations.md`, read from the
//! page itself so the documented line is the one tested. Sluice connects by name (`localhost`,
//! which is also the SNI name and the name the server certificate must carry), through both its
//! own flags and the reference's `REDIS_TLS*` variables, and decides with that user alone; the
//! user can run nothing dangerous. With the documented addition for runtime overrides, the same
//! user also carries overrides between replicas (their scripts, their pub/sub channel), including
//! to a replica that names the overrides' Redis apart (`--override-redis-url rediss://…`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::admin::{Admin, rlconfig, token_file};
use sluice_tests::node::{RedisNode, base_args, free_port_pair};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, overall_codes, request};
use sluice_tests::sluice::Sluice;
use sluice_tests::tls::{Pki, create_user, documented_acl};

const RULES: &str = "domain: tls\ndescriptors:\n  - key: k\n    \
    rate_limit: {unit: hour, requests_per_unit: 3}\n  - key: s\n    \
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: sliding_window}\n  - key: b\n    \
    rate_limit: {unit: hour, requests_per_unit: 3, algorithm: token_bucket}\n";

const PASSWORD: &str = "s3cret-for-this-test";

fn start_redis(dir: &Path, pki: &Pki) -> RedisNode {
    let port = free_port_pair(0);
    let mut args = base_args(port, dir);
    pki.serve_tls_only(&mut args, false);
    RedisNode::start(port, args, pki.cli_access())
}

async fn decide_three_then_over(sluice: &Sluice, value: &str) {
    // A fixed window, a sliding window and a token bucket: every command their scripts call is
    // in the documented line.
    for key in ["k", "s", "b"] {
        let check = request("tls", vec![descriptor(&[(key, value)])]);
        let codes = overall_codes(&mut sluice.grpc().await, &check, 4).await;
        assert_eq!(
            codes,
            [OK, OK, OK, OVER_LIMIT],
            "{key} {value}: decided in Redis over TLS"
        );
    }
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
        // Overrides need the documented addition to the line (the test below has it).
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
        6,
        "{keys}"
    );
    assert!(keys.lines().all(|k| k.starts_with("sl:")), "{keys}");
    // No command of Sluice's was refused.
    let denied = redis.cli(&["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");
}

/// Polls `sluice`'s `/rlconfig` (bounded) until `done` holds for it.
async fn until_config(sluice: &Sluice, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let config = rlconfig(sluice).await;
        if done(&config) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never followed: {config}\n{:?}",
            sluice.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn code(sluice: &Sluice, value: &str) -> i32 {
    let mut client = sluice.grpc().await;
    client
        .should_rate_limit(request("tls", vec![descriptor(&[("k", value)])]))
        .await
        .expect("a decision")
        .into_inner()
        .overall_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_overrides_through_the_documented_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "");
    let redis = tokio::task::block_in_place(|| start_redis(dir.path(), &pki));
    create_user(&redis, &documented_acl(PASSWORD, &["sluice-overrides"]));
    let (_tokens_dir, tokens) = token_file();
    let replica = || {
        Sluice::builder(RULES)
            .redis(&format!(
                "rediss://sluice:{PASSWORD}@localhost:{}",
                redis.port()
            ))
            .arg("--redis-tls-ca")
            .arg(&pki.ca.to_string_lossy())
            .arg("--redis-tls-cert")
            .arg(&pki.client.0.to_string_lossy())
            .arg("--redis-tls-key")
            .arg(&pki.client.1.to_string_lossy())
            .arg("--admin-token-file")
            .arg(&tokens.to_string_lossy())
            // A poll far beyond the test's bounds: only the change messages can carry a change
            // to the other replica in time, so the subscription is tested.
            .arg("--override-poll-ms")
            .arg("600000")
            .start()
    };
    let (a, b) = (replica(), replica());
    // Counters in memory, overrides in the same TLS Redis named apart: the URL's credentials,
    // the counters' CA bundle and client certificate.
    let apart = Sluice::builder(RULES)
        .arg("--override-store")
        .arg("redis")
        .arg("--override-redis-url")
        .arg(&format!(
            "rediss://sluice:{PASSWORD}@localhost:{}",
            redis.port()
        ))
        .arg("--redis-tls-ca")
        .arg(&pki.ca.to_string_lossy())
        .arg("--redis-tls-cert")
        .arg(&pki.client.0.to_string_lossy())
        .arg("--redis-tls-key")
        .arg(&pki.client.1.to_string_lossy())
        .arg("--admin-token-file")
        .arg(&tokens.to_string_lossy())
        .arg("--override-poll-ms")
        .arg("600000")
        .start();
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (_, listed) = Admin::new(b.http_addr).get("/overrides").await;
    assert_eq!(listed["store"], "redis", "{listed}");

    for _ in 0..3 {
        assert_eq!(code(&a, "vip").await, OK);
    }
    assert_eq!(code(&b, "vip").await, OVER_LIMIT);

    // Set on one replica (a script: HGET, HSET, INCR, LPUSH, LTRIM, PUBLISH), followed by the
    // other through its subscription, and decided with on both.
    let line = "override [k=vip] limit=100";
    let (status, set) = Admin::new(a.http_addr)
        .put(
            "/overrides",
            json!({"domain": "tls", "descriptor": [{"key": "k", "value": "vip"}], "limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    until_config(&b, |c| c.contains(line)).await;
    until_config(&apart, |c| c.contains(line)).await;
    assert_eq!(code(&b, "vip").await, OK);
    assert_eq!(code(&a, "vip").await, OK);

    // Deleted on the other (HGET, HDEL, ...): gone on both.
    let id = set["override"]["id"].as_str().expect("override id");
    let (status, _) = Admin::new(b.http_addr)
        .delete(&format!("/overrides/{id}"))
        .await;
    assert_eq!(status, 200);
    until_config(&a, |c| !c.contains(line)).await;
    until_config(&apart, |c| !c.contains(line)).await;
    assert_eq!(code(&a, "vip").await, OVER_LIMIT);
    // The audit log (LRANGE) has both changes.
    let (status, audit) = Admin::new(a.http_addr).get("/audit").await;
    assert_eq!(status, 200);
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(2),
        "{audit}"
    );

    // Everything Sluice wrote is under the user's patterns, and nothing it ran was refused.
    let keys = redis.cli(&["KEYS", "*"]);
    assert!(
        keys.lines()
            .all(|k| k.starts_with("sl:") || k.starts_with("{sluice-overrides}")),
        "{keys}"
    );
    assert!(
        keys.lines().any(|k| k == "{sluice-overrides}:audit"),
        "{keys}"
    );
    let denied = redis.cli(&["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");
}
