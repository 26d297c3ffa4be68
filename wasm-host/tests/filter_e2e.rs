//! End to end: the compiled `sluice_filter.wasm` in the wasmtime proxy-wasm host
//! (`sluice_wasm_host`), calling the real `sluice` binary on a real `redis-server`, over
//! gRPC and over HTTP `/json`.

use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use serde_json::{Value, json};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::descriptor;
use sluice_tests::sluice::Sluice;
use sluice_tests::tcp_proxy::TcpProxy;
use sluice_wasm_host::{Cluster, Host, HostOptions, Request, Upstream, Worker};

const RULES: &str = "domain: edge
descriptors:
  - key: app_id
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 1000}
  - key: egress
    rate_limit: {unit: day, requests_per_unit: 100000}
  - key: llm
    rate_limit: {unit: day, requests_per_unit: 1000}
  - key: generic_key
    value: checkout
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: plan
    value: gold plus
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: method
    value: POST
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: header_match
    value: api
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: remote_address
    value: 198.51.100.23
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: masked_remote_address
    value: 198.51.100.0/24
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: masked_remote_address
    value: '2001:db8:1::/48'
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: user
    value: alice
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: org
    value: acme
    rate_limit: {unit: hour, requests_per_unit: 100}
  - key: upload
    rate_limit: {concurrency: 1, lease_ttl: 60}
";

struct Env {
    _redis: RedisServer,
    sluice: Sluice,
    host: Host,
}

fn env_with(options: HostOptions) -> Env {
    let redis = RedisServer::start();
    let sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--response-headers")
        .start();
    let host = Host::new(options);
    host.cluster("ratelimit", Cluster::Addr(sluice.grpc_addr));
    host.cluster("ratelimit-http", Cluster::Addr(sluice.http_addr));
    Env {
        _redis: redis,
        sluice,
        host,
    }
}

fn env() -> Env {
    env_with(HostOptions::default())
}

/// A plugin configuration: `descriptors` and top-level `extra` over gRPC defaults.
fn config(descriptors: Value, extra: Value) -> String {
    let mut c = json!({
        "domain": "edge",
        "service": {"cluster": "ratelimit", "timeout_ms": 2000},
        "descriptors": descriptors,
    });
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c.to_string()
}

/// The `service` block reaching Sluice over `transport` ("grpc" or "http").
fn service(transport: &str) -> Value {
    if transport == "grpc" {
        json!({"cluster": "ratelimit", "timeout_ms": 2000})
    } else {
        json!({"cluster": "ratelimit-http", "timeout_ms": 2000, "transport": "http"})
    }
}

fn app_descriptor() -> Value {
    json!([{"actions": [{"request_header": {"header": "x-app-id", "key": "app_id"}}]}])
}

fn worker(host: &Host, config: &str) -> Worker {
    host.worker(config)
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"))
}

