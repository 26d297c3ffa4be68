//! TLS on Sluice's own listeners, end to end: the real binary, certificates from a throwaway CA,
//! tonic and reqwest clients on rustls. mTLS with a required SAN refuses every wrong client
//! (wrong CA, no certificate, another name, expired); the reference's `GRPC_SERVER_*` names turn
//! the same on; a certificate rotated through a Kubernetes-style symlink swap is picked up under
//! steady load without a failed check, and a broken new certificate leaves the old one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit_with, sample_of};
use sluice_tests::tls::TestCa;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const RULES: &str = "domain: tls\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1000000}\n";

fn pem(path: &Path) -> String {
    TestCa::read(path)
}

/// A tonic channel to `port` over TLS, trusting `cas` (PEM text), presenting `identity`.
async fn tls_channel(
    port: u16,
    cas: &str,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<RateLimitServiceClient<Channel>, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cas))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(pem(cert), pem(key)));
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(RateLimitServiceClient::new(channel))
}

/// One check on `client`; `Err` with the reason when the call (or, under TLS 1.3, the refusal of
/// the client's certificate, which arrives after the client's half of the handshake) fails.
async fn check(client: &mut RateLimitServiceClient<Channel>) -> Result<(), String> {
    let answer = client
        .should_rate_limit(request("tls", vec![descriptor(&[("k", "v")])]))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    assert_eq!(answer.into_inner().overall_code, Code::Ok as i32);
    Ok(())
}

/// Connects and checks once; the error of whichever step failed.
async fn connect_and_check(
    port: u16,
    cas: &str,
    identity: Option<&(PathBuf, PathBuf)>,
) -> Result<(), String> {
    let mut client = tls_channel(port, cas, identity).await?;
    check(&mut client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_a_required_san_admits_the_right_client_and_refuses_every_other() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "a-");
    let other_ca = TestCa::new(dir.path(), "b-");
    let server = ca.leaf(&["localhost", "127.0.0.1"], "server", false);
    let envoy = ca.leaf(&["envoy.mesh.local"], "envoy", false);
    let stranger = ca.leaf(&["someone-else"], "stranger", false);
    let expired = ca.leaf(&["envoy.mesh.local"], "expired", true);
    let foreign = other_ca.leaf(&["envoy.mesh.local"], "foreign", false);
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let sluice = Sluice::builder(RULES)
        .arg("--grpc-tls-cert")
        .arg(&path(&server.0))
        .arg("--grpc-tls-key")
        .arg(&path(&server.1))
        .arg("--grpc-tls-client-ca")
        .arg(&path(&ca.cert))
        .arg("--grpc-tls-client-san")
        .arg("envoy.mesh.local")
        .start();
    let port = sluice.grpc_addr.port();
    let ca_pem = pem(&ca.cert);

    connect_and_check(port, &ca_pem, Some(&envoy))
        .await
        .expect("the right client, with the right name, is served");

    let refused = [
        ("no client certificate", None),
        ("another name", Some(&stranger)),
        ("an expired certificate", Some(&expired)),
        ("a certificate from another CA", Some(&foreign)),
    ];
    for (what, identity) in refused {
        let result = connect_and_check(port, &ca_pem, identity).await;
        assert!(result.is_err(), "a client with {what} was served");
    }
    // A client that does not trust Sluice's CA gives up itself.
    let wrong_trust = connect_and_check(port, &pem(&other_ca.cert), Some(&envoy)).await;
    assert!(
        wrong_trust.is_err(),
        "a client trusting another CA connected"
    );
    // Plaintext to a TLS port is no RLS service at all.
    let plaintext = async {
        let mut client = RateLimitServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        check(&mut client).await
    };
    assert!(
        plaintext.await.is_err(),
        "plaintext was served on a TLS port"
    );

    // Each refusal is counted as a failed handshake (the client that distrusts Sluice aborts its
    // own handshake, which the server sees as one too).
    let scrape = reqwest::get(sluice.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed = sample_of(
        &scrape,
        "sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"tls_handshake\"}",
    );
    assert!(
        failed >= 4.0,
        "failed TLS handshakes counted: {failed}\n{scrape}"
    );
    // The service still serves the right client after all that.
    connect_and_check(port, &ca_pem, Some(&envoy))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_names_turn_tls_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "");
    let server = ca.leaf(&["localhost"], "server", false);
    let client = ca.leaf(&["ratelimit-client"], "client", false);
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let sluice = Sluice::builder(RULES)
        .env("GRPC_SERVER_USE_TLS", "true")
        .env("GRPC_SERVER_TLS_CERT", &path(&server.0))
        .env("GRPC_SERVER_TLS_KEY", &path(&server.1))
        .env("GRPC_CLIENT_TLS_CACERT", &path(&ca.cert))
        .env("GRPC_CLIENT_TLS_SAN", "ratelimit-client")
        .start();
    let port = sluice.grpc_addr.port();
    connect_and_check(port, &pem(&ca.cert), Some(&client))
        .await
        .expect("served over mTLS");
    assert!(
        connect_and_check(port, &pem(&ca.cert), None).await.is_err(),
        "GRPC_CLIENT_TLS_CACERT must require a client certificate"
    );
}

