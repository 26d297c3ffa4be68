//! The reference's stats from the real binary: statsd datagrams received on a real UDP socket
//! (the reference's names, `EXTRA_TAGS`, DogStatsD tags, the last interval pushed on shutdown),
//! and the Prometheus names of the reference's default statsd_exporter mapping on
//! `PROMETHEUS_ADDR`, checked by `promtool`.

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use sluice_tests::redis::free_port;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::Sluice;

const RULES: &str = "domain: stats\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 3}\n  - key: org\n    descriptors:\n      - key: team\n        rate_limit: {unit: hour, requests_per_unit: 100}\n";

/// Four checks of `k` (the fourth over the limit) and one of `org`/`team`.
async fn traffic(sluice: &Sluice) {
    let mut client = sluice.grpc().await;
    for i in 0..4 {
        let answer = client
            .should_rate_limit(request("stats", vec![descriptor(&[("k", "v")])]))
            .await
            .expect("check")
            .into_inner();
        let expected = if i < 3 { Code::Ok } else { Code::OverLimit };
        assert_eq!(answer.overall_code, expected as i32);
    }
    client
        .should_rate_limit(request(
            "stats",
            vec![descriptor(&[("org", "acme"), ("team", "edge")])],
        ))
        .await
        .expect("check");
}

/// Every statsd line received until `done` holds for them (bounded by `within`).
fn receive(socket: &UdpSocket, within: Duration, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + within;
    let mut lines = Vec::new();
    let mut buf = [0u8; 65536];
    while !done(&lines) && Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            assert!(n <= 1432, "a datagram of {n} bytes");
            let text = String::from_utf8(buf[..n].to_vec()).expect("UTF-8 datagram");
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines
}

/// The sum of the increments of `name` in `lines` (with whatever tags follow).
fn total(lines: &[String], name: &str) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .filter_map(|rest| rest.split('|').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_gets_the_reference_names_with_dogstatsd_tags() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let port = socket.local_addr().expect("addr").port().to_string();
    let sluice = Sluice::builder(RULES)
        .env("USE_STATSD", "true")
        .env("STATSD_HOST", "127.0.0.1")
        .env("STATSD_PORT", &port)
        .env("USE_DOG_STATSD", "true")
        .env("EXTRA_TAGS", "env:test,cluster:eu1")
        .env("STATS_FLUSH_INTERVAL", "100ms")
        .start();
    traffic(&sluice).await;
    let hits = "ratelimit.service.rate_limit.stats.k.total_hits";
    let lines = receive(&socket, Duration::from_secs(20), |lines| {
        total(lines, hits) >= 4
            && total(lines, "ratelimit_server.ShouldRateLimit.total_requests") >= 5
    });
    assert_eq!(total(&lines, hits), 4, "{lines:#?}");
    assert_eq!(
        total(&lines, "ratelimit.service.rate_limit.stats.k.over_limit"),
        1
    );
    assert_eq!(
        total(&lines, "ratelimit.service.rate_limit.stats.k.within_limit"),
        3
    );
    assert_eq!(
        total(
            &lines,
            "ratelimit.service.rate_limit.stats.org.team.total_hits"
        ),
        1
    );
    assert_eq!(
        total(&lines, "ratelimit_server.ShouldRateLimit.total_requests"),
        5
    );
    assert_eq!(total(&lines, "ratelimit.service.config_load_success"), 1);
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with("|c|#env:test,cluster:eu1")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_interval_is_pushed_on_shutdown_with_tags_in_the_names() {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    let port = socket.local_addr().expect("addr").port().to_string();
    // An hour between pushes: only the push at shutdown can deliver these counts.
    let mut sluice = Sluice::builder(RULES)
        .env("STATSD_HOST", "127.0.0.1")
        .env("STATSD_PORT", &port)
        .env("EXTRA_TAGS", "env:test")
        .env("STATS_FLUSH_INTERVAL", "1h")
        .start();
    traffic(&sluice).await;
    let status = sluice.terminate(Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let lines = receive(&socket, Duration::from_secs(5), |lines| !lines.is_empty());
    let hits = "ratelimit.service.rate_limit.stats.k.total_hits.__env=test";
    assert_eq!(total(&lines, hits), 4, "{lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_prometheus_names_are_served_on_their_own_address() {
    let port = free_port();
    let sluice = Sluice::builder(RULES)
        .env("USE_PROMETHEUS", "true")
        .env("PROMETHEUS_ADDR", &format!("127.0.0.1:{port}"))
        .env("PROMETHEUS_PATH", "/stats")
        .start();
    traffic(&sluice).await;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/stats"))
        .await
        .expect("GET the reference's metrics")
        .text()
        .await
        .expect("body");
    for line in [
        r#"ratelimit_service_rate_limit_total_hits{domain="stats",key1="k"} 4"#,
        r#"ratelimit_service_rate_limit_over_limit{domain="stats",key1="k"} 1"#,
        r#"ratelimit_service_rate_limit_total_hits{domain="stats",key1="org",key2="team"} 1"#,
        r#"ratelimit_service_total_requests{grpc_method="ShouldRateLimit"} 5"#,
        "ratelimit_service_config_load_success 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(text.contains(
        "ratelimit_service_response_time_seconds_bucket{grpc_method=\"ShouldRateLimit\""
    ));
    // Sluice's own names stay on the HTTP port.
    let own = sluice.metrics().await;
    assert!(
        own.contains("sluice_rule_total_hits_total{rule=\"stats.k\"} 4"),
        "{own}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/test.sh (Debian's prometheus package)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let out = promtool.wait_with_output().expect("promtool");
    let report = String::from_utf8_lossy(&out.stderr);
    // promtool's lint complains about names without _total and the like (the reference's names
    // are what they are); a parse error is what would fail a scrape.
    assert!(!report.contains("error while linting"), "{report}");
}
