//! End to end: the compiled filter reports each upstream response's latency and status to the
//! real `sluice` binary's `POST /reports`, and an adaptive limit moves on them.
//!
//! The guest's clock is frozen ([`Host::freeze_clock`]): each upstream answers after a latency
//! the test sets on that clock, and the root's ticks are driven by the test, so which post goes
//! when is exact. Only Sluice's own adaptive interval runs on the wall clock: the one wait below
//! is a bounded poll of its `/metrics` for the interval's decision.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_wasm_host::{Cluster, Host, HostOptions, Request, Upstream, Worker};

const RULE: &str = "api.upstream_pay";

/// A pool of 50 steered to a p99 of 100 ms, decided every second from as few as 3 reports,
/// and a per-app rate limit the test runs into.
const RULES: &str = "domain: api
descriptors:
  - key: upstream
    value: pay
    rate_limit:
      concurrency: 50
      adaptive: {signal: latency, target: 100ms, quantile: 0.99, min: 5, max: 200, interval: 1s, min_reports: 3}
  - key: app
    rate_limit: {unit: hour, requests_per_unit: 3}
";

/// Checks over `service`, the pool's descriptor and a per-app one, with `reports`.
fn config(service: Value, reports: Value) -> String {
    json!({
        "domain": "api",
        "service": service,
        "descriptors": [
            {"name": "upstream",
             "actions": [{"generic_key": {"descriptor_value": "pay", "key": "upstream"}}]},
            {"name": "per_app",
             "actions": [{"request_header": {"header": "x-app-id", "key": "app"}}]}],
        "reports": reports,
    })
    .to_string()
}

fn http_service() -> Value {
    json!({"cluster": "sluice-http", "transport": "http", "timeout_ms": 2000})
}

fn worker(host: &Host, config: &str) -> Worker {
    host.worker(config)
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"))
}

fn start() -> (Sluice, Host) {
    let sluice = Sluice::builder(RULES).start();
    let host = Host::default();
    host.freeze_clock();
    host.cluster("sluice-grpc", Cluster::Addr(sluice.grpc_addr));
    host.cluster("sluice-http", Cluster::Addr(sluice.http_addr));
    (sluice, host)
}

fn request(app: &str, status: u16, latency_ms: u64) -> Request {
    Request::get("/pay").header("x-app-id", app).upstream(
        Upstream::ok()
            .status(status)
            .latency(Duration::from_millis(latency_ms)),
    )
}

fn reports_total(host: &Host, sluice: &Sluice, result: &str) -> f64 {
    let scrape = host.block_on(sluice.metrics());
    sample_of(
        &scrape,
        &format!("sluice_adaptive_reports_total{{result=\"{result}\"}}"),
    )
}

fn filter_metric(host: &Host, name: &str) -> i64 {
    host.metric(&format!("sluice_filter.{name}")).unwrap_or(0)
}

