//! End to end, the whole loop: clients behind the compiled filter, a concurrency pool in the
//! real `sluice` binary that the filter's own reports steer, and a synthetic upstream whose
//! latency grows with the requests in flight: a real HTTP server on 127.0.0.1. The pool must
//! settle where the upstream meets its latency target, and rise again when the upstream gets
//! faster.
//!
//! Each round, every client sends a request through the filter ([`Worker::send`]). Those the
//! pool admits really go to the upstream, all together, and each one's latency is measured on the
//! wall clock. The guest's clock is frozen ([`Host::freeze_clock`]): the test moves it to each
//! answer's measured latency in the order the answers came and hands the answer to the filter
//! there ([`Worker::respond`]), so the filter measures the upstream's real latency and not the
//! time the test spends driving one worker VM request by request (on the wall clock, the last
//! of 80 checks made one after another would be charged to the first request's latency). The
//! streams end (releasing their leases) and the root ticks, posting the reports. Sluice decides
//! each wall-clock second from the reports that arrived in it; each phase runs until the limit
//! settles or a deadline passes, and stops after a bounded number of rounds either way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_wasm_host::{Cluster, Host, Request, Sent, Upstream, Worker};

const TARGET_MS: f64 = 200.0;
const BASE_MS: u64 = 10;
/// The upstream's cost of each request in flight, before and after it gets twice as fast.
const SLOW_US: u64 = 8_000;
const FAST_US: u64 = 4_000;
/// More than the fast upstream's pool at target (47), so the pool stays full.
const CLIENTS: usize = 80;
const RULE: &str = "a.upstream_pay";
/// Each phase: at most this long, and at most this many rounds (each lasts at least the
/// upstream's 10 ms).
const PHASE: Duration = Duration::from_secs(35);
const ROUNDS: usize = 4_000;

const RULES: &str = "domain: a
descriptors:
  - key: upstream
    value: pay
    rate_limit:
      concurrency: 8
      adaptive: {signal: latency, target: 200ms, quantile: 0.99, min: 5, max: 100, interval: 1s}
";

/// `n` requests to the upstream at once; each one's status (0 when it failed) and latency, from
/// sending the request to the whole answer, fastest first.
async fn call_upstream(
    client: &reqwest::Client,
    addr: SocketAddr,
    n: usize,
) -> Vec<(Duration, u16)> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let status = match client.get(format!("http://{addr}/pay")).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        r.bytes().await.map_or(0, |_| status)
                    }
                    Err(_) => 0,
                };
                (started.elapsed(), status)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(n);
    for call in calls {
        answers.push(call.await.expect("an upstream call"));
    }
    answers.sort_unstable();
    answers
}

/// One wall-clock second of the run: the limit Sluice had at its end, the requests in flight in
/// its last round, and the p99 of the upstream's latencies measured in it (of `responses`).
#[derive(Debug, Clone, Copy)]
struct Second {
    limit: f64,
    in_flight: usize,
    p99_ms: f64,
    responses: usize,
}

