//! What the client adds to each request, without the network: the retry loop around an attempt
//! that answers at once (a 200 with IETF rate-limit headers), with and without pacing, beside the
//! bare attempt; and the header reading and pacing steps alone.
//!
//! Run: `cargo bench -p sluice-client --bench overhead`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use sluice_client::{Backoff, Pacer, PacerSettings, RateView, Reply, RetryPolicy};

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

fn answer() -> Reply {
    let mut headers = HeaderMap::new();
    headers.insert(
        "ratelimit-policy",
        HeaderValue::from_static("\"per-app\";q=1000000000;w=1"),
    );
    headers.insert(
        "ratelimit",
        HeaderValue::from_static("\"per-app\";r=999999999;t=1"),
    );
    Reply {
        status: 200,
        headers,
        body: Bytes::from_static(b"ok"),
    }
}

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let reply = answer();
    let mut group = c.benchmark_group("client");
    group.bench_function("bare_attempt", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(Ok::<_, Never>(reply.clone())) });
    });
    let plain = Backoff::new(RetryPolicy::default());
    group.bench_function("retry_loop", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(plain.run(|| async { Ok::<_, Never>(reply.clone()) }).await)
        });
    });
    // A limit far above the bench's rate: the pacer reads every answer but never waits.
    let paced =
        Backoff::new(RetryPolicy::default()).with_pacer(Arc::new(Pacer::new(PacerSettings {
            safety: 1.0,
            ..PacerSettings::default()
        })));
    group.bench_function("retry_loop_paced", |b| {
        b.to_async(&runtime).iter(|| async {
            black_box(paced.run(|| async { Ok::<_, Never>(reply.clone()) }).await)
        });
    });
    group.bench_function("read_rate_headers", |b| {
        b.iter(|| RateView::read(black_box(&reply.headers)));
    });
    let pacer = Pacer::default();
    group.bench_function("pacer_reserve", |b| {
        b.iter(|| pacer.reserve(black_box(Duration::from_secs(1))));
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
