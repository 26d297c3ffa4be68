//! End-to-end: concurrency leases through the real `sluice` binary, over gRPC (the lease id in
//! `response_headers_to_add` and dynamic metadata, released with a `sluice.lease_id` entry) and
//! over the HTTP lease API (acquire with a wait, renew, release, holders), on the memory store and
//! on a real redis-server; and a vanished client's lease coming back after its TTL on Redis's
//! clock.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::google::protobuf::value::Kind;
use serde_json::{Value, json};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

const RULES: &str = r#"
domain: media
descriptors:
  - key: uploads
    rate_limit: {concurrency: 2, lease_ttl: 600, name: uploads}
  - key: short
    rate_limit: {concurrency: 1, lease_ttl: 1}
"#;

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

fn start(backend: Backend) -> (Sluice, Option<RedisServer>) {
    let b = Sluice::builder(RULES);
    match backend {
        Backend::Memory => (b.start(), None),
        Backend::Redis => {
            let redis = RedisServer::start();
            (b.redis(&redis.url()).start(), Some(redis))
        }
    }
}

fn header<'r>(r: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

async fn grpc_acquire_and_release(backend: Backend) {
    let (sluice, _redis) = start(backend);
    let mut client = sluice.grpc().await;
    let upload = || descriptor(&[("uploads", "tenant-1")]);
    let first = client
        .should_rate_limit(request("media", vec![upload()]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(first.overall_code, OK);
    let id = header(&first, "x-sluice-lease-id")
        .expect("the lease id is returned")
        .to_owned();
    assert_eq!(id.len(), 32);
    assert_eq!(header(&first, "x-sluice-lease-ttl"), Some("600"));
    let metadata = first.dynamic_metadata.expect("dynamic metadata");
    assert_eq!(
        metadata.fields["lease_id"].kind,
        Some(Kind::StringValue(id.clone()))
    );
    assert_eq!(
        metadata.fields["lease_ttl_seconds"].kind,
        Some(Kind::NumberValue(600.0))
    );

    let second = client
        .should_rate_limit(request("media", vec![upload()]))
        .await
        .expect("check")
        .into_inner();
    assert_ne!(header(&second, "x-sluice-lease-id"), Some(id.as_str()));
    let full = client
        .should_rate_limit(request("media", vec![upload()]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(full.overall_code, OVER_LIMIT, "{backend:?}");
    assert!(header(&full, "x-sluice-lease-id").is_none());
    let retry: u64 = header(&full, "Retry-After")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert!(
        (599..=600).contains(&retry),
        "the soonest lease expiry: {retry}"
    );

    // Stream end: the filter sends the descriptor back with the id and is_negative_hits.
    let mut release = upload();
    release.entries.push(Entry {
        key: "sluice.lease_id".into(),
        value: id.clone(),
    });
    release.is_negative_hits = true;
    let released = client
        .should_rate_limit(request("media", vec![release]))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.overall_code, OK);
    assert_eq!(released.statuses[0].limit_remaining, 1);
    let again = client
        .should_rate_limit(request("media", vec![upload()]))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(again.overall_code, OK);

    // Releasing without the id is the caller's mistake.
    let mut anonymous = upload();
    anonymous.is_negative_hits = true;
    let err = client
        .should_rate_limit(request("media", vec![anonymous]))
        .await
        .expect_err("a release needs the id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("sluice.lease_id"),
        "{}",
        err.message()
    );

    let metrics = reqwest::get(sluice.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "sluice_lease_acquisitions_total{rule=\"media.uploads\"} 3",
        "sluice_lease_rejections_total{rule=\"media.uploads\"} 1",
        "sluice_lease_releases_total{rule=\"media.uploads\"} 1",
        "sluice_lease_pool_capacity{rule=\"media.uploads\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}

#[tokio::test]
async fn grpc_leases_on_memory() {
    grpc_acquire_and_release(Backend::Memory).await;
}

#[tokio::test]
async fn grpc_leases_on_redis() {
    grpc_acquire_and_release(Backend::Redis).await;
}

async fn lease_api(sluice: &Sluice, action: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(sluice.url(&format!("/leases/{action}")))
        .json(&body)
        .send()
        .await
        .expect("lease API");
    let status = response.status().as_u16();
    let text = response.text().await.expect("text");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn job(entries: Value) -> Value {
    json!({"domain": "media", "descriptors": [{"entries": entries}]})
}

async fn http_api(backend: Backend) {
    let (sluice, _redis) = start(backend);
    let pool = json!([{"key": "uploads", "value": "batch"}]);
    let (status, first) = lease_api(&sluice, "acquire", job(pool.clone())).await;
    assert_eq!(status, 200, "{first}");
    let id = first["lease_id"].as_str().expect("lease id").to_owned();
    assert_eq!(first["ttl_seconds"], 600);
    let (status, _) = lease_api(&sluice, "acquire", job(pool.clone())).await;
    assert_eq!(status, 200);
    let (status, full) = lease_api(&sluice, "acquire", job(pool.clone())).await;
    assert_eq!(status, 429, "{full}");
    assert_eq!(full["algorithm"], "concurrency");

    // A waiting acquire gets the slot a release frees.
    let waiting = {
        let url = sluice.url("/leases/acquire");
        let mut body = job(pool.clone());
        body["wait_ms"] = json!(10_000);
        tokio::spawn(async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("acquire");
            (r.status().as_u16(), started.elapsed())
        })
    };
    let mut release = job(pool.clone());
    release["lease_id"] = json!(id);
    let (status, _) = lease_api(&sluice, "release", release.clone()).await;
    assert_eq!(status, 204);
    let (status, waited) = waiting.await.expect("task");
    assert_eq!(status, 200, "the waiting acquire got the freed slot");
    assert!(waited < Duration::from_secs(10));

    let (status, holders) = lease_api(&sluice, "holders", job(pool.clone())).await;
    assert_eq!(status, 200, "{holders}");
    let p = &holders["pools"][0];
    assert_eq!(
        (p["capacity"].as_u64(), p["in_use"].as_u64()),
        (Some(2), Some(2))
    );
    let shown = p["holders"][0]["lease_id"].as_str().expect("id");
    assert!(
        shown.ends_with('…') && shown.chars().count() == 9,
        "{shown}"
    );

    // Renewing a lease nobody holds any more, in a full pool, is refused.
    let (status, _) = lease_api(&sluice, "renew", release.clone()).await;
    assert_eq!(status, 429);
    // Bad input.
    let mut bad = release.clone();
    bad["lease_id"] = json!("nope");
    assert_eq!(lease_api(&sluice, "release", bad).await.0, 400);
    let mut too_long = job(pool.clone());
    too_long["wait_ms"] = json!(999_999);
    let (status, why) = lease_api(&sluice, "acquire", too_long).await;
    assert_eq!(status, 400);
    assert!(
        why["error"]
            .as_str()
            .is_some_and(|e| e.contains("at most 30000")),
        "{why}"
    );
    let (status, why) = lease_api(
        &sluice,
        "acquire",
        job(json!([{"key": "nothing", "value": "x"}])),
    )
    .await;
    assert_eq!(status, 400, "{why}");
    // A release that cannot be one: no pool matched, or a domain the rules do not know.
    let mut nowhere = job(json!([{"key": "nothing", "value": "x"}]));
    nowhere["lease_id"] = json!(id);
    let (status, why) = lease_api(&sluice, "release", nowhere.clone()).await;
    assert_eq!(status, 400, "{why}");
    nowhere["domain"] = json!("no-such-domain");
    let (status, why) = lease_api(&sluice, "release", nowhere).await;
    assert_eq!(status, 404, "{why}");
}

#[tokio::test]
async fn http_lease_api_on_memory() {
    http_api(Backend::Memory).await;
}

#[tokio::test]
async fn http_lease_api_on_redis() {
    http_api(Backend::Redis).await;
}

/// A client that takes a lease and vanishes: its slot comes back one TTL later, on Redis's clock,
/// without any release.
#[tokio::test]
async fn a_vanished_clients_lease_is_reclaimed_after_its_ttl() {
    let (sluice, _redis) = start(Backend::Redis);
    let short = job(json!([{"key": "short", "value": "s"}]));
    assert_eq!(lease_api(&sluice, "acquire", short.clone()).await.0, 200);
    assert_eq!(lease_api(&sluice, "acquire", short.clone()).await.0, 429);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = lease_api(&sluice, "acquire", short.clone()).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the lease never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = reqwest::get(sluice.url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("sluice_lease_expirations_reclaimed_total 1"),
        "{metrics}"
    );
}
