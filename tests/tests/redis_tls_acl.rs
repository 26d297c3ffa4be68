//! TLS and the minimal ACL user, end to end: a real `redis-server` that only speaks TLS and
//! requires client certificates (certificates made here with rcgen: a CA, a server certificate
//! for `localhost`, a client certificate), and the ACL user of `docs/operations.md`, read from the
//! page itself so the documented line is the one tested. Sluice connects by name (`localhost`,
//! which is also the SNI name and the name the server certificate must carry), through both its
//! own flags and the reference's `REDIS_TLS*` variables, and decides with that user alone; the
//! user can run nothing dangerous.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sluice_tests::node::{CliAccess, RedisNode, free_port_pair};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

const RULES: &str = "domain: tls\ndescriptors:\n  - key: k\n    \
    rate_limit: {unit: hour, requests_per_unit: 3}\n";

const PASSWORD: &str = "s3cret-for-this-test";

struct Pki {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write certificate file");
    path
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    // Distinct names: a leaf named like its issuer would look self-signed to OpenSSL.
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Sluice test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let leaf = |names: Vec<String>, prefix: &str| {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, prefix);
        let cert = params.signed_by(&key, &ca).expect("leaf certificate");
        (
            write(dir, &format!("{prefix}.pem"), &cert.pem()),
            write(dir, &format!("{prefix}.key"), &key.serialize_pem()),
        )
    };
    Pki {
        ca: write(dir, "ca.pem", &ca.pem()),
        server: leaf(vec!["localhost".into()], "server"),
        client: leaf(vec!["sluice".into()], "client"),
    }
}

/// The `ACL SETUSER` line `docs/operations.md` documents, with this test's password.
fn documented_acl_line() -> Vec<String> {
    let doc = include_str!("../../docs/operations.md");
    let line = doc
        .lines()
        .find(|l| l.starts_with("ACL SETUSER sluice "))
        .expect("docs/operations.md shows the ACL line");
    line.split_whitespace()
        .map(|w| w.replace("PASSWORD", PASSWORD))
        .collect()
}

fn start_redis(dir: &Path, pki: &Pki) -> RedisNode {
    let port = free_port_pair(0);
    let args: Vec<String> = [
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--tls-cert-file",
        &pki.server.0.to_string_lossy(),
        "--tls-key-file",
        &pki.server.1.to_string_lossy(),
        "--tls-ca-cert-file",
        &pki.ca.to_string_lossy(),
        "--tls-auth-clients",
        "yes",
        "--save",
        "",
        "--dir",
        &dir.to_string_lossy(),
        "--loglevel",
        "warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let access = CliAccess {
        auth: None,
        tls: Some((pki.ca.clone(), pki.client.0.clone(), pki.client.1.clone())),
    };
    RedisNode::start(port, args, access)
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
    let pki = pki(dir.path());
    let redis = tokio::task::block_in_place(|| start_redis(dir.path(), &pki));
    let acl = documented_acl_line();
    let words: Vec<&str> = acl.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&words).trim(), "OK", "{words:?}");
    for forbidden in [
        vec!["FLUSHALL"],
        vec!["KEYS", "*"],
        vec!["CONFIG", "GET", "*"],
        vec!["SCAN", "0"],
        vec!["SHUTDOWN"],
        vec!["GET", "other:key"],
        vec!["EVAL", "return 1", "0"],
    ] {
        let mut args = vec!["ACL", "DRYRUN", "sluice"];
        args.extend(&forbidden);
        let answer = redis.cli(&args);
        assert!(
            answer.contains("no permissions"),
            "the sluice user may run {forbidden:?}: {answer}"
        );
    }
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
