//! Per-request cost of the filter inside wasmtime, through the proxy-wasm host of the tests: a
//! whole exchange (context create, request headers, the filter's work, done, log, delete).
//!
//! - `local_reject`: the descriptor's local bucket is empty, so the filter answers 429 itself
//!   (shared-data read and CAS write, problem body, local reply).
//! - `negative_cache`: Sluice answered OVER_LIMIT for the descriptor a moment ago, so the filter
//!   answers 429 from its negative cache (shared-data read, problem body, local reply).
//! - `remote_check`: the filter encodes a `RateLimitRequest`, calls the cluster, decodes an OK
//!   answer, resumes the request and adds the rate-limit headers to the response. The cluster
//!   answers at once with canned bytes: the network is excluded, the filter's work is not.
//! - `remote_check_reported`: the same with a `reports` block: the response is timed and its
//!   report filed at stream end, and every 100th exchange fills a batch, which the root encodes
//!   and posts on the tick it asks for (the canned cluster answers 200).
//!
//! - `baseline/pass_through`: the same exchange through a filter that does nothing
//!   (`wasm-host/passthrough`): the host's and wasmtime's own cost, to subtract from the two above
//!   so the filter's own work shows.
//!
//! Run: `scripts/build-wasm.sh && cargo bench -p sluice-wasm-host --bench filter`

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    DescriptorStatus, RateLimit,
};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;
use sluice_wasm_host::{Cluster, Host, Request, Upstream};

fn config(local: &str) -> String {
    format!(
        r#"{{"domain":"edge","service":{{"cluster":"ratelimit"}},
            "descriptors":[{{"actions":[{{"request_header":{{"header":"x-app-id","key":"app_id"}}}}]{local}}}]}}"#
    )
}

fn bench(c: &mut Criterion) {
    let ok = RateLimitResponse {
        overall_code: 1,
        statuses: vec![DescriptorStatus {
            code: 1,
            current_limit: Some(RateLimit {
                name: "app".into(),
                requests_per_unit: 600,
                unit: 2,
            }),
            limit_remaining: 599,
            duration_until_reset: Some(Duration {
                seconds: 42,
                nanos: 0,
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let host = Host::default();
    host.cluster("ratelimit", Cluster::Canned(ok.encode_to_vec()));
    let request = Request::get("/orders")
        .header("x-app-id", "web")
        .upstream(Upstream::ok().chunk(b"hello"));

    let mut local = host
        .worker(&config(
            r#","local":{"max_tokens":1,"fill_interval_ms":86400000}"#,
        ))
        .expect("configure");
    assert_eq!(
        local.exchange(request.clone()).status(),
        200,
        "first request takes the only token"
    );
    assert_eq!(local.exchange(request.clone()).status(), 429);
    c.bench_function("filter/local_reject", |b| {
        b.iter(|| local.exchange(request.clone()))
    });

    let mut remote = host.worker(&config("")).expect("configure");
    assert_eq!(remote.exchange(request.clone()).status(), 200);
    c.bench_function("filter/remote_check", |b| {
        b.iter(|| remote.exchange(request.clone()))
    });

    let reported = config("").replace(
        r#""descriptors""#,
        r#""reports":{"cluster":"ratelimit","max_batch":100},"descriptors""#,
    );
    let mut reporting = host.worker(&reported).expect("configure");
    // A whole batch first, so the posts are seen to work even when criterion runs each bench
    // once (`cargo test --benches`).
    for _ in 0..100 {
        assert_eq!(reporting.exchange(request.clone()).status(), 200);
    }
    assert_eq!(
        reporting.tick_period_ms(),
        1,
        "a full batch asks for a tick at once"
    );
    reporting.tick();
    assert_eq!(host.metric("sluice_filter.reports_sent"), Some(100));
    c.bench_function("filter/remote_check_reported", |b| {
        b.iter(|| {
            let ex = reporting.exchange(request.clone());
            // A full batch asks for a tick at once; the host gives it, as Envoy's timer would.
            if reporting.tick_period_ms() == 1 {
                reporting.tick();
            }
            ex
        })
    });
    assert_eq!(host.metric("sluice_filter.reports_dropped"), Some(0));

    // Sluice answered OVER_LIMIT for 42 s: the next requests are answered from the negative
    // cache, without a callout.
    let over = RateLimitResponse {
        overall_code: 2,
        statuses: vec![DescriptorStatus {
            code: 2,
            duration_until_reset: Some(Duration {
                seconds: 42,
                nanos: 0,
            }),
            ..ok.statuses[0].clone()
        }],
        ..Default::default()
    };
    let refusing = Host::default();
    refusing.cluster("ratelimit", Cluster::Canned(over.encode_to_vec()));
    let mut negative = refusing.worker(&config("")).expect("configure");
    assert_eq!(negative.exchange(request.clone()).status(), 429);
    assert_eq!(negative.exchange(request.clone()).status(), 429);
    assert_eq!(
        refusing.metric("sluice_filter.negative_cache_hits"),
        Some(1),
        "the second request was answered from the negative cache"
    );
    c.bench_function("filter/negative_cache", |b| {
        b.iter(|| negative.exchange(request.clone()))
    });

    let mut baseline = host.baseline_worker();
    assert_eq!(baseline.exchange(request.clone()).status(), 200);
    c.bench_function("baseline/pass_through", |b| {
        b.iter(|| baseline.exchange(request.clone()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