#[test]
fn responses_from_upstream_are_reported_and_move_the_adaptive_limit() {
    let (sluice, host) = start();
    // Checks over gRPC; reports need Sluice's HTTP listener, named on their own.
    let mut w = worker(
        &host,
        &config(
            json!({"cluster": "sluice-grpc", "timeout_ms": 2000}),
            json!({"descriptors": ["upstream"], "cluster": "sluice-http", "max_batch": 10}),
        ),
    );
    assert_eq!(w.tick_period_ms(), 1000, "reports start the root's ticks");

    for status in [200, 503, 200] {
        let ex = w.exchange(request("web", status, 250));
        assert_eq!(ex.status(), u32::from(status), "{ex:?}");
    }
    // Over the app's limit: refused by Sluice, then by the negative cache. Neither reached the
    // upstream, so neither is reported, although the filter sees its own 429s on the response
    // path.
    for _ in 0..2 {
        let ex = w.exchange(request("web", 200, 5_000));
        assert_eq!(ex.status(), 429, "{ex:?}");
    }
    assert_eq!(filter_metric(&host, "remote_over_limit"), 1);
    assert_eq!(filter_metric(&host, "negative_cache_hits"), 1);

    // Nothing is posted on the request path, nor on a tick before flush_ms.
    assert!(w.tick());
    assert_eq!(reports_total(&host, &sluice, "accepted"), 0.0);
    assert_eq!(filter_metric(&host, "reports_sent"), 0);

    host.advance_clock(Duration::from_millis(1000));
    assert!(w.tick());
    assert_eq!(filter_metric(&host, "reports_sent"), 3);
    assert_eq!(filter_metric(&host, "report_errors"), 0);
    assert_eq!(reports_total(&host, &sluice, "accepted"), 3.0);
    assert_eq!(
        reports_total(&host, &sluice, "unmatched"),
        0.0,
        "only the named descriptor is reported"
    );

    // Sluice's next interval decides on them: p99 250 ms against 100 ms halves the pool.
    let signal = format!("sluice_adaptive_signal{{rule=\"{RULE}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let scrape = loop {
        let scrape = host.block_on(sluice.metrics());
        if sample_of(&scrape, &signal) > 0.0 || Instant::now() > deadline {
            break scrape;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let p99 = sample_of(&scrape, &signal);
    assert!(
        (245.0..=255.0).contains(&p99),
        "the latencies the filter measured: {p99}"
    );
    assert_eq!(
        sample_of(
            &scrape,
            &format!("sluice_adaptive_limit{{rule=\"{RULE}\"}}")
        ),
        25.0,
        "{scrape}"
    );
}

#[test]
fn a_full_batch_is_posted_on_an_early_tick_and_overflow_is_dropped() {
    let (sluice, host) = start();
    let mut w = worker(
        &host,
        &config(
            http_service(),
            json!({"max_batch": 2, "max_pending": 3, "descriptors": ["upstream"]}),
        ),
    );
    let apps = ["a", "b", "c", "d", "e"];
    w.exchange(request(apps[0], 200, 10));
    assert_eq!(w.tick_period_ms(), 1000);
    w.exchange(request(apps[1], 200, 10));
    assert_eq!(
        w.tick_period_ms(),
        1,
        "a full batch asks for a tick at once"
    );
    for app in &apps[2..] {
        w.exchange(request(app, 200, 10));
    }
    assert_eq!(
        filter_metric(&host, "reports_dropped"),
        2,
        "over max_pending"
    );
    assert_eq!(reports_total(&host, &sluice, "accepted"), 0.0);

    assert!(w.tick());
    assert_eq!(w.tick_period_ms(), 1000, "back to the usual period");
    assert_eq!(filter_metric(&host, "reports_sent"), 2, "one batch");
    assert_eq!(reports_total(&host, &sluice, "accepted"), 2.0);
    host.advance_clock(Duration::from_millis(999));
    assert!(w.tick());
    assert_eq!(
        filter_metric(&host, "reports_sent"),
        2,
        "the rest waits flush_ms"
    );
    host.advance_clock(Duration::from_millis(1));
    assert!(w.tick());
    assert_eq!(filter_metric(&host, "reports_sent"), 3);
    assert_eq!(reports_total(&host, &sluice, "accepted"), 3.0);
}

#[test]
fn a_failed_post_is_dropped_and_counted_never_retried() {
    let (_sluice, host) = start();
    // A loopback port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    host.cluster("nowhere", Cluster::Addr(closed));
    let mut w = worker(
        &host,
        &config(
            http_service(),
            json!({"cluster": "nowhere", "timeout_ms": 500}),
        ),
    );
    let ex = w.exchange(request("web", 200, 10));
    assert_eq!(ex.status(), 200, "{ex:?}");
    host.advance_clock(Duration::from_millis(1000));
    assert!(w.tick());
    assert_eq!(filter_metric(&host, "report_errors"), 1);
    assert_eq!(
        filter_metric(&host, "reports_dropped"),
        2,
        "both descriptors' reports"
    );
    assert_eq!(filter_metric(&host, "reports_sent"), 0);
    for _ in 0..3 {
        host.advance_clock(Duration::from_millis(1000));
        assert!(w.tick());
    }
    assert_eq!(filter_metric(&host, "report_errors"), 1, "never retried");
    let warned = host
        .logs()
        .into_iter()
        .filter(|l| l.message.contains("report(s) dropped"))
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0]
            .message
            .contains("2 report(s) dropped: no response"),
        "{warned:?}"
    );
}

#[test]
fn bad_reports_blocks_refuse_to_start_and_hosts_without_ticks_report_nothing() {
    let host = Host::default();
    let logs = host
        .worker(&config(
            json!({"cluster": "sluice-grpc"}),
            json!({"max_batch": 100}),
        ))
        .err()
        .expect("refused");
    assert_eq!(
        logs,
        vec![
            "sluice-filter: invalid plugin configuration: reports.cluster: is required with \
             `service.transport: grpc` (reports go to Sluice's HTTP listener)"
        ]
    );
    let logs = host
        .worker(&config(http_service(), json!({"max_batch": 5001})))
        .err()
        .expect("refused");
    assert_eq!(
        logs,
        vec![
            "sluice-filter: invalid plugin configuration: reports.max_batch: must be an integer \
             from 1 to 5000"
        ]
    );

    let (_sluice, _) = start();
    let host = Host::new(HostOptions {
        shared_data: true,
        ticks: false,
    });
    host.cluster("sluice-http", Cluster::Addr(_sluice.http_addr));
    let mut w = worker(&host, &config(http_service(), json!({})));
    assert!(
        host.logs().iter().any(
            |l| l.message == "sluice-filter: the host has no ticks; responses are not reported"
        ),
        "{:?}",
        host.logs()
    );
    let ex = w.exchange(request("web", 200, 10));
    assert_eq!(ex.status(), 200, "{ex:?}");
    assert!(!w.tick());
}