/// The p99 of `ms` by nearest rank (for fewer than 100, the highest).
fn p99(ms: &mut [f64]) -> f64 {
    if ms.is_empty() {
        return 0.0;
    }
    ms.sort_by(f64::total_cmp);
    let rank = ((0.99 * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
    ms[rank - 1]
}

/// Three seconds in a row with one limit, the pool full, and the upstream's p99 within 10 % of
/// target over at least as many responses as Sluice needs to decide (20).
fn settled(seen: &[Second]) -> bool {
    seen.len() >= 3
        && seen[seen.len() - 3..].iter().all(|s| {
            s.limit == seen[seen.len() - 1].limit
                && s.in_flight as f64 == s.limit
                && s.responses >= 20
                && (s.p99_ms - TARGET_MS).abs() <= TARGET_MS * 0.1
        })
}

/// What the upstream's measured latency may add to the model's `BASE_MS + per_request × in
/// flight`: loopback HTTP through a debug-build client and server, timer granularity, a loaded
/// 2-core machine (2–7 ms in the runs that set it), and Sluice's histogram (within 2 %).
const OVERHEAD_MS: f64 = 16.0;
/// How far the measured latency may fall short of the model: only by the histogram's 2 %.
const SHORTFALL_MS: f64 = 4.0;

/// The limits at which the model puts the last of `limit` requests in flight in Sluice's band
/// (92–100 % of target): 22–23 for the slow upstream, 44–47 for the fast one. The real upstream's
/// overhead makes it reach the band a little earlier (the fast one settled at 42 to 45), so the
/// lower end allows for [`OVERHEAD_MS`]: in requests, twice as many for the fast upstream as for
/// the slow one (20–24 and 40–48 in all).
fn band(per_request_us: u64) -> std::ops::RangeInclusive<f64> {
    let limit_at = |ms: f64| (ms - BASE_MS as f64) * 1000.0 / per_request_us as f64;
    limit_at(0.92 * TARGET_MS - OVERHEAD_MS).ceil()..=limit_at(TARGET_MS + SHORTFALL_MS).floor()
}

/// The settled seconds' mean p99 over what the model gives for their limit.
fn overhead_ms(seen: &[Second], per_request_us: u64) -> f64 {
    let last = &seen[seen.len().saturating_sub(3)..];
    let model = |s: &Second| BASE_MS as f64 + s.limit * per_request_us as f64 / 1000.0;
    last.iter().map(|s| s.p99_ms - model(s)).sum::<f64>() / last.len().max(1) as f64
}

/// The clients' side of the loop: the proxy with its worker, the Sluice it checks and reports
/// to, and the client that carries what the filter lets through to the upstream.
struct Proxy {
    host: Host,
    worker: Worker,
    sluice: Sluice,
    client: reqwest::Client,
    upstream: SocketAddr,
    /// Upstream calls that got no answer (reported as 502).
    failed: usize,
}

impl Proxy {
    /// Runs rounds until `done` holds for the seconds seen (or the phase's deadline or round
    /// count passes); the seconds, and how long that took.
    fn phase(&mut self, done: impl Fn(&[Second]) -> bool) -> (Vec<Second>, Duration) {
        let started = Instant::now();
        let deadline = started + PHASE;
        let mut next_second = started + Duration::from_secs(1);
        let mut seen: Vec<Second> = Vec::new();
        let mut latencies: Vec<f64> = Vec::new();
        for _round in 0..ROUNDS {
            let w = &mut self.worker;
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
            let in_flight = flights.len();
            let answers = self
                .host
                .block_on(call_upstream(&self.client, self.upstream, in_flight));
            // All went upstream at one instant of the guest's clock; each is answered at its
            // own latency after it, the fastest first.
            let mut elapsed = Duration::ZERO;
            for (flight, (latency, status)) in flights.into_iter().zip(answers) {
                self.host.advance_clock(latency - elapsed);
                elapsed = latency;
                let status = if status == 0 {
                    self.failed += 1;
                    502
                } else {
                    status
                };
                let open = w.respond(flight, Upstream::ok().status(status));
                w.close(open);
                latencies.push(latency.as_secs_f64() * 1000.0);
            }
            w.tick();

            let now = Instant::now();
            if now >= next_second {
                next_second = now + Duration::from_secs(1);
                let scrape = self.host.block_on(self.sluice.metrics());
                seen.push(Second {
                    limit: sample_of(
                        &scrape,
                        &format!("sluice_adaptive_limit{{rule=\"{RULE}\"}}"),
                    ),
                    in_flight,
                    responses: latencies.len(),
                    p99_ms: p99(&mut latencies),
                });
                latencies.clear();
                if done(&seen) || now >= deadline {
                    break;
                }
            }
        }
        (seen, started.elapsed())
    }
}

fn trajectory(seen: &[Second]) -> Vec<(f64, usize, f64)> {
    seen.iter()
        .map(|s| (s.limit, s.in_flight, (s.p99_ms * 10.0).round() / 10.0))
        .collect()
}

/// The highest p99 of the phase, and how far over target that is.
fn overshoot(seen: &[Second]) -> (f64, f64) {
    let high = seen.iter().map(|s| s.p99_ms).fold(0.0, f64::max);
    (high, (high / TARGET_MS - 1.0) * 100.0)
}

#[test]
fn the_filters_reports_steer_a_pool_to_a_real_upstreams_target_and_up_when_it_speeds_up() {
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
    let worker = host
        .worker(&config.to_string())
        .unwrap_or_else(|logs| panic!("configuration refused: {logs:?}"));
    let upstream = host.block_on(sluice_tests::upstream::Upstream::start(
        Duration::from_millis(BASE_MS),
        Duration::from_micros(SLOW_US),
    ));
    let per_request_us = Arc::clone(&upstream.per_request_us);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("an HTTP client");
    let mut proxy = Proxy {
        host,
        worker,
        sluice,
        client,
        upstream: upstream.addr,
        failed: 0,
    };

    // 10 ms + 8 ms per request in flight: 200 ms is reached at 23.75 in flight.
    let (slow, slow_took) = proxy.phase(settled);
    eprintln!(
        "slow upstream, (limit, in flight, p99 ms) per second: {:?}",
        trajectory(&slow)
    );
    let (high, over) = overshoot(&slow);
    eprintln!(
        "settled after {slow_took:?}; highest p99 {high:.1} ms ({over:+.1} % of target); \
         {:.1} ms over the model",
        overhead_ms(&slow, SLOW_US)
    );
    assert!(settled(&slow), "did not settle: {slow:?}");
    let at = slow[slow.len() - 1].limit;
    assert!(
        band(SLOW_US).contains(&at),
        "settled at {at}, outside {:?}: {slow:?}",
        band(SLOW_US)
    );

    // Twice as fast: 200 ms is reached at 47.5 in flight, and the pool must grow to it.
    per_request_us.store(FAST_US, Ordering::Relaxed);
    let (fast, fast_took) = proxy.phase(|seen| settled(seen) && seen[seen.len() - 1].limit > at);
    eprintln!(
        "fast upstream, (limit, in flight, p99 ms) per second: {:?}",
        trajectory(&fast)
    );
    let (high, over) = overshoot(&fast);
    eprintln!(
        "settled again after {fast_took:?}; highest p99 {high:.1} ms ({over:+.1} % of target); \
         {:.1} ms over the model",
        overhead_ms(&fast, FAST_US)
    );
    let host = &proxy.host;
    eprintln!(
        "{} reports sent, {} dropped; {} upstream calls failed",
        host.metric("sluice_filter.reports_sent").unwrap_or(0),
        host.metric("sluice_filter.reports_dropped").unwrap_or(0),
        proxy.failed
    );
    let again = fast[fast.len() - 1].limit;
    assert!(again > at, "the limit did not rise from {at}: {fast:?}");
    assert!(settled(&fast), "did not settle again: {fast:?}");
    assert!(
        band(FAST_US).contains(&again),
        "settled at {again}, outside {:?}: {fast:?}",
        band(FAST_US)
    );
    assert_eq!(proxy.failed, 0, "upstream calls failed");
    assert_eq!(host.metric("sluice_filter.report_errors"), Some(0));
    assert_eq!(host.metric("sluice_filter.reports_dropped"), Some(0));
}