/// A Kubernetes Secret mount: `tls.crt` and `tls.key` are symlinks into `..data`, itself a
/// symlink to the current timestamped directory; an update writes a new directory and swaps
/// `..data` in one rename.
struct SecretMount {
    dir: PathBuf,
    version: u32,
}

impl SecretMount {
    fn new(dir: &Path, cert: &Path, key: &Path) -> Self {
        let mut mount = Self {
            dir: dir.to_path_buf(),
            version: 0,
        };
        mount.update(
            &std::fs::read(cert).expect("secret mount file"),
            &std::fs::read(key).expect("secret mount file"),
        );
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt"))
            .expect("secret mount file");
        std::os::unix::fs::symlink("..data/tls.key", dir.join("tls.key"))
            .expect("secret mount file");
        mount
    }

    fn update(&mut self, cert: &[u8], key: &[u8]) {
        self.version += 1;
        let version = format!("..2026_12_07_{}", self.version);
        let target = self.dir.join(&version);
        std::fs::create_dir(&target).expect("secret mount file");
        std::fs::write(target.join("tls.crt"), cert).expect("secret mount file");
        std::fs::write(target.join("tls.key"), key).expect("secret mount file");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).expect("secret mount file");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("secret mount file");
    }

    fn cert(&self) -> String {
        self.dir
            .join("tls.crt")
            .to_str()
            .expect("secret mount file")
            .to_owned()
    }

    fn key(&self) -> String {
        self.dir
            .join("tls.key")
            .to_str()
            .expect("secret mount file")
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_is_picked_up_under_load_without_a_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(dir.path(), "old-");
    let new_ca = TestCa::new(dir.path(), "new-");
    let old = old_ca.leaf(&["localhost"], "server", false);
    let new = new_ca.leaf(&["localhost"], "server", false);
    let secret = dir.path().join("secret");
    std::fs::create_dir(&secret).unwrap();
    let mut mount = SecretMount::new(&secret, &old.0, &old.1);
    let sluice = Sluice::builder(RULES)
        .arg("--grpc-tls-cert")
        .arg(&mount.cert())
        .arg("--grpc-tls-key")
        .arg(&mount.key())
        .start();
    let port = sluice.grpc_addr.port();
    // The load trusts both CAs (as a client does while a CA rotates); the probes trust one each.
    let both = format!("{}{}", pem(&old_ca.cert), pem(&new_ca.cert));
    connect_and_check(port, &pem(&old_ca.cert), None)
        .await
        .expect("the first certificate serves");

    // Steady load: one long-lived connection, and a new connection (a new handshake) per round.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, both) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            both.clone(),
        );
        tokio::spawn(async move {
            let mut long_lived = tls_channel(port, &both, None).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..5_000 {
                if stop.load(Ordering::Acquire) || Instant::now() > deadline {
                    break;
                }
                for result in [
                    check(&mut long_lived).await,
                    connect_and_check(port, &both, None).await,
                ] {
                    match result {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed during rotation: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        })
    };
    let wait_ok = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while ok.load(Ordering::Relaxed) < n && Instant::now() < deadline {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(ok.load(Ordering::Relaxed) >= n, "the load stalled");
        }
    };
    wait_ok(20).await;

    mount.update(
        &std::fs::read(&new.0).unwrap(),
        &std::fs::read(&new.1).unwrap(),
    );
    // Until a client that trusts only the new CA gets through (bounded).
    let deadline = Instant::now() + Duration::from_secs(15);
    let picked_up = loop {
        if connect_and_check(port, &pem(&new_ca.cert), None)
            .await
            .is_ok()
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(picked_up, "the new certificate was not served within 15 s");
    assert!(sluice.wait_for_log("TLS certificate reloaded", Duration::from_secs(5)));
    let after_rotation = ok.load(Ordering::Relaxed);
    wait_ok(after_rotation + 20).await;

    // A broken update: logged, and the last good certificate keeps serving.
    mount.update(
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
        &std::fs::read(&new.1).unwrap(),
    );
    assert!(
        sluice.wait_for_log("cannot be used", Duration::from_secs(15)),
        "a broken certificate was not reported"
    );
    let after_breakage = ok.load(Ordering::Relaxed);
    wait_ok(after_breakage + 20).await;
    connect_and_check(port, &pem(&new_ca.cert), None)
        .await
        .expect("the last good certificate still serves");

    stop.store(true, Ordering::Release);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "checks failed during rotation ({} succeeded)",
        ok.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_listener_serves_tls_and_can_require_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "");
    let server = ca.leaf(&["localhost"], "server", false);
    let client = ca.leaf(&["admin-cli"], "client", false);
    let path = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let sluice = Sluice::builder(RULES)
        .arg("--http-tls-cert")
        .arg(&path(&server.0))
        .arg("--http-tls-key")
        .arg(&path(&server.1))
        .arg("--http-tls-client-ca")
        .arg(&path(&ca.cert))
        .start();
    let url = format!("https://localhost:{}/healthcheck", sluice.http_addr.port());
    let builder = || {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem(&ca.cert).as_bytes()).unwrap())
            .resolve("localhost", sluice.http_addr)
            .timeout(Duration::from_secs(5))
    };
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", pem(&client.0), pem(&client.1)).as_bytes())
            .unwrap();
    let answer = builder()
        .identity(identity)
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let without = builder().build().unwrap().get(&url).send().await;
    assert!(without.is_err(), "served without a client certificate");
    let plaintext = reqwest::get(sluice.url("/healthcheck")).await;
    assert!(plaintext.is_err(), "plaintext was served on a TLS port");
}

