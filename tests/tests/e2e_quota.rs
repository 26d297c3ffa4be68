//! End-to-end: the quota model through the real `sluice` binary, on the memory store and on a
//! real redis-server: every algorithm, several limits per descriptor, cost-based calendar quotas,
//! the answers a client sees (statuses, headers, problem documents over gRPC and `/json`), value
//! hashing, and several processes sharing one Redis.
//!
//! Time-exact behaviour (window edges, refill instants) is proven on a manual clock in the unit
//! and property tests; here time is real, so assertions about durations are bounds.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::Value;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, SluiceBuilder};
use tonic::transport::Channel;

const RULES: &str = r#"
domain: edge
descriptors:
  - key: app_id
    rate_limit:
      unit: minute
      unit_multiplier: 5
      requests_per_unit: 3
      algorithm: sliding_window
  # One token a minute, bursts of two.
  - key: burst
    rate_limit: {unit: hour, requests_per_unit: 60, algorithm: token_bucket, burst: 2}
  - key: storage_bytes
    rate_limit:
      unit: month
      calendar: true
      requests_per_unit: 10737418240
      over_limit_status: 402
  - key: team_id
    rate_limits:
      # One token every six minutes: nothing refills while the test runs.
      - {unit: hour, requests_per_unit: 10, algorithm: token_bucket, burst: 20}
      - {unit: day, requests_per_unit: 4}
  - key: lim_a
    rate_limit: {name: lim_a, unit: hour, requests_per_unit: 5}
  - key: free
    rate_limit:
      unlimited: true
      replaces: [{name: lim_a}]
  - key: hot_fixed
    rate_limit: {unit: hour, requests_per_unit: 50}
  - key: hot_sliding
    rate_limit: {unit: hour, requests_per_unit: 50, algorithm: sliding_window}
  - key: hot_bucket
    rate_limit: {unit: day, requests_per_unit: 50, algorithm: token_bucket}
"#;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

struct Running {
    sluice: Sluice,
    _redis: Option<RedisServer>,
}

fn start(backend: Backend, configure: impl FnOnce(SluiceBuilder) -> SluiceBuilder) -> Running {
    let b = configure(Sluice::builder(RULES));
    match backend {
        Backend::Memory => Running {
            sluice: b.start(),
            _redis: None,
        },
        Backend::Redis => {
            let redis = RedisServer::start();
            Running {
                sluice: b.redis(&redis.url()).start(),
                _redis: Some(redis),
            }
        }
    }
}

async fn check(
    client: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
) -> RateLimitResponse {
    client
        .should_rate_limit(request("edge", descriptors))
        .await
        .expect("check")
        .into_inner()
}

fn header<'r>(r: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn problem(r: &RateLimitResponse) -> Value {
    assert_eq!(
        header(r, "content-type"),
        Some("application/problem+json"),
        "{r:?}"
    );
    serde_json::from_slice(&r.raw_body).expect("the raw body is JSON")
}

fn wait_of(r: &RateLimitResponse, i: usize) -> Duration {
    let d = r.statuses[i]
        .duration_until_reset
        .as_ref()
        .expect("duration_until_reset");
    Duration::new(d.seconds as u64, d.nanos as u32)
}

fn costing(entries: &[(&str, &str)], cost: u64) -> RateLimitDescriptor {
    RateLimitDescriptor {
        hits_addend: Some(UInt64Value { value: cost }),
        ..descriptor(entries)
    }
}

