//! The failure semantics `docs/operations.md` and `docs/observability.md` promise, each checked as
//! an operator would, with real Redis processes killed, hung and restarted:
//!
//! - readiness (HTTP and gRPC health) comes back within about a second of Redis answering, with
//!   no check arriving meanwhile;
//! - `failure_mode: local` cannot double-spend an outage, and the hits it admitted are in Redis
//!   once it is back, even when the only traffic is on one key;
//! - SIGTERM opens a drain window a client can observe: NOT_SERVING at once, new connections
//!   still answered, then closed;
//! - start-up waits for an unresponsive Redis no longer than `--redis-timeout-ms`.

use std::time::{Duration, Instant};

use sluice_tests::node::{CliAccess, RedisNode, base_args, free_port_pair};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const RULES: &str = "
domain: tenants
failure_mode: local
descriptors:
  - key: tenant
    rate_limit: { unit: hour, requests_per_unit: 20 }
";

fn redis(dir: &std::path::Path) -> (RedisNode, String) {
    let port = free_port_pair(0);
    let mut args = base_args(port, dir);
    // Appended before each reply: a killed Redis keeps what it acknowledged.
    args.extend(["--appendonly", "yes", "--appendfsync", "no"].map(String::from));
    let node = RedisNode::start(port, args, CliAccess::default());
    (node, format!("redis://127.0.0.1:{port}"))
}

