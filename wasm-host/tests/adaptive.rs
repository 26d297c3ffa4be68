//! End to end, the whole loop: clients behind the compiled filter, a concurrency pool in the
//! real `sluice` binary that the filter's own reports steer, and a synthetic upstream whose
//! latency grows with the requests in flight. The pool must settle where the upstream meets
//! its latency target.
//!
//! Each round, every client sends a request ([`Worker::send`]); those the pool admits are in
//! flight together, and the upstream answers all of them after `10 ms + 8 ms × in flight` on the
//! host's frozen clock ([`Worker::respond`]), as a server whose threads contend would. The
//! streams end (releasing their leases) and the root ticks, posting the reports. Sluice decides
//! each wall-clock second from the reports that arrived in it; the loop runs until the limit
//! settles or a deadline passes, and stops after a bounded number of rounds either way.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_wasm_host::{Cluster, Host, Request, Sent, Upstream};

const TARGET_MS: u64 = 200;
const BASE_MS: u64 = 10;
const PER_REQUEST_MS: u64 = 8;
const CLIENTS: usize = 40;
const RULE: &str = "a.upstream_pay";

const RULES: &str = "domain: a
descriptors:
  - key: upstream
    value: pay
    rate_limit:
      concurrency: 8
      adaptive: {signal: latency, target: 200ms, quantile: 0.99, min: 5, max: 100, interval: 1s}
";

/// One wall-clock second of the run: the limit Sluice had, and the most requests in flight and
/// the upstream's latency in the last round.
#[derive(Debug, Clone, Copy)]
struct Second {
    limit: f64,
    in_flight: usize,
    latency_ms: u64,
}

/// Three seconds in a row with one limit, the pool full and the upstream within 10 % of target.
fn settled(seen: &[Second]) -> bool {
    seen.len() >= 3
        && seen[seen.len() - 3..].iter().all(|s| {
            s.limit == seen[seen.len() - 1].limit
                && s.in_flight as f64 == s.limit
                && s.latency_ms.abs_diff(TARGET_MS) <= TARGET_MS / 10
        })
}

#[test]
fn the_filters_reports_steer_a_pool_to_the_upstreams_latency_target() {
    let sluice = Sluice::builder(RULES).start();
    let host = Host::default();
    host.freeze_clock();
    host.cluster("sluice", Cluster::Addr(sluice.grpc_addr));
    host.cluster("sluice-http", Cluster::Addr(sluice.http_addr));
    let config = json!({
        "domain": "a",
        "service": {"cluster": "sluice", "timeout_ms": 2000},
        "descriptors": [{"name": "upstream",
                         "actions": [{"generic_key": {"descriptor_value": "pay", "key": "upstream"}}]}],
        "reports": {"cluster": "sluice-http", "flush_ms": 100},
    });
    let mut w = host
        .worker(&config.to_string())
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"));

    let started = Instant::now();
    let deadline = started + Duration::from_secs(40);
    let mut next_second = started + Duration::from_secs(1);
    let mut seen: Vec<Second> = Vec::new();
    let (mut in_flight, mut latency_ms) = (0, 0);
    for _round in 0..100_000 {
        let mut flights = Vec::new();
        for _ in 0..CLIENTS {
            match w.send(Request::get("/pay")) {
                Sent::Upstream(flight) => flights.push(flight),
                Sent::Replied(open) => {
                    let ex = w.close(open);
                    assert_eq!(ex.status(), 429, "only a full pool refuses: {ex:?}");
                }
            }
        }
        in_flight = flights.len();
        latency_ms = BASE_MS + PER_REQUEST_MS * in_flight as u64;
        host.advance_clock(Duration::from_millis(latency_ms));
        for flight in flights {
            let open = w.respond(flight, Upstream::ok());
            w.close(open);
        }
        w.tick();

        let now = Instant::now();
        if now >= next_second {
            next_second = now + Duration::from_secs(1);
            let scrape = host.block_on(sluice.metrics());
            let limit = sample_of(
                &scrape,
                &format!("sluice_adaptive_limit{{rule=\"{RULE}\"}}"),
            );
            seen.push(Second {
                limit,
                in_flight,
                latency_ms,
            });
            if settled(&seen) || now >= deadline {
                break;
            }
        }
    }
    eprintln!(
        "(limit, in flight, upstream ms) per second: {:?}",
        seen.iter()
            .map(|s| (s.limit, s.in_flight, s.latency_ms))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "settled after {:?}; {} reports sent, {} dropped",
        started.elapsed(),
        host.metric("sluice_filter.reports_sent").unwrap_or(0),
        host.metric("sluice_filter.reports_dropped").unwrap_or(0)
    );
    assert!(settled(&seen), "did not settle: {seen:?}");
    let last = seen[seen.len() - 1];
    // 10 + 8 × 23.75 = 200: the band (92–100 % of target) holds 22 or 23.
    assert!(
        (22.0..=23.0).contains(&last.limit),
        "settled at {last:?}, in flight {in_flight}, {latency_ms} ms"
    );
    assert_eq!(host.metric("sluice_filter.report_errors"), Some(0));
    assert_eq!(host.metric("sluice_filter.reports_dropped"), Some(0));
}
