//! End to end: a concurrency pool with a queue, through the compiled `sluice_filter.wasm` in the
//! wasmtime proxy-wasm host, calling the real `sluice` binary (memory store), over gRPC and over
//! HTTP `/json`. A check that finds the pool full waits in Sluice's queue while the filter holds
//! the request paused; Sluice answers within the callout's timeout, which the host announces in
//! `grpc-timeout` as Envoy does, and the filter in `x-sluice-wait-ms` over HTTP.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::sluice::Sluice;
use sluice_wasm_host::{Cluster, Exchange, Host, Request, Worker};

/// Pools of one slot: `upload` queues far longer than any callout timeout below, so the caller's
/// deadline ends a wait there; `batch` queues for [`BATCH_WAIT_MS`].
const RULES: &str = "domain: edge
descriptors:
  - key: upload
    rate_limit: {concurrency: 1, lease_ttl: 60, queue: {max_wait_ms: 30000, max_depth: 10}}
  - key: batch
    rate_limit: {concurrency: 1, lease_ttl: 60, queue: {max_wait_ms: 300, max_depth: 10}}
";

/// The `max_wait_ms` of the `batch` queue.
const BATCH_WAIT_MS: u64 = 300;

/// The callout timeout of checks that are to be granted: far above how long their wait takes.
const LONG_MS: u64 = 5000;
/// A callout timeout far below the `upload` queue's wait: the caller's deadline ends the wait.
const SHORT_MS: u64 = 400;

struct Env {
    sluice: Sluice,
    host: Host,
}

fn env() -> Env {
    let sluice = Sluice::builder(RULES).arg("--response-headers").start();
    let host = Host::default();
    host.cluster("ratelimit", Cluster::Addr(sluice.grpc_addr));
    host.cluster("ratelimit-http", Cluster::Addr(sluice.http_addr));
    Env { sluice, host }
}

/// A worker checking `[<pool>=<app>]` over `transport` with a callout timeout of `timeout_ms`.
/// It fails closed with 503, so a callout that timed out is never mistaken for Sluice's 429.
fn worker(host: &Host, transport: &str, pool: &str, app: &str, timeout_ms: u64) -> Worker {
    let service = if transport == "grpc" {
        json!({"cluster": "ratelimit", "timeout_ms": timeout_ms})
    } else {
        json!({"cluster": "ratelimit-http", "timeout_ms": timeout_ms, "transport": "http"})
    };
    let config = json!({
        "domain": "edge",
        "service": service,
        "failure_mode": "deny",
        "failure_status": 503,
        "descriptors": [{"actions": [{"generic_key": {"descriptor_value": app, "key": pool}}]}],
    });
    host.worker(&config.to_string())
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"))
}

fn upload() -> Request {
    Request::new("POST", "/upload")
}

/// The sum of the samples of `name` on Sluice's `/metrics` whose labels contain `labels`.
async fn metric(sluice: &Sluice, name: &str, labels: &str) -> f64 {
    let prefix = format!("{name}{{");
    sluice
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until a check waits in one of Sluice's queues.
async fn until_one_waits(sluice: &Sluice) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while metric(sluice, "sluice_queue_waiting", "").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "no check queued within 10 s");
}