#[test]
fn unusable_tls_settings_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let ca = TestCa::new(dir.path(), "");
    let server = ca.leaf(&["localhost"], "server", false);
    let other = ca.leaf(&["localhost"], "other", false);
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let config = p(&rules);
    let missing = p(&dir.path().join("missing.pem"));
    let (cert, key, other_key) = (p(&server.0), p(&server.1), p(&other.1));
    let not_pem = p(&rules);
    // Flags, environment, and what the error must say.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a [&'a str]);
    let cases: Vec<Case<'_>> = vec![
        (
            vec!["--grpc-tls-cert", &missing, "--grpc-tls-key", &key],
            vec![],
            &["--grpc-tls-cert", "missing.pem", "No such file"],
        ),
        (
            vec!["--grpc-tls-cert", &cert, "--grpc-tls-key", &other_key],
            vec![],
            &["--grpc-tls-key", "cannot be used with the certificate"],
        ),
        (
            vec!["--http-tls-cert", &not_pem, "--http-tls-key", &key],
            vec![],
            &["--http-tls-cert", "no PEM certificate"],
        ),
        (
            vec!["--grpc-tls-cert", &cert],
            vec![],
            &["--grpc-tls-cert needs both a certificate and its key"],
        ),
        (
            vec![],
            vec![
                ("GRPC_SERVER_USE_TLS", "true"),
                ("GRPC_SERVER_TLS_CERT", &missing),
                ("GRPC_SERVER_TLS_KEY", &key),
            ],
            &["GRPC_SERVER_TLS_CERT", "missing.pem"],
        ),
        (
            vec![],
            vec![("GRPC_SERVER_USE_TLS", "true")],
            &["GRPC_SERVER_USE_TLS=true needs GRPC_SERVER_TLS_CERT"],
        ),
        (
            vec![],
            vec![("GRPC_SERVER_USE_TLS", "yes please")],
            &["GRPC_SERVER_USE_TLS", "expected true or false"],
        ),
        (
            vec![
                "--grpc-tls-cert",
                &cert,
                "--grpc-tls-key",
                &key,
                "--grpc-tls-client-san",
                "x",
            ],
            vec![],
            &["--grpc-tls-client-san", "give the CA"],
        ),
        (
            vec![],
            vec![("GRPC_MAX_CONNECTION_AGE", "a day")],
            &["GRPC_MAX_CONNECTION_AGE", "not a duration"],
        ),
    ];
    for (args, envs, expected) in cases {
        let mut all = vec![
            "--config",
            config.as_str(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ];
        all.extend(args.iter().copied());
        let (status, stderr) = run_to_exit_with(&[], &all, &envs, Duration::from_secs(20));
        let status = status.expect("sluice exits");
        assert!(!status.success(), "{args:?} {envs:?} started");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{args:?} {envs:?}: no {needle:?} in\n{stderr}"
            );
        }
    }
}