async fn sliding_window_answers(backend: Backend) {
    let run = start(backend, |b| b);
    let mut client = run.sluice.grpc().await;
    let app = || vec![descriptor(&[("app_id", "a1")])];
    for remaining in [2u32, 1, 0] {
        let r = check(&mut client, app()).await;
        assert_eq!(r.overall_code, OK);
        assert_eq!(r.statuses[0].limit_remaining, remaining);
        assert!(r.raw_body.is_empty());
    }
    let r = check(&mut client, app()).await;
    assert_eq!(r.overall_code, OVER_LIMIT);
    // The hits leave one window after their 15 s sub-window: at most 315 s from now.
    let wait = wait_of(&r, 0);
    assert!(
        wait > Duration::from_secs(280) && wait <= Duration::from_secs(315),
        "{wait:?}"
    );
    let retry: u64 = header(&r, "Retry-After")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert_eq!(retry, wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    let p = problem(&r);
    assert_eq!(p["status"], 429);
    assert_eq!(p["title"], "Too Many Requests");
    assert_eq!(p["kind"], "throttle");
    assert_eq!(p["algorithm"], "sliding_window");
    assert_eq!(p["limit"], 3);
    assert_eq!(p["window"], 300);
    assert_eq!(p["level"], "app_id");
    assert_eq!(p["retry_after"], retry);
    assert_eq!(p["rule"], "edge.app_id");
    assert!(
        !p.to_string().contains("a1"),
        "descriptor values are never echoed: {p}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sliding_window_answers_memory() {
    sliding_window_answers(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sliding_window_answers_redis() {
    sliding_window_answers(Backend::Redis).await;
}

async fn token_bucket_burst_and_wait(backend: Backend) {
    let run = start(backend, |b| b);
    let mut client = run.sluice.grpc().await;
    let burst = || vec![descriptor(&[("burst", "b1")])];
    assert_eq!(
        check(&mut client, burst()).await.statuses[0].limit_remaining,
        1
    );
    assert_eq!(
        check(&mut client, burst()).await.statuses[0].limit_remaining,
        0
    );
    let r = check(&mut client, burst()).await;
    assert_eq!(r.overall_code, OVER_LIMIT);
    // The next token comes a minute after the first was taken, to the microsecond; the header
    // rounds that up to whole seconds.
    let wait = wait_of(&r, 0);
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    assert_eq!(
        header(&r, "Retry-After"),
        Some(
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                .to_string()
                .as_str()
        )
    );
    let p = problem(&r);
    assert_eq!(p["algorithm"], "token_bucket");
    assert_eq!(p["remaining"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_bucket_burst_and_wait_memory() {
    token_bucket_burst_and_wait(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_bucket_burst_and_wait_redis() {
    token_bucket_burst_and_wait(Backend::Redis).await;
}

/// A monthly byte quota counted with `hits_addend`, answered with its own status over gRPC and
/// over `/json`.
async fn cost_based_calendar_quota(backend: Backend) {
    let run = start(backend, |b| b);
    let mut client = run.sluice.grpc().await;
    let upload = |bytes| vec![costing(&[("storage_bytes", "acme")], bytes)];
    let r = check(&mut client, upload(10_000_000_000)).await;
    assert_eq!(r.overall_code, OK);
    assert_eq!(r.statuses[0].limit_remaining, 737_418_240);
    // Until the first of next month, UTC.
    assert!(wait_of(&r, 0) <= Duration::from_secs(31 * 86_400));
    let r = check(&mut client, upload(1_000_000_000)).await;
    assert_eq!(r.overall_code, OVER_LIMIT);
    let p = problem(&r);
    assert_eq!(p["status"], 402);
    assert_eq!(p["title"], "Payment Required");
    assert_eq!(p["kind"], "quota");
    assert_eq!(p["limit"], 10_737_418_240u64);
    assert_eq!(p["remaining"], 0);

    let response = reqwest::Client::new()
        .post(run.sluice.url("/json"))
        .body(
            r#"{"domain":"edge","descriptors":[{"entries":[{"key":"storage_bytes","value":"acme"}],"hits_addend":"1000000000"}]}"#,
        )
        .send()
        .await
        .expect("POST /json");
    assert_eq!(response.status().as_u16(), 402);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["kind"], "quota");
    assert_eq!(
        body["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    // The reference's fields are there too, for clients that read those.
    assert_eq!(body["overallCode"], "OVER_LIMIT");
    assert_eq!(body["statuses"][0]["code"], "OVER_LIMIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_based_calendar_quota_memory() {
    cost_based_calendar_quota(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cost_based_calendar_quota_redis() {
    cost_based_calendar_quota(Backend::Redis).await;
}

/// `rate_limits`: a burst bucket and a daily limit on one key; the day rejects the fifth request
/// although the bucket has room, and a rejected request charges neither.
async fn several_limits_on_one_key(backend: Backend) {
    let run = start(backend, |b| b.arg("--response-headers=ietf"));
    let mut client = run.sluice.grpc().await;
    let team = || vec![descriptor(&[("team_id", "t1")])];
    for remaining in [3u32, 2, 1, 0] {
        let r = check(&mut client, team()).await;
        assert_eq!(r.overall_code, OK);
        assert_eq!(r.statuses[0].limit_remaining, remaining);
    }
    let r = check(&mut client, team()).await;
    assert_eq!(r.overall_code, OVER_LIMIT);
    let limit = r.statuses[0].current_limit.as_ref().expect("current_limit");
    assert_eq!((limit.requests_per_unit, limit.unit), (4, 4 /* DAY */));
    let p = problem(&r);
    assert_eq!(p["rule"], "edge.team_id/86400s");
    assert_eq!(p["kind"], "quota");
    assert_eq!(
        header(&r, "RateLimit-Policy"),
        Some(
            "\"edge.team_id/3600s-token_bucket\";q=10;w=3600;sluice-burst=20, \"edge.team_id/86400s\";q=4;w=86400"
        )
    );
    let current = header(&r, "RateLimit").expect("RateLimit");
    assert!(
        current.starts_with("\"edge.team_id/3600s-token_bucket\";r=16;t="),
        "the bucket still holds 16 tokens: the rejected request took none: {current}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn several_limits_on_one_key_memory() {
    several_limits_on_one_key(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn several_limits_on_one_key_redis() {
    several_limits_on_one_key(Backend::Redis).await;
}

/// The reference collects `replaces` from every matched rule, unlimited ones included.
#[tokio::test(flavor = "multi_thread")]
async fn an_unlimited_rule_replaces_a_named_limit() {
    let run = start(Backend::Memory, |b| b);
    let mut client = run.sluice.grpc().await;
    let r = check(
        &mut client,
        vec![descriptor(&[("lim_a", "x")]), descriptor(&[("free", "y")])],
    )
    .await;
    assert_eq!(r.overall_code, OK);
    assert!(
        r.statuses[0].current_limit.is_none(),
        "lim_a is not counted"
    );
    assert_eq!(r.statuses[1].limit_remaining, u32::MAX);
    let r = check(&mut client, vec![descriptor(&[("lim_a", "x")])]).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 4,
        "nothing was charged before"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn x_ratelimit_headers_name_every_quota_policy() {
    let run = start(Backend::Memory, |b| b.arg("--response-headers=x-ratelimit"));
    let mut client = run.sluice.grpc().await;
    let r = check(
        &mut client,
        vec![
            descriptor(&[("app_id", "h")]),
            descriptor(&[("lim_a", "h")]),
        ],
    )
    .await;
    assert_eq!(
        header(&r, "X-RateLimit-Limit"),
        Some("3, 3;w=300, 5;w=3600;name=\"lim_a\"")
    );
    assert_eq!(header(&r, "X-RateLimit-Remaining"), Some("2"));
    let reset: u64 = header(&r, "X-RateLimit-Reset")
        .expect("reset")
        .parse()
        .expect("secs");
    assert!((1..=315).contains(&reset), "{reset}");
}

/// With a value-hashing secret, descriptor values never reach Redis in clear.
#[tokio::test(flavor = "multi_thread")]
async fn hashed_values_never_reach_redis() {
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "a secret of more than sixteen bytes\n").expect("write");
    let secret_path = secret.path().to_str().expect("utf-8 path").to_owned();
    let run = start(Backend::Redis, |b| {
        b.arg("--hash-values-key-file").arg(&secret_path)
    });
    let mut client = run.sluice.grpc().await;
    let api_key = "sk-live-4f9a2c";
    for _ in 0..3 {
        check(&mut client, vec![descriptor(&[("lim_a", api_key)])]).await;
    }
    let r = check(&mut client, vec![descriptor(&[("lim_a", api_key)])]).await;
    assert_eq!(r.statuses[0].limit_remaining, 1, "hashed keys still count");
    let keys = run._redis.as_ref().expect("redis").keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(api_key), "{keys:?}");
    assert!(keys[0].contains("lim_a"), "keys stay readable: {keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_hashing_secret_stops_start_up() {
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), "short").expect("write");
    let rules = tempfile::NamedTempFile::new().expect("rules file");
    std::fs::write(rules.path(), RULES).expect("write");
    let (status, stderr) = sluice_tests::sluice::run_to_exit(
        &[
            "--config",
            rules.path().to_str().expect("utf-8"),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--hash-values-key-file",
            secret.path().to_str().expect("utf-8"),
        ],
        Duration::from_secs(20),
    );
    assert!(!status.expect("exits").success());
    assert!(
        stderr.contains("value-hashing secret: the value-hashing secret has 5 bytes; at least 16"),
        "{stderr}"
    );
}

/// Three processes on one Redis, many concurrent clients on one key per algorithm: the admitted
/// total is exactly the limit (nothing refills or slides out during the test).
#[tokio::test(flavor = "multi_thread")]
async fn three_processes_share_every_algorithm_exactly() {
    let redis = RedisServer::start();
    let fleet: Vec<Sluice> = (0..3)
        .map(|_| Sluice::builder(RULES).redis(&redis.url()).start())
        .collect();
    for key in ["hot_fixed", "hot_sliding", "hot_bucket"] {
        let mut tasks = Vec::new();
        for i in 0..12 {
            let mut client = fleet[i % fleet.len()].grpc().await;
            tasks.push(tokio::spawn(async move {
                let mut ok = 0usize;
                for _ in 0..10 {
                    let r = check(&mut client, vec![descriptor(&[(key, "k")])]).await;
                    ok += usize::from(r.overall_code == OK);
                }
                ok
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.expect("task");
        }
        assert_eq!(admitted, 50, "{key}: 120 requests over three processes");
    }
}