/// Ends `lease` through Sluice's lease API, as another holder of the pool would.
async fn release(sluice: &Sluice, app: &str, lease: &str) {
    let body = json!({
        "domain": "edge",
        "descriptors": [{"entries": [{"key": "upload", "value": app}]}],
        "lease_id": lease,
    });
    let response = reqwest::Client::new()
        .post(sluice.url("/leases/release"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST /leases/release");
    assert_eq!(response.status().as_u16(), 204, "release of {lease}");
}

#[test]
fn a_request_held_for_a_full_pool_goes_through_when_the_slot_is_released() {
    let env = env();
    for transport in ["grpc", "http"] {
        let app = format!("app-{transport}");
        let mut w = worker(&env.host, transport, "upload", &app, LONG_MS);
        let a = w.open(upload());
        assert_eq!(a.exchange().status(), 200, "{transport}: {a:?}");
        let a_lease = a
            .exchange()
            .header("x-sluice-lease-id")
            .unwrap_or_else(|| panic!("{transport}: A holds no lease: {a:?}"));

        // B finds the pool full and is held while its check waits. Once Sluice shows it queued,
        // A's lease is released through the lease API, and B goes through holding the slot.
        let (b, started, released, answered) = thread::scope(|scope| {
            let releaser = scope.spawn(|| {
                env.host.block_on(async {
                    until_one_waits(&env.sluice).await;
                    let at = Instant::now();
                    release(&env.sluice, &app, &a_lease).await;
                    at
                })
            });
            let started = Instant::now();
            let b = w.open(upload());
            let answered = Instant::now();
            (b, started, releaser.join().expect("releaser"), answered)
        });
        assert_eq!(b.exchange().status(), 200, "{transport}: {b:?}");
        let b_lease = b
            .exchange()
            .header("x-sluice-lease-id")
            .unwrap_or_else(|| panic!("{transport}: B holds no lease: {b:?}"));
        assert_ne!(b_lease, a_lease, "{transport}: B's lease is its own");
        assert!(
            answered > released,
            "{transport}: B was answered before A's lease was released"
        );
        assert!(
            answered - started < Duration::from_millis(LONG_MS),
            "{transport}: B took {:?}, its timeout is {LONG_MS} ms",
            answered - started
        );
        assert_eq!(env.host.metric("sluice_filter.fail_closed"), Some(0));

        // A's stream ends (its release finds the lease gone, which is OK), then B's: the slot
        // is free again.
        w.close(a);
        w.close(b);
        let d = w.exchange(upload());
        assert_eq!(d.status(), 200, "{transport}: {d:?}");
        assert_eq!(env.host.metric("sluice_filter.lease_errors"), Some(0));
    }
    let granted = env.host.block_on(metric(
        &env.sluice,
        "sluice_queue_waits_total",
        "outcome=\"granted\"",
    ));
    assert!(granted >= 2.0, "Sluice counted {granted} granted waits");
}

#[test]
fn a_request_whose_wait_runs_out_gets_429_with_retry_after_before_the_filter_times_out() {
    let env = env();
    let fail_closed = || env.host.metric("sluice_filter.fail_closed").unwrap_or(0);
    for transport in ["grpc", "http"] {
        let app = format!("app-{transport}");

        // As docs/filter.md advises: a callout timeout of the queue's `max_wait_ms` and a margin.
        // C waits its 300 ms in the queue, then Sluice answers OVER_LIMIT: a 429 with
        // Retry-After, well before the 503 of a callout that timed out.
        let mut holder = worker(&env.host, transport, "batch", &app, LONG_MS);
        let a = holder.open(upload());
        assert_eq!(a.exchange().status(), 200, "{transport}: {a:?}");
        let mut w = worker(&env.host, transport, "batch", &app, BATCH_WAIT_MS + 700);
        let failed_before = fail_closed();
        let started = Instant::now();
        let c = w.exchange(upload());
        let took = started.elapsed();
        assert_eq!(c.status(), 429, "{transport}: {c:?} after {took:?}");
        assert_retry_after(transport, &c);
        assert!(
            took >= Duration::from_millis(BATCH_WAIT_MS / 2),
            "{transport}: answered after {took:?}, without waiting"
        );
        assert_eq!(
            fail_closed(),
            failed_before,
            "{transport}: the callout timed out"
        );
        holder.close(a);

        // A callout timeout below the queue's 30 s: Sluice learns C's deadline from the call
        // (`grpc-timeout`, `x-sluice-wait-ms`) and answers 20 ms before it. Without it, C would
        // wait on and its callout time out (503).
        let mut holder = worker(&env.host, transport, "upload", &app, LONG_MS);
        let a = holder.open(upload());
        assert_eq!(a.exchange().status(), 200, "{transport}: {a:?}");
        let mut w = worker(&env.host, transport, "upload", &app, SHORT_MS);
        let started = Instant::now();
        let c = w.exchange(upload());
        let took = started.elapsed();
        assert_eq!(
            c.status(),
            429,
            "{transport}: not answered before the callout's {SHORT_MS} ms: {c:?} after {took:?}"
        );
        assert_retry_after(transport, &c);
        assert!(
            took >= Duration::from_millis(SHORT_MS / 2),
            "{transport}: answered after {took:?}, without waiting"
        );
        holder.close(a);
    }
    let timed_out = env.host.block_on(metric(
        &env.sluice,
        "sluice_queue_waits_total",
        "outcome=\"timed_out\"",
    ));
    assert!(
        timed_out >= 4.0,
        "Sluice counted {timed_out} waits that ran out"
    );
}

/// A rejection by a full pool says when to come back: at the latest when the holder's lease
/// expires.
fn assert_retry_after(transport: &str, answer: &Exchange) {
    let retry_after: u64 = answer
        .header("retry-after")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{transport}: no Retry-After: {answer:?}"));
    assert!(
        (1..=60).contains(&retry_after),
        "{transport}: Retry-After {retry_after}, past the holder's lease TTL"
    );
}
