//! End-to-end: the real `sluice` binary over gRPC, on the memory store and on a real redis-server.

use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::google::protobuf::UInt64Value;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;
use tonic::Code;

const RULES: &str = r#"
domain: edge
descriptors:
  - key: app_id
    rate_limit:
      unit: hour
      requests_per_unit: 3
  - key: team
    rate_limit:
      unit: hour
      requests_per_unit: 5
    descriptors:
      - key: app_id
        rate_limit:
          name: team-app
          unit: hour
          requests_per_unit: 2
  - key: internal
    rate_limit:
      unlimited: true
  - key: open
"#;

fn statuses(r: &RateLimitResponse) -> Vec<(i32, u32)> {
    r.statuses
        .iter()
        .map(|s| (s.code, s.limit_remaining))
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// Start a server on `backend`, keeping the Redis process alive alongside it.
fn start(backend: Backend, extra: &[&str]) -> (Sluice, Option<RedisServer>) {
    let mut b = Sluice::builder(RULES);
    for a in extra {
        b = b.arg(a);
    }
    match backend {
        Backend::Memory => (b.start(), None),
        Backend::Redis => {
            let redis = RedisServer::start();
            (b.redis(&redis.url()).start(), Some(redis))
        }
    }
}

async fn limit_then_reject(backend: Backend) {
    let (sluice, _redis) = start(backend, &[]);
    let mut client = sluice.grpc().await;
    for remaining in [2u32, 1, 0] {
        let r = client
            .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a1")])]))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.overall_code, OK);
        assert_eq!(statuses(&r), vec![(OK, remaining)]);
        let s = &r.statuses[0];
        let limit = s.current_limit.as_ref().expect("current_limit filled");
        assert_eq!((limit.requests_per_unit, limit.unit), (3, 3 /* HOUR */));
        let reset = s.duration_until_reset.as_ref().expect("reset filled");
        assert!((1..=3600).contains(&reset.seconds), "{reset:?}");
    }
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a1")])]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.overall_code, OVER_LIMIT);
    assert_eq!(statuses(&r), vec![(OVER_LIMIT, 0)]);
    // Another app has its own counter.
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a2")])]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(statuses(&r), vec![(OK, 2)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_then_reject_memory() {
    limit_then_reject(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_then_reject_redis() {
    limit_then_reject(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_follow_request_order_and_kinds() {
    let (sluice, _r) = start(Backend::Memory, &[]);
    let mut client = sluice.grpc().await;
    let r = client
        .should_rate_limit(request(
            "edge",
            vec![
                descriptor(&[("internal", "x")]),
                descriptor(&[("open", "x")]),
                descriptor(&[("nomatch", "x")]),
                descriptor(&[("team", "t1"), ("app_id", "a1")]),
            ],
        ))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.overall_code, OK);
    assert_eq!(r.statuses.len(), 4);
    // Unlimited: OK, remaining u32::MAX, no current_limit.
    assert_eq!(statuses(&r)[0], (OK, u32::MAX));
    assert!(r.statuses[0].current_limit.is_none());
    // A node without rate_limit, and no match at all: OK with no limit.
    assert_eq!(statuses(&r)[1], (OK, 0));
    assert!(r.statuses[1].current_limit.is_none());
    assert_eq!(statuses(&r)[2], (OK, 0));
    // The nested rule, with its name.
    assert_eq!(statuses(&r)[3], (OK, 1));
    assert_eq!(
        r.statuses[3]
            .current_limit
            .as_ref()
            .map(|l| l.name.as_str()),
        Some("team-app")
    );
    // An unknown domain is not an error.
    let r = client
        .should_rate_limit(request("nope", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(statuses(&r), vec![(OK, 0)]);
}

/// Default all-or-nothing: the request that is rejected by the team-app rule charges nothing, so
/// the per-app counter keeps its quota. With --charge-rejected, the reference's behaviour, it
/// does not.
async fn rejected_request_charges(backend: Backend, charge_rejected: bool) -> u32 {
    let extra: &[&str] = if charge_rejected {
        &["--charge-rejected"]
    } else {
        &[]
    };
    let (sluice, _redis) = start(backend, extra);
    let mut client = sluice.grpc().await;
    let both = || {
        request(
            "edge",
            vec![
                descriptor(&[("app_id", "shared")]),
                descriptor(&[("team", "t9"), ("app_id", "shared")]),
            ],
        )
    };
    for _ in 0..2 {
        let r = client
            .should_rate_limit(both())
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.overall_code, OK);
    }
    let r = client
        .should_rate_limit(both())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.overall_code, OVER_LIMIT);
    assert_eq!(r.statuses[1].code, OVER_LIMIT);
    // Look at the per-app counter without consuming.
    let mut look = descriptor(&[("app_id", "shared")]);
    look.hits_addend = Some(UInt64Value { value: 0 });
    let r = client
        .should_rate_limit(request("edge", vec![look]))
        .await
        .expect("check")
        .into_inner();
    r.statuses[0].limit_remaining
}

#[tokio::test(flavor = "multi_thread")]
async fn all_or_nothing_and_charge_rejected_memory() {
    assert_eq!(rejected_request_charges(Backend::Memory, false).await, 1);
    assert_eq!(rejected_request_charges(Backend::Memory, true).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_or_nothing_and_charge_rejected_redis() {
    assert_eq!(rejected_request_charges(Backend::Redis, false).await, 1);
    assert_eq!(rejected_request_charges(Backend::Redis, true).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn hits_addend_override_and_refund() {
    let (sluice, _r) = start(Backend::Memory, &[]);
    let mut client = sluice.grpc().await;
    // Request-level hits_addend.
    let mut req = request("edge", vec![descriptor(&[("app_id", "h")])]);
    req.hits_addend = 2;
    let r = client
        .should_rate_limit(req)
        .await
        .expect("check")
        .into_inner();
    assert_eq!(statuses(&r), vec![(OK, 1)]);
    // A refund gives one back.
    let mut refund = descriptor(&[("app_id", "h")]);
    refund.hits_addend = Some(UInt64Value { value: 1 });
    refund.is_negative_hits = true;
    let r = client
        .should_rate_limit(request("edge", vec![refund]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(statuses(&r), vec![(OK, 2)]);
    // A limit override from Envoy's route config wins over the rule.
    let mut overridden = descriptor(&[("app_id", "o")]);
    overridden.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 1, // SECOND
    });
    let r = client
        .should_rate_limit(request("edge", vec![overridden.clone()]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(statuses(&r), vec![(OK, 0)]);
    let limit = r.statuses[0].current_limit.as_ref().expect("limit");
    assert_eq!((limit.requests_per_unit, limit.unit), (1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_invalid_argument() {
    let (sluice, _r) = start(
        Backend::Memory,
        &["--max-descriptors", "2", "--max-request-bytes", "256"],
    );
    let mut client = sluice.grpc().await;
    let cases = vec![
        (
            "empty domain",
            request("", vec![descriptor(&[("app_id", "a")])]),
        ),
        ("no descriptors", request("edge", vec![])),
        ("empty key", request("edge", vec![descriptor(&[("", "a")])])),
        (
            "too many descriptors",
            request("edge", vec![descriptor(&[("a", "1")]); 3]),
        ),
    ];
    for (name, req) in cases {
        let err = client.should_rate_limit(req).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(!err.message().is_empty(), "{name}");
    }
    // Values past the bounds come from the proxy's client: refused, never an error a proxy would
    // fail open on; a message far past what is read is refused unread.
    let too_large = [
        ("too many bytes", "x".repeat(300)),
        ("huge message", "x".repeat(2 << 20)),
    ];
    for (name, value) in too_large {
        let r = client
            .should_rate_limit(request("edge", vec![descriptor(&[("app_id", &value)])]))
            .await
            .unwrap_or_else(|e| panic!("{name}: an answer, not {e:?}"))
            .into_inner();
        assert_eq!(r.overall_code, OVER_LIMIT, "{name}");
        let problem: serde_json::Value = serde_json::from_slice(&r.raw_body).expect("problem");
        assert_eq!(problem["kind"], "invalid", "{name}: {problem}");
    }
    let mut bad_unit = descriptor(&[("app_id", "a")]);
    bad_unit.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 99,
    });
    let err = client
        .should_rate_limit(request("edge", vec![bad_unit]))
        .await
        .expect_err("bad unit");
    assert_eq!(err.code(), Code::InvalidArgument);
    // The server is still fine.
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.overall_code, OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_outage_is_unavailable() {
    let redis = RedisServer::start();
    let sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--redis-timeout-ms")
        .arg("500")
        .start();
    let mut client = sluice.grpc().await;
    let ok = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect("check");
    assert_eq!(ok.into_inner().overall_code, OK);
    drop(redis);
    let err = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect_err("redis is gone");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let health = reqwest::get(sluice.url("/healthcheck")).await.expect("GET");
    assert_eq!(health.status(), 500);
    // A descriptor without a limit needs no store: still answered.
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("open", "x")])]))
        .await
        .expect("no store needed")
        .into_inner();
    assert_eq!(r.overall_code, OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let (sluice, _r) = start(Backend::Memory, &[]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sluice.grpc_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    for service in ["ratelimit", ""] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }
    // The streaming `Watch` answers with the current status first.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "ratelimit".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("a first status within 5 s")
        .expect("a status")
        .expect("not the end of the stream");
    assert_eq!(first.status, 1);
}

/// Sends `body` as the whole request of a call to `path` on a fresh HTTP/2 connection, and
/// returns the answer's `grpc-status` and `grpc-message` (from a trailers-only answer or the
/// trailers).
async fn raw_call(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut client, connection) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (answer, mut send) = client.send_request(request, false).expect("send");
    send.send_data(bytes::Bytes::copy_from_slice(body), true)
        .expect("body");
    let answer = answer.await.expect("answer");
    assert_eq!(answer.status(), 200);
    let text = |map: &http::HeaderMap, name: &str| {
        map.get(name).map(|v| v.to_str().expect("ascii").to_owned())
    };
    let headers = answer.headers().clone();
    let (status, message) = match text(&headers, "grpc-status") {
        Some(status) => (status, text(&headers, "grpc-message")),
        None => {
            let mut body = answer.into_body();
            while let Some(chunk) = body.data().await {
                chunk.expect("data");
            }
            let trailers = body.trailers().await.expect("trailers").expect("some");
            (
                text(&trailers, "grpc-status").expect("grpc-status"),
                text(&trailers, "grpc-message"),
            )
        }
    };
    (status, message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_grpc_framing_is_refused_and_the_server_stays_up() {
    const CHECK: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
    let (sluice, _r) = start(Backend::Memory, &[]);
    let addr = sluice.grpc_addr;
    let cases: [(&str, &str, Vec<u8>, &str); 7] = [
        ("no message", CHECK, vec![], "3"),
        ("a partial prefix", CHECK, vec![0, 0], "3"),
        ("a truncated message", CHECK, vec![0, 0, 0, 0, 9, 1, 2], "3"),
        (
            "two messages",
            CHECK,
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "3",
        ),
        ("not protobuf", CHECK, vec![0, 0, 0, 0, 2, 0xff, 0xff], "3"),
        // Nothing was negotiated, so a compressed message cannot be read.
        ("a compressed message", CHECK, vec![1, 0, 0, 0, 1, 0], "12"),
        (
            "an unknown method",
            "/envoy.service.ratelimit.v3.RateLimitService/Other",
            vec![0, 0, 0, 0, 0],
            "12",
        ),
    ];
    for (name, path, body, expected) in cases {
        let (status, message) = raw_call(addr, path, &body).await;
        assert_eq!(status, expected, "{name}: {message}");
        assert!(!message.is_empty(), "{name}: a reason is given");
    }
    // A well-formed call on the same server still decides; an empty request is a valid message
    // whose content is refused by the limiter, not by the framing.
    let (status, message) = raw_call(addr, CHECK, &[0, 0, 0, 0, 0]).await;
    assert_eq!(status, "3", "{message}");
    assert!(message.contains("domain"), "{message}");
    let mut client = sluice.grpc().await;
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(r.overall_code, OK);
}

/// Send `per_client` checks of `(key, "k")` from each of `clients` connections at once, spread
/// over `servers` in turn, and count the admitted ones.
async fn admitted_in_parallel(
    servers: &[&Sluice],
    key: &'static str,
    clients: usize,
    per_client: usize,
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut client = servers[i % servers.len()].grpc().await;
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for _ in 0..per_client {
                let r = client
                    .should_rate_limit(request("edge", vec![descriptor(&[(key, "k")])]))
                    .await
                    .expect("check")
                    .into_inner();
                ok += usize::from(r.overall_code == OK);
            }
            ok
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("task");
    }
    admitted
}

/// Many clients on one key: exactly the limit is admitted, on both stores.
async fn exact_under_concurrency(backend: Backend) {
    const LIMIT: usize = 50;
    let yaml = format!(
        "domain: edge\ndescriptors:\n  - key: hot\n    rate_limit:\n      unit: hour\n      requests_per_unit: {LIMIT}\n"
    );
    let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
    let mut b = Sluice::builder(&yaml);
    if let Some(r) = &redis {
        b = b.redis(&r.url());
    }
    let sluice = b.start();
    let admitted = admitted_in_parallel(&[&sluice], "hot", 16, 10).await;
    assert_eq!(admitted, LIMIT, "160 requests against a limit of {LIMIT}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_under_concurrency_memory() {
    exact_under_concurrency(Backend::Memory).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_under_concurrency_redis() {
    exact_under_concurrency(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn response_headers_when_enabled() {
    let (sluice, _r) = start(Backend::Memory, &["--response-headers"]);
    let mut client = sluice.grpc().await;
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            client
                .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "hdr")])]))
                .await
                .expect("check")
                .into_inner(),
        );
    }
    let r = last.expect("responses");
    assert_eq!(r.overall_code, OVER_LIMIT);
    let header = |name: &str| {
        r.response_headers_to_add
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.clone())
    };
    assert_eq!(header("RateLimit-Limit").as_deref(), Some("3"));
    assert_eq!(header("RateLimit-Remaining").as_deref(), Some("0"));
    let reset: u64 = header("RateLimit-Reset")
        .expect("reset")
        .parse()
        .expect("int");
    assert!((1..=3600).contains(&reset));
    let retry: u64 = header("Retry-After").expect("retry").parse().expect("int");
    assert_eq!(retry, reset);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly() {
    let (mut sluice, _r) = start(Backend::Memory, &[]);
    let mut client = sluice.grpc().await;
    client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "a")])]))
        .await
        .expect("check");
    let status = sluice
        .terminate(Duration::from_secs(20))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(
        sluice
            .logs()
            .iter()
            .any(|l| l.contains("shut down gracefully"))
    );
}