/// Sluice's count of checks over `transport`, from its own metrics.
fn sluice_checks(env: &Env, transport: &str) -> u64 {
    let text = env.host.block_on(async {
        reqwest::get(env.sluice.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text")
    });
    text.lines()
        .filter(|l| {
            l.starts_with("sluice_requests_total{")
                && l.contains(&format!("transport=\"{transport}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn sluice_metric(env: &Env, line_start: &str) -> Option<u64> {
    let text = env.host.block_on(async {
        reqwest::get(env.sluice.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("text")
    });
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// What Sluice has left for a descriptor, asked directly without consuming.
fn remaining(env: &Env, key: &str, value: &str) -> u32 {
    env.host.block_on(async {
        let mut d = descriptor(&[(key, value)]);
        d.hits_addend = Some(envoy_types::pb::google::protobuf::UInt64Value { value: 0 });
        let request = RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![d],
            hits_addend: 0,
        };
        let answer = env
            .sluice
            .grpc()
            .await
            .should_rate_limit(request)
            .await
            .expect("check")
            .into_inner();
        answer.statuses[0].limit_remaining
    })
}

#[test]
fn allowed_requests_carry_rate_limit_and_upstream_headers() {
    let env = env();
    let config = config(
        app_descriptor(),
        json!({"request_headers": {"request_id": "x-request-id", "remaining": "x-quota-remaining",
                                   "tenant": {"header": "x-tenant", "key": "app_id"}}}),
    );
    let mut w = worker(&env.host, &config);
    let ex = w.exchange(
        Request::get("/orders")
            .header("x-app-id", "web")
            .header("x-tenant", "spoofed"),
    );
    assert_eq!(ex.status(), 200, "{ex:?}");
    assert_eq!(ex.header("ratelimit-limit").as_deref(), Some("2"));
    assert_eq!(ex.header("ratelimit-remaining").as_deref(), Some("1"));
    assert!(
        ex.header("ratelimit-reset")
            .is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s <= 3600))
    );
    let id = ex
        .upstream_header("x-request-id")
        .expect("x-request-id generated");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(&id[14..15], "4", "version 4 UUID: {id}");
    assert_eq!(
        ex.upstream_header("x-quota-remaining").as_deref(),
        Some("1")
    );
    assert_eq!(
        ex.upstream_header("x-tenant").as_deref(),
        Some("web"),
        "client value replaced"
    );
    // A request id the client sent is kept.
    let ex = w.exchange(
        Request::get("/")
            .header("x-app-id", "other")
            .header("x-request-id", "abc"),
    );
    assert_eq!(ex.upstream_header("x-request-id").as_deref(), Some("abc"));
    assert_eq!(env.host.metric("sluice_filter.remote_checks"), Some(2));
    assert_eq!(sluice_checks(&env, "grpc"), 2);
}

#[test]
fn over_the_limit_gets_429_retry_after_and_a_problem_body_then_the_negative_cache() {
    let env = env();
    let mut w = worker(&env.host, &config(app_descriptor(), json!({})));
    for _ in 0..2 {
        assert_eq!(
            w.exchange(Request::get("/").header("x-app-id", "web"))
                .status(),
            200
        );
    }
    let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
    let reply = ex.reply();
    assert_eq!(reply.status, 429);
    let retry: u64 = reply
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(reply.header("ratelimit-remaining"), Some("0"));
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/problem+json")),
        "{reply:?}"
    );
    let doc = reply.json();
    assert_eq!(doc["status"], 429);
    assert_eq!(sluice_checks(&env, "grpc"), 3);
    assert_eq!(env.host.metric("sluice_filter.remote_over_limit"), Some(1));

    // The next requests are answered from the negative cache: Sluice sees nothing. Another
    // worker of the same proxy shares it.
    let mut other = worker(&env.host, &config(app_descriptor(), json!({})));
    for w in [&mut w, &mut other] {
        let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
        assert_eq!(ex.status(), 429);
        assert!(ex.header("retry-after").is_some());
    }
    assert_eq!(
        sluice_checks(&env, "grpc"),
        3,
        "answered without a remote call"
    );
    assert_eq!(
        env.host.metric("sluice_filter.negative_cache_hits"),
        Some(2)
    );
    // Another app is not affected.
    assert_eq!(
        w.exchange(Request::get("/").header("x-app-id", "mobile"))
            .status(),
        200
    );
    // Past the cache's cap (60 s by default) the filter asks Sluice again.
    env.host.advance_clock(Duration::from_secs(61));
    assert_eq!(
        w.exchange(Request::get("/").header("x-app-id", "web"))
            .status(),
        429
    );
    assert_eq!(sluice_checks(&env, "grpc"), 5);
}

#[test]
fn the_local_bucket_answers_without_a_remote_call_for_every_worker() {
    let env = env();
    let config = config(
        json!([{"actions": [{"request_header": {"header": "x-tenant", "key": "tenant"}}],
                "local": {"max_tokens": 2, "fill_interval_ms": 60000}}]),
        json!({}),
    );
    let mut a = worker(&env.host, &config);
    let mut b = worker(&env.host, &config);
    assert_eq!(
        a.exchange(Request::get("/").header("x-tenant", "t1"))
            .status(),
        200
    );
    assert_eq!(
        b.exchange(Request::get("/").header("x-tenant", "t1"))
            .status(),
        200
    );
    for w in [&mut a, &mut b] {
        let ex = w.exchange(Request::get("/").header("x-tenant", "t1"));
        assert_eq!(ex.status(), 429);
        let retry: u64 = ex
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("seconds");
        assert!((1..=60).contains(&retry), "{retry}");
        assert_eq!(ex.reply().json()["status"], 429);
    }
    assert_eq!(
        sluice_checks(&env, "grpc"),
        2,
        "the rejections never reached Sluice"
    );
    assert_eq!(env.host.metric("sluice_filter.local_rejects"), Some(2));
    // The bucket refills with time.
    env.host.advance_clock(Duration::from_secs(30));
    assert_eq!(
        a.exchange(Request::get("/").header("x-tenant", "t1"))
            .status(),
        200
    );
}

#[test]
fn workers_on_threads_share_one_bucket() {
    let env = env();
    let config = config(
        json!([{"actions": [{"request_header": {"header": "x-tenant", "key": "tenant"}}],
                "local": {"max_tokens": 10, "fill_interval_ms": 86400000}}]),
        json!({}),
    );
    // The slot's first write cannot be a compare-and-swap (the ABI has no create-if-absent, see
    // the filter's `bucket` module): one request creates it before the workers race.
    let mut first = worker(&env.host, &config);
    let created = first.exchange(Request::get("/").header("x-tenant", "shared"));
    assert_eq!(created.status(), 200);
    let admitted: u32 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let host = env.host.clone();
                let config = config.clone();
                s.spawn(move || {
                    let mut w = worker(&host, &config);
                    (0..25)
                        .filter(|_| {
                            w.exchange(Request::get("/").header("x-tenant", "shared"))
                                .status()
                                == 200
                        })
                        .count() as u32
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .sum()
    });
    assert_eq!(
        admitted, 9,
        "compare-and-swap keeps the bucket exact across workers"
    );
    assert_eq!(env.host.metric("sluice_filter.local_rejects"), Some(41));
}

#[test]
fn every_action_builds_the_descriptor_sluice_matches() {
    let env = env();
    let token = |payload: &str| {
        format!(
            "{}.{}.sig",
            base64_url(br#"{"alg":"none"}"#),
            base64_url(payload.as_bytes())
        )
    };
    let descriptors = json!([
        {"actions": [{"generic_key": {"descriptor_value": "checkout"}}]},
        {"actions": [{"request_header": {"header": "x-app-id", "key": "app_id"}}]},
        {"actions": [{"query_parameter": {"name": "plan", "key": "plan"}}]},
        {"actions": [{"method": {}}]},
        {"actions": [{"path": {"prefix": "/api/", "descriptor_value": "api"}}]},
        {"actions": [{"remote_address": {}}]},
        {"actions": [{"remote_address": {"v4_prefix_len": 24}}]},
        {"actions": [{"metadata": {"property": ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload", "sub"], "key": "user"}}]},
        {"actions": [{"jwt_claim": {"claim": "org.id", "key": "org"}}]},
        {"actions": [{"request_header": {"header": "x-missing", "key": "app_id"}}]}
    ]);
    let mut w = worker(&env.host, &config(descriptors, json!({})));
    let ex = w.exchange(
        Request::new("POST", "/api/v1/orders?plan=gold%20plus&x=1")
            .header("x-app-id", "web")
            .header(
                "authorization",
                format!(
                    "Bearer {}",
                    token(r#"{"org":{"id":"acme"},"sub":"ignored"}"#)
                ),
            )
            .remote("198.51.100.23:51000")
            .property(
                &[
                    "metadata",
                    "filter_metadata",
                    "envoy.filters.http.jwt_authn",
                    "payload",
                    "sub",
                ],
                "alice",
            ),
    );
    assert_eq!(ex.status(), 200, "{ex:?}");
    for rule in [
        "edge.generic_key_checkout",
        "edge.app_id",
        "edge.plan_gold plus",
        "edge.method_POST",
        "edge.header_match_api",
        "edge.remote_address_198.51.100.23",
        "edge.masked_remote_address_198.51.100.0/24",
        "edge.user_alice",
        "edge.org_acme",
    ] {
        let line = format!("sluice_rule_total_hits_total{{rule=\"{rule}\"}}");
        assert_eq!(
            sluice_metric(&env, &line),
            Some(1),
            "{rule}: the filter sent its exact entry"
        );
    }
    // The descriptor whose header is missing was dropped, not sent with an empty value:
    // app_id was hit once (by descriptor 1) only.

    // IPv6 clients, masked to /48.
    let mut v6 = worker(
        &env.host,
        &config(
            json!([{"actions": [{"remote_address": {"v6_prefix_len": 48}}]}]),
            json!({}),
        ),
    );
    assert_eq!(
        v6.exchange(Request::get("/").remote("[2001:db8:1:2::9]:443"))
            .status(),
        200
    );
    let line = "sluice_rule_total_hits_total{rule=\"edge.masked_remote_address_2001:db8:1::/48\"}";
    assert_eq!(sluice_metric(&env, line), Some(1));
}

/// base64url without padding, for test tokens.
fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn the_post_response_charge_lands_in_sluices_counters() {
    for transport in ["grpc", "http"] {
        let env = env();
        let service = service(transport);
        let config = config(
            json!([
                {"actions": [{"generic_key": {"descriptor_value": "app1", "key": "egress"}}], "charge": {"from": "response_bytes"}},
                {"actions": [{"generic_key": {"descriptor_value": "app1", "key": "llm"}}], "charge": {"from": "response_header", "header": "x-llm-tokens"}}
            ]),
            json!({"service": service}),
        );
        let mut w = worker(&env.host, &config);
        let upstream = Upstream::ok()
            .header("x-llm-tokens", "42")
            .chunk(&[b'a'; 1000])
            .chunk(&[b'b'; 500]);
        let ex = w.exchange(Request::get("/v1/chat").upstream(upstream));
        assert_eq!(ex.status(), 200, "{transport}: {ex:?}");
        assert_eq!(
            remaining(&env, "egress", "app1"),
            100_000 - 1500,
            "{transport}: 1 at the check + 1499 after"
        );
        assert_eq!(remaining(&env, "llm", "app1"), 1000 - 42, "{transport}");
        assert_eq!(
            env.host.metric("sluice_filter.charges"),
            Some(1),
            "{transport}"
        );
        // Tokens in a trailer count too.
        let upstream = Upstream::ok().chunk(b"x").trailer("x-llm-tokens", "8");
        w.exchange(Request::get("/v1/chat").upstream(upstream));
        assert_eq!(remaining(&env, "llm", "app1"), 1000 - 42 - 8, "{transport}");
    }
}

#[test]
fn a_streams_lease_is_renewed_while_open_and_released_at_its_end() {
    for transport in ["grpc", "http"] {
        let env = env();
        let service = service(transport);
        let config = config(
            json!([{"actions": [{"generic_key": {"descriptor_value": "app1", "key": "upload"}}]}]),
            json!({"service": service}),
        );
        let mut w = worker(&env.host, &config);
        let upload = || Request::new("POST", "/upload");
        let first = w.open(upload());
        assert_eq!(first.exchange().status(), 200, "{transport}");
        assert!(
            first.exchange().header("x-sluice-lease-id").is_some(),
            "{transport}: {first:?}"
        );
        // A pool of one is full while the first upload streams, and a full pool is not put in
        // the negative cache: a release frees it before any wait Sluice could name.
        let second = w.exchange(upload());
        assert_eq!(second.status(), 429, "{transport}");
        assert_eq!(
            second.header("retry-after").as_deref(),
            Some("60"),
            "{transport}"
        );
        assert_eq!(
            env.host.metric("sluice_filter.negative_cache_hits"),
            Some(0)
        );

        // Halfway through its TTL, the root's tick renews the open stream's lease.
        assert!(w.tick(), "{transport}: a held lease starts the ticks");
        assert_eq!(env.host.metric("sluice_filter.lease_renewals"), Some(0));
        env.host.advance_clock(Duration::from_secs(31));
        assert!(w.tick());
        assert_eq!(
            env.host.metric("sluice_filter.lease_renewals"),
            Some(1),
            "{transport}"
        );
        assert_eq!(
            sluice_metric(&env, "sluice_lease_renewals_total{"),
            Some(1),
            "{transport}: Sluice renewed it"
        );

        // The stream ends: its lease goes back at once, and the next upload gets the slot.
        w.close(first);
        assert_eq!(env.host.metric("sluice_filter.lease_releases"), Some(1));
        assert_eq!(
            sluice_metric(&env, "sluice_lease_releases_total{"),
            Some(1),
            "{transport}"
        );
        let third = w.exchange(upload());
        assert_eq!(third.status(), 200, "{transport}: the slot is free again");
        assert_eq!(env.host.metric("sluice_filter.lease_releases"), Some(2));
        assert_eq!(w.exchange(upload()).status(), 200, "{transport}");
    }
}

#[test]
fn the_http_transport_allows_and_rejects_like_grpc() {
    let env = env();
    let config = config(
        app_descriptor(),
        json!({"service": {"cluster": "ratelimit-http", "transport": "http", "timeout_ms": 2000}}),
    );
    let mut w = worker(&env.host, &config);
    let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
    assert_eq!(ex.status(), 200);
    assert_eq!(ex.header("ratelimit-remaining").as_deref(), Some("1"));
    assert_eq!(
        w.exchange(Request::get("/").header("x-app-id", "web"))
            .status(),
        200
    );
    let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
    assert_eq!(ex.status(), 429);
    assert!(ex.header("retry-after").is_some());
    assert_eq!(ex.reply().json()["status"], 429);
    assert_eq!(sluice_checks(&env, "http"), 3);
    assert_eq!(sluice_checks(&env, "grpc"), 0);
}

#[test]
fn with_sluice_stopped_the_failure_mode_decides() {
    let mut env = env();
    let allow = config(app_descriptor(), json!({}));
    let deny = config(
        app_descriptor(),
        json!({"failure_mode": "deny", "failure_status": 503}),
    );
    let http_allow = config(
        app_descriptor(),
        json!({"service": {"cluster": "ratelimit-http", "transport": "http"}}),
    );
    let (mut a, mut d, mut h) = (
        worker(&env.host, &allow),
        worker(&env.host, &deny),
        worker(&env.host, &http_allow),
    );
    assert_eq!(
        a.exchange(Request::get("/").header("x-app-id", "web"))
            .status(),
        200
    );
    env.sluice
        .terminate(Duration::from_secs(10))
        .expect("sluice exits");

    let ex = a.exchange(Request::get("/").header("x-app-id", "web"));
    assert_eq!(ex.status(), 200, "fail open: {ex:?}");
    assert!(ex.forwarded.is_some());
    let ex = d.exchange(Request::get("/").header("x-app-id", "web"));
    assert_eq!(ex.status(), 503, "fail closed");
    assert_eq!(ex.reply().json()["status"], 503);
    assert!(ex.forwarded.is_none());
    assert_eq!(
        h.exchange(Request::get("/").header("x-app-id", "web"))
            .status(),
        200
    );

    assert_eq!(env.host.metric("sluice_filter.fail_open"), Some(2));
    assert_eq!(env.host.metric("sluice_filter.fail_closed"), Some(1));
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.unavailable"),
        Some(2)
    );
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.no_response"),
        Some(1)
    );
    let warnings = env
        .host
        .logs()
        .into_iter()
        .filter(|l| l.level == 3 && l.message.contains("rate-limit check failed"))
        .count();
    assert_eq!(warnings, 3);
}

#[test]
fn a_slow_sluice_hits_the_timeout() {
    let env = env();
    let grpc_proxy = env.host.block_on(TcpProxy::start(env.sluice.grpc_addr));
    let http_proxy = env.host.block_on(TcpProxy::start(env.sluice.http_addr));
    env.host.cluster("slow", Cluster::Addr(grpc_proxy.addr));
    env.host
        .cluster("slow-http", Cluster::Addr(http_proxy.addr));
    let grpc = config(
        app_descriptor(),
        json!({"service": {"cluster": "slow", "timeout_ms": 300}, "failure_mode": "deny"}),
    );
    let http = config(
        app_descriptor(),
        json!({"service": {"cluster": "slow-http", "transport": "http", "timeout_ms": 300}}),
    );
    let (mut g, mut h) = (worker(&env.host, &grpc), worker(&env.host, &http));
    assert_eq!(
        g.exchange(Request::get("/").header("x-app-id", "a"))
            .status(),
        200,
        "through the proxy"
    );

    grpc_proxy.freeze();
    http_proxy.freeze();
    let started = std::time::Instant::now();
    assert_eq!(
        g.exchange(Request::get("/").header("x-app-id", "a"))
            .status(),
        503,
        "timed out, fail closed"
    );
    assert_eq!(
        h.exchange(Request::get("/").header("x-app-id", "a"))
            .status(),
        200,
        "timed out, fail open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "each call waited for its timeout"
    );
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.timeout"),
        Some(1)
    );
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.no_response"),
        Some(1)
    );

    grpc_proxy.thaw();
    http_proxy.thaw();
    assert_eq!(
        g.exchange(Request::get("/").header("x-app-id", "b"))
            .status(),
        200
    );
}

#[test]
fn an_unknown_cluster_or_a_wrong_path_follows_the_failure_mode() {
    let env = env();
    let unknown = config(
        app_descriptor(),
        json!({"service": {"cluster": "nowhere"}, "failure_mode": "deny", "failure_status": 500}),
    );
    let ex = worker(&env.host, &unknown).exchange(Request::get("/").header("x-app-id", "a"));
    assert_eq!(ex.status(), 500);
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.dispatch"),
        Some(1)
    );
    // A real server that does not speak the protocol: Sluice's HTTP port at a path it lacks.
    let wrong = config(
        app_descriptor(),
        json!({"service": {"cluster": "ratelimit-http", "transport": "http", "path": "/nope"}}),
    );
    let ex = worker(&env.host, &wrong).exchange(Request::get("/").header("x-app-id", "a"));
    assert_eq!(ex.status(), 200);
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.http_status"),
        Some(1)
    );
}

#[test]
fn bad_plugin_configurations_are_refused_with_one_clear_log_line() {
    let host = Host::default();
    for (config, needle) in [
        ("", "the configuration is empty"),
        ("{not json", "not JSON"),
        (
            r#"{"domain":"edge","service":{"cluster":"rl"},"descriptors":[{"actions":[{"request_header":{"header":"X-Bad","key":"k"}}]}]}"#,
            "descriptors[0].actions[0].request_header.header",
        ),
        (
            r#"{"domain":"edge","service":{"cluster":"rl","timeout_ms":0},"descriptors":[]}"#,
            "service.timeout_ms",
        ),
        (
            r#"{"domain":"edge","service":{"cluster":"rl"},"descriptors":[{"actions":[{"generic_key":{"descriptor_value":"a"}}]}],"typo":true}"#,
            "typo: unknown field",
        ),
    ] {
        let logs = host.worker(config).map(|_| ()).expect_err(config);
        assert_eq!(logs.len(), 1, "{config}: {logs:?}");
        assert!(
            logs[0].starts_with("sluice-filter: invalid plugin configuration: "),
            "{logs:?}"
        );
        assert!(logs[0].contains(needle), "{config}: {logs:?}");
    }
}

#[test]
fn a_host_without_shared_data_or_ticks_still_checks_remotely() {
    let env = env_with(HostOptions {
        shared_data: false,
        ticks: false,
    });
    let config = config(
        json!([{"actions": [{"request_header": {"header": "x-app-id", "key": "app_id"}}],
                "local": {"max_tokens": 1, "fill_interval_ms": 60000}}]),
        json!({}),
    );
    let mut w = worker(&env.host, &config);
    assert!(
        env.host
            .logs()
            .iter()
            .any(|l| l.message.contains("no shared data"))
    );
    let statuses: Vec<u32> = (0..4)
        .map(|_| {
            w.exchange(Request::get("/").header("x-app-id", "web"))
                .status()
        })
        .collect();
    assert_eq!(
        statuses,
        [200, 200, 429, 429],
        "Sluice decides every request"
    );
    assert_eq!(sluice_checks(&env, "grpc"), 4);
    assert!(!w.tick(), "the filter sets no tick period");
}

/// A well-formed `RateLimitResponse` for one descriptor, OK with 9 remaining.
fn ok_answer(overall_code: i32) -> Vec<u8> {
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::DescriptorStatus;
    use prost::Message;
    RateLimitResponse {
        overall_code,
        statuses: vec![DescriptorStatus {
            code: 1,
            limit_remaining: 9,
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn malformed_truncated_oversized_or_unknown_answers_follow_the_failure_mode() {
    let ok = ok_answer(1);
    let grpc_answers: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xff; 16]),
        ("truncated", ok[..ok.len() - 2].to_vec()),
        ("oversized", [ok.clone(), vec![0; 600]].concat()),
        ("unknown overall code", ok_answer(9)),
        ("no status for the descriptor", ok_answer(1)[..2].to_vec()),
    ];
    let http_answers: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"<html>".to_vec()),
        (
            "truncated JSON",
            br#"{"overallCode":"OK","statuses":[{"code":"#.to_vec(),
        ),
        (
            "unknown code",
            br#"{"overallCode":"MAYBE","statuses":[{"code":"OK"}]}"#.to_vec(),
        ),
        ("oversized", [b" ".repeat(600), b"{}".to_vec()].concat()),
    ];
    let mut seen = 0;
    for (transport, answers) in [("grpc", grpc_answers), ("http", http_answers)] {
        for (what, bytes) in answers {
            let host = Host::default();
            host.cluster("canned", Cluster::Canned(bytes));
            for (mode, expected) in [("allow", 200), ("deny", 503)] {
                let config = config(
                    app_descriptor(),
                    json!({"service": {"cluster": "canned", "transport": transport},
                           "failure_mode": mode, "max_response_bytes": 512}),
                );
                let mut w = worker(&host, &config);
                let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
                assert_eq!(
                    ex.status(),
                    expected,
                    "{transport} {what}, failure_mode {mode}"
                );
                seen += 1;
                // The VM survived: the next request is answered the same way.
                let again = w.exchange(Request::get("/").header("x-app-id", "web"));
                assert_eq!(again.status(), expected, "{transport} {what}, again");
            }
            assert_eq!(
                host.metric("sluice_filter.remote_errors.malformed"),
                Some(4),
                "{transport} {what}: {:?}",
                host.logs()
            );
        }
    }
    assert_eq!(seen, 18);
}

/// The descriptors of the invalid-request tests: the app from a header or a query parameter
/// (both `app_id`, 2 an hour in [`RULES`]), and the organisation from a bearer token.
fn app_sources() -> Value {
    json!([
        {"actions": [{"request_header": {"header": "x-app-id", "key": "app_id"}}]},
        {"actions": [{"query_parameter": {"name": "app", "key": "app_id"}}]},
        {"actions": [{"jwt_claim": {"claim": "org", "key": "org", "skip_if_absent": true}}]}
    ])
}

/// `request` with a request target that is not text.
fn with_path(mut request: Request, path: &[u8]) -> Request {
    for (k, v) in &mut request.headers {
        if k == ":path" {
            *v = path.to_vec();
        }
    }
    request
}

#[test]
fn a_client_over_its_limit_is_refused_whatever_unusable_value_it_sends() {
    for transport in ["grpc", "http"] {
        let env = env();
        let config = config(app_sources(), json!({"service": service(transport)}));
        let mut w = worker(&env.host, &config);
        // The client spends its limit; then it is over it however it names itself.
        for _ in 0..2 {
            let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
            assert_eq!(ex.status(), 200, "{transport}: {ex:?}");
        }
        let ex = w.exchange(Request::get("/").header("x-app-id", "web"));
        assert_eq!(ex.status(), 429, "{transport}: over its limit");
        assert_eq!(w.exchange(Request::get("/?app=web")).status(), 429);
        let checks = sluice_checks(&env, transport);

        // Each of these used to drop its descriptor, and with it the only limit on the request:
        // the client went through.
        let token = |payload: &str| format!("Bearer h.{}.s", base64_url(payload.as_bytes()));
        let attempts: Vec<(&str, Request, &str)> = vec![
            (
                "a 5 KB header",
                Request::get("/").header("x-app-id", "w".repeat(5000)),
                "action 0 (request_header \"x-app-id\"): the value is 5000 bytes, over max_value_bytes (4096)",
            ),
            (
                "a header byte that is not UTF-8",
                Request::get("/").header("x-app-id", b"web\xff"),
                "action 0 (request_header \"x-app-id\"): the value is not UTF-8",
            ),
            (
                "a percent-encoding that is not UTF-8",
                Request::get("/?app=web%ff"),
                "action 0 (query_parameter \"app\"): the percent-decoded value is not UTF-8",
            ),
            (
                "a query byte that is not UTF-8",
                with_path(Request::get("/"), b"/?app=web\xfe"),
                "action 0 (query_parameter \"app\"): the percent-decoded value is not UTF-8",
            ),
            (
                "a bearer token that does not decode",
                Request::get("/").header("authorization", "Bearer web"),
                "action 0 (jwt_claim \"org\" from \"authorization\"): the bearer token does not decode as a JWT",
            ),
            (
                "a bearer token over max_token_bytes",
                Request::get("/").header(
                    "authorization",
                    token(&format!(r#"{{"org":"{}"}}"#, "a".repeat(9000))),
                ),
                "over max_token_bytes (8192)",
            ),
        ];
        for (what, request, detail) in attempts {
            let ex = w.exchange(request);
            assert_eq!(
                ex.status(),
                400,
                "{transport}, {what}: {:?}",
                ex.local_reply
            );
            assert!(
                ex.forwarded.is_none(),
                "{transport}, {what}: reached the upstream"
            );
            let reply = ex.reply();
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json"),
                "{transport}, {what}"
            );
            assert!(reply.header("retry-after").is_none(), "{transport}, {what}");
            let doc = reply.json();
            assert_eq!(doc["status"], 400, "{transport}, {what}");
            assert_eq!(doc["kind"], "invalid", "{transport}, {what}");
            let got = doc["detail"].as_str().expect("detail");
            assert!(got.contains(detail), "{transport}, {what}: {got}");
        }
        assert_eq!(
            sluice_checks(&env, transport),
            checks,
            "{transport}: refused without a remote call"
        );
        assert_eq!(env.host.metric("sluice_filter.invalid_requests"), Some(6));
        assert_eq!(env.host.metric("sluice_filter.fail_open"), Some(0));

        // A normal client is unaffected, and absent values keep Envoy's rule: no x-app-id, no
        // `app` parameter and no token drop their descriptors and the request goes through.
        let ex = w.exchange(
            Request::get("/")
                .header("x-app-id", "mobile")
                .header("authorization", token(r#"{"org":"acme"}"#)),
        );
        assert_eq!(ex.status(), 200, "{transport}: {ex:?}");
        assert_eq!(ex.header("ratelimit-remaining").as_deref(), Some("1"));
        let ex = w.exchange(Request::get("/other"));
        assert_eq!(ex.status(), 200, "{transport}: nothing to limit");
        assert!(ex.forwarded.is_some());
        assert_eq!(env.host.metric("sluice_filter.invalid_requests"), Some(6));
    }
}

#[test]
fn the_invalid_request_status_and_the_bounds_are_configurable() {
    let env = env();
    let small = config(
        app_descriptor(),
        json!({"invalid_request_status": 431, "max_value_bytes": 16, "max_request_bytes": 256}),
    );
    let mut w = worker(&env.host, &small);
    let ex = w.exchange(Request::get("/").header("x-app-id", "a".repeat(16)));
    assert_eq!(ex.status(), 200, "{ex:?}");
    let ex = w.exchange(Request::get("/").header("x-app-id", "a".repeat(17)));
    assert_eq!(ex.status(), 431);
    assert_eq!(ex.reply().json()["status"], 431);
    assert_eq!(
        ex.reply().json()["title"],
        "Request Header Fields Too Large"
    );

    // Descriptors that together carry more than max_request_bytes are refused before Sluice:
    // "edge", "app_id" and "tenant" with two 121-byte values make 258 bytes.
    let many = config(
        json!([
            {"actions": [{"request_header": {"header": "x-a", "key": "app_id"}}]},
            {"actions": [{"request_header": {"header": "x-b", "key": "tenant"}}]}
        ]),
        json!({"max_request_bytes": 256, "max_value_bytes": 128}),
    );
    let mut w = worker(&env.host, &many);
    let ex = w.exchange(
        Request::get("/")
            .header("x-a", "a".repeat(121))
            .header("x-b", "b".repeat(121)),
    );
    assert_eq!(ex.status(), 400, "{ex:?}");
    assert_eq!(
        ex.reply().json()["detail"],
        "the descriptors carry 258 bytes of domain, keys and values, over max_request_bytes (256)"
    );
    assert_eq!(env.host.metric("sluice_filter.invalid_requests"), Some(2));
    assert_eq!(sluice_checks(&env, "grpc"), 1);
}

#[test]
fn sluice_refusing_a_check_as_malformed_denies_it_over_both_transports() {
    // Sluice's bound below the filter's: values the filter accepts reach Sluice, which refuses
    // the check (HTTP 400 past --max-request-bytes, 413 past four times it in body bytes; over
    // gRPC, OVER_LIMIT with a problem document of kind "invalid", relayed as it is). Under
    // `failure_mode: allow` the errors used to let the request through.
    let redis = RedisServer::start();
    let sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--max-request-bytes")
        .arg("512")
        .start();
    let host = Host::default();
    host.cluster("ratelimit", Cluster::Addr(sluice.grpc_addr));
    host.cluster("ratelimit-http", Cluster::Addr(sluice.http_addr));
    let env = Env {
        _redis: redis,
        sluice,
        host,
    };
    let cases = [
        (
            "grpc",
            1000,
            "request carries 1010 bytes of domain, keys and values; at most 512 are accepted",
        ),
        (
            "http",
            1000,
            "HTTP 400: request carries 1010 bytes of domain, keys and values; at most 512 are accepted",
        ),
        (
            "http",
            3000,
            "HTTP 413: the request body is larger than 2048 bytes",
        ),
    ];
    for (i, (transport, len, detail)) in cases.into_iter().enumerate() {
        let config = config(app_descriptor(), json!({"service": service(transport)}));
        let mut w = worker(&env.host, &config);
        let ex = w.exchange(Request::get("/").header("x-app-id", "a".repeat(len)));
        assert_eq!(ex.status(), 400, "{transport} {len}: {:?}", ex.local_reply);
        assert!(ex.forwarded.is_none(), "{transport} {len}");
        let doc = ex.reply().json();
        assert_eq!(doc["kind"], "invalid", "{transport} {len}");
        let got = doc["detail"].as_str().expect("detail");
        let expected = match transport {
            // Sluice's own problem document, relayed.
            "grpc" => detail.to_owned(),
            _ => format!("the rate-limit service refused the request: {detail}"),
        };
        assert!(got.starts_with(&expected), "{transport} {len}: {got}");
        assert_eq!(
            env.host.metric("sluice_filter.remote_invalid"),
            Some(i as i64 + 1)
        );
        // A normal client on the same worker is checked as usual.
        assert_eq!(
            w.exchange(Request::get("/").header("x-app-id", format!("ok{i}")))
                .status(),
            200,
            "{transport}"
        );
    }
    assert_eq!(env.host.metric("sluice_filter.fail_open"), Some(0));
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.grpc_status"),
        Some(0)
    );
    assert_eq!(
        env.host.metric("sluice_filter.remote_errors.http_status"),
        Some(0)
    );
    assert_eq!(env.host.metric("sluice_filter.remote_over_limit"), Some(0));
}