async fn healthcheck(sluice: &Sluice) -> (u16, String) {
    match reqwest::get(sluice.url("/healthcheck")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

async fn grpc_health(addr: std::net::SocketAddr) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let r = client
        .check(HealthCheckRequest {
            service: "ratelimit".into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

/// Polls (every 20 ms, at most `within`) until `done`; how long it took.
async fn until<F, Fut>(within: Duration, mut done: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if done().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn check(sluice: &Sluice, tenant: &str) -> i32 {
    let mut client = sluice.grpc().await;
    client
        .should_rate_limit(request("tenants", vec![descriptor(&[("tenant", tenant)])]))
        .await
        .expect("an answer")
        .into_inner()
        .overall_code
}

/// The hourly count of `tenant`, as Redis holds it.
fn stored(redis: &RedisNode, tenant: &str) -> u64 {
    let key = format!("sl:7:tenants|6:tenant|{}:{tenant}|f3600", tenant.len());
    redis.cli(&["HGET", &key, "n"]).trim().parse().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_comes_back_without_traffic() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut redis, url) = redis(dir.path());
    let sluice = Sluice::builder(RULES).redis(&url).start();
    sluice.wait_ready(Duration::from_secs(10)).await;
    let patient = Sluice::builder(RULES)
        .redis(&url)
        .arg("--ready-when-store-down")
        .start();
    patient.wait_ready(Duration::from_secs(10)).await;

    redis.kill();
    let down = until(Duration::from_secs(10), || async {
        healthcheck(&sluice).await.0 == 500
            && grpc_health(sluice.grpc_addr).await == Some(ServingStatus::NotServing)
    })
    .await;
    assert!(down.is_some(), "never unready with Redis gone");
    // The patient replica stays ready, and says why.
    let (status, body) = healthcheck(&patient).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("counter store unavailable"), "{body}");
    assert_eq!(
        grpc_health(patient.grpc_addr).await,
        Some(ServingStatus::Serving)
    );

    // Not one check from here on: only the probes can bring readiness back.
    redis.restart();
    let back = until(Duration::from_secs(10), || async {
        healthcheck(&sluice).await.0 == 200
            && grpc_health(sluice.grpc_addr).await == Some(ServingStatus::Serving)
    })
    .await
    .expect("ready again without traffic");
    println!("ready {back:?} after Redis answered again, with no traffic");
    assert!(back < Duration::from_secs(2), "{back:?}");
    let patient_back = until(Duration::from_secs(10), || async {
        healthcheck(&patient).await == (200, "OK\n".to_owned())
    })
    .await;
    assert!(patient_back.is_some(), "{:?}", healthcheck(&patient).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_outage_is_not_double_spent() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut redis, url) = redis(dir.path());
    let replicas: Vec<Sluice> = (0..2)
        .map(|_| {
            Sluice::builder(RULES)
                .redis(&url)
                .arg("--replicas")
                .arg("2")
                .start()
        })
        .collect();
    for r in &replicas {
        r.wait_ready(Duration::from_secs(10)).await;
    }
    let mut admitted = 0;
    // 10 of 20 before the outage, through both replicas.
    for i in 0..10 {
        assert_eq!(check(&replicas[i % 2], "acme").await, OK);
        admitted += 1;
    }
    redis.kill();
    for r in &replicas {
        let unready = until(Duration::from_secs(10), || async {
            healthcheck(r).await.0 == 500
        })
        .await;
        assert!(unready.is_some(), "the breaker never opened");
    }
    let mut during = 0;
    for i in 0..30 {
        if check(&replicas[i % 2], "acme").await == OK {
            during += 1;
        }
    }
    // Each replica saw 10 of 20 spent: its half of the 10 left.
    assert_eq!(during, 10, "admitted from the local shares");
    admitted += during;

    redis.restart();
    for r in &replicas {
        until(Duration::from_secs(10), || async {
            healthcheck(r).await.0 == 200
        })
        .await
        .expect("ready again");
    }
    let mut after = 0;
    for i in 0..20 {
        if check(&replicas[i % 2], "acme").await == OK {
            after += 1;
        }
    }
    admitted += after;
    println!("admitted {admitted} across the outage (during {during}, after {after})");
    assert_eq!(
        after, 0,
        "the outage's hits were decided against before they were handed over"
    );
    assert_eq!(admitted, 20);
    assert_eq!(stored(&redis, "acme"), 20, "Redis holds every admitted hit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hang_is_reconciled_with_traffic_on_one_key_only() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut redis, url) = redis(dir.path());
    let sluice = Sluice::builder(RULES).redis(&url).start();
    sluice.wait_ready(Duration::from_secs(10)).await;
    for _ in 0..15 {
        assert_eq!(check(&sluice, "hung").await, OK);
    }
    redis.pause();
    let mut during = 0;
    let mut answers = Vec::new();
    // Past the store budget the breaker opens; the local share takes the 5 left.
    for _ in 0..40 {
        let started = Instant::now();
        let code = check(&sluice, "hung").await;
        answers.push((code, started.elapsed().as_millis()));
        if code == OK {
            during += 1;
        }
    }
    println!("during the hang: {answers:?}");
    assert_eq!(during, 5, "the 5 left of 20");
    redis.resume();
    // Only this key is checked, and it is over its limit (the L1 cache answers it): the probes
    // alone close the breaker and hand the 5 over.
    // Redis holds every admitted hit: the 15 before, the 5 admitted locally; and the calls that
    // timed out when it hung, which it ran when it resumed (a count errs high, never low).
    let reconciled = until(Duration::from_secs(5), || async {
        assert_eq!(check(&sluice, "hung").await, OVER_LIMIT);
        stored(&redis, "hung") >= 20
    })
    .await;
    assert!(
        reconciled.is_some(),
        "Redis holds {} of 20 admitted",
        stored(&redis, "hung")
    );
    println!("the hang's local hits were in Redis {reconciled:?} after it resumed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_window_is_observable() {
    let mut sluice = Sluice::builder(RULES)
        .arg("--drain-window-secs")
        .arg("2")
        .arg("--shutdown-grace-secs")
        .arg("5")
        .start();
    assert_eq!(healthcheck(&sluice).await.0, 200);
    let pid = sluice.pid().to_string();
    let sigterm = Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    // A client that keeps connecting, a fresh connection each time (bounded by count and time).
    let mut seen = Vec::new();
    for _ in 0..200 {
        let at = sigterm.elapsed();
        if at > Duration::from_secs(4) {
            break;
        }
        let health = healthcheck(&sluice).await.0;
        let grpc = grpc_health(sluice.grpc_addr).await;
        let answered = async {
            let mut client =
                envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(
                    format!("http://{}", sluice.grpc_addr),
                )
                .await
                .ok()?;
            let r = client
                .should_rate_limit(request("tenants", vec![descriptor(&[("tenant", "t")])]))
                .await
                .ok()?;
            Some(r.into_inner().overall_code)
        }
        .await;
        seen.push((at, health, grpc, answered));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = sluice.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "exit {status:?}");
    // The signal takes a moment to arrive; from then until the window ends, not ready but
    // answering.
    let noticed = seen
        .iter()
        .find(|(_, health, ..)| *health == 503)
        .map(|(at, ..)| *at)
        .expect("never not ready");
    assert!(
        noticed < Duration::from_millis(500),
        "noticed after {noticed:?}"
    );
    let window: Vec<_> = seen
        .iter()
        .filter(|(at, ..)| *at >= noticed && *at < Duration::from_millis(1700))
        .collect();
    assert!(window.len() >= 5, "{seen:?}");
    for (at, health, grpc, answered) in &window {
        assert_eq!(*health, 503, "at {at:?}: /healthcheck");
        assert_eq!(
            *grpc,
            Some(ServingStatus::NotServing),
            "at {at:?}: gRPC health"
        );
        assert!(answered.is_some(), "at {at:?}: a new connection's check");
    }
    let closed: Vec<_> = seen
        .iter()
        .filter(|(at, ..)| *at > Duration::from_millis(2500))
        .collect();
    assert!(!closed.is_empty(), "{seen:?}");
    for (at, health, _, answered) in &closed {
        assert_eq!(
            (*health, *answered),
            (0, None),
            "at {at:?}: still accepting"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_waits_no_longer_than_the_redis_timeout() {
    // A "Redis" that accepts connections and never answers.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = hung.local_addr().expect("addr");
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hung.incoming().take(64) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
        held
    });
    let dir = tempfile::tempdir().expect("dir");
    let (_redis, healthy_url) = redis(dir.path());
    let timeout_ms = 300u64;
    let started = |url: &str| {
        let begun = Instant::now();
        let sluice = Sluice::builder(RULES)
            .redis(url)
            .arg("--redis-timeout-ms")
            .arg(&timeout_ms.to_string())
            .start();
        (begun.elapsed(), sluice)
    };
    let (healthy, _a) = started(&healthy_url);
    let (unanswered, _b) = started(&format!("redis://{addr}"));
    println!(
        "start-up: {healthy:?} with a healthy Redis, {unanswered:?} with one that never answers"
    );
    let waited = unanswered.saturating_sub(healthy);
    assert!(
        waited < Duration::from_millis(timeout_ms * 3 / 2),
        "start-up waited {waited:?} longer for a Redis that never answers"
    );
    drop(holder);
}