/// A fleet: two instances on one Redis enforce one limit between them.
#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_one_limit_through_redis() {
    const LIMIT: usize = 40;
    let yaml = format!(
        "domain: edge\ndescriptors:\n  - key: fleet\n    rate_limit:\n      unit: hour\n      requests_per_unit: {LIMIT}\n"
    );
    let redis = RedisServer::start();
    let a = Sluice::builder(&yaml).redis(&redis.url()).start();
    let b = Sluice::builder(&yaml).redis(&redis.url()).start();
    let admitted = admitted_in_parallel(&[&a, &b], "fleet", 16, 10).await;
    assert_eq!(admitted, LIMIT, "160 requests over two instances");
}

/// Counter keys carry the configured prefix and encode every part with its length, so values with
/// the reference's `_` separator in them cannot collide.
#[tokio::test(flavor = "multi_thread")]
async fn redis_keys_are_prefixed_and_collision_free() {
    let yaml = "domain: edge\ndescriptors:\n  - key: a\n    rate_limit: {unit: hour, requests_per_unit: 1}\n  - key: a_b\n    rate_limit: {unit: hour, requests_per_unit: 1}\n";
    let redis = RedisServer::start();
    let sluice = Sluice::builder(yaml)
        .redis(&redis.url())
        .arg("--key-prefix")
        .arg("tenant-a:")
        .start();
    let mut client = sluice.grpc().await;
    // The reference keys both as `edge_a_b_c_<window>`: one counter for two clients.
    for entries in [[("a", "b_c")], [("a_b", "c")]] {
        let r = client
            .should_rate_limit(request("edge", vec![descriptor(&entries)]))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(statuses(&r), vec![(OK, 0)], "{entries:?}");
    }
    let keys = redis.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("tenant-a:")), "{keys:?}");
}

/// A check in flight when SIGTERM arrives is answered before the process exits. Redis holds the
/// check (CLIENT PAUSE) until the signal has been sent, so "in flight" is observed, not hoped for.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_checks_finish() {
    let redis = RedisServer::start();
    let mut sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--redis-timeout-ms")
        .arg("10000")
        .arg("--store-budget-ms")
        .arg("10000")
        .start();
    let mut client = sluice.grpc().await;
    let warm = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "drain")])]))
        .await
        .expect("check");
    assert_eq!(warm.into_inner().overall_code, OK);

    redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]);
    let in_flight = tokio::spawn(async move {
        client
            .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "drain")])]))
            .await
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !redis
        .cli(&["INFO", "clients"])
        .contains("blocked_clients:1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the check never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let status = tokio::task::block_in_place(|| sluice.terminate(Duration::from_secs(20)))
        .expect("exits after SIGTERM");
    let answer = in_flight
        .await
        .expect("task")
        .expect("answered, not cut off");
    assert_eq!(answer.into_inner().statuses[0].limit_remaining, 1);
    assert!(status.success(), "{status:?}");
    assert!(
        sluice
            .logs()
            .iter()
            .any(|l| l.contains("shut down gracefully"))
    );
}
