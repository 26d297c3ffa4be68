//! `sluice-load`: a closed-loop gRPC load generator for `ShouldRateLimit`.
//!
//! Each of `connections × in_flight` workers sends one request, waits for its answer and only then
//! sends the next, so the offered load follows the server's speed. That makes runs comparable
//! between builds, but like every closed-loop generator it under-reports tail latency when the
//! server stalls (a stalled worker sends nothing, so the stall is sampled once, not once per
//! request that would have arrived). Use it to compare Sluice with itself, not to size an SLO.
//!
//! Descriptor values come from a xorshift PRNG with a fixed seed, so two runs with the same flags
//! send the same key sequence and hit the same counters.
//!
//! The result is one JSON line on stdout; everything else goes to stderr.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

/// Latencies above this are clamped into the top bucket; no request can legitimately take longer
/// because `--timeout-ms` is capped well below it.
const MAX_TRACKED_LATENCY_US: u64 = 60_000_000;

/// Slack on top of the run's own bounds before the whole run is abandoned. Each request is
/// already bounded by `--timeout-ms`, so this only fires if the runtime itself wedges.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

#[derive(Parser, Debug, Clone)]
#[command(name = "sluice-load", version, about)]
struct Args {
    /// gRPC address of the rate-limit service. Only loopback targets are accepted
    /// (127.0.0.0/8, ::1 or `localhost`): this tool must never load a shared server.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    target: String,

    /// HTTP/2 connections (one tonic channel each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    connections: u32,

    /// Concurrent requests per connection; each is one closed-loop worker.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    in_flight: u32,

    /// Measured seconds, after the warm-up.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    duration: u64,

    /// Hard cap on requests sent, warm-up included; the run stops at whichever bound comes first.
    #[arg(long, default_value_t = 50_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    max_requests: u64,

    /// Seconds of load before measuring starts (connections established, counters created).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60))]
    warmup: u64,

    /// Rate-limit domain sent with every request.
    #[arg(long, default_value = "edge")]
    domain: String,

    /// Key cardinality: descriptor values are drawn uniformly from this many distinct values.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    keys: u64,

    /// Descriptors per request (Envoy sends one per rate-limit action on the route).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    descriptors: u32,

    /// Entries of each descriptor, named after the rules in examples/config/quotas.yaml.
    #[arg(long, visible_alias = "entries", value_enum, default_value_t = Shape::App)]
    shape: Shape,

    /// Request-level `hits_addend`; 0 leaves it unset, which the service reads as 1.
    #[arg(long, default_value_t = 1)]
    hits_addend: u32,

    /// Per-request timeout in milliseconds; a request that takes longer counts as an error.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    timeout_ms: u64,

    /// PRNG seed for descriptor values. Each worker derives its own stream from it.
    #[arg(long, default_value_t = 0x5eed_0f_5107)]
    seed: u64,
}

/// What each descriptor of a request looks like. Every shape hits a rule of the example config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// `[app_id=app-N]`: the per-app default (`app_default`).
    App,
    /// `[org=org-N]`: the per-organisation hourly budget (`org_hourly`).
    Org,
    /// `[org=org-M, team=team-N]`: the nested per-team budget (`team_minute`).
    OrgTeam,
    /// `[path=/api/v1/items/N]`: the wildcard path rule (`api_v1_path`).
    Path,
    /// Cycles app, org, org-team, path across a request's descriptors, like a route with
    /// several rate-limit actions.
    Mixed,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::App => "app",
            Shape::Org => "org",
            Shape::OrgTeam => "org-team",
            Shape::Path => "path",
            Shape::Mixed => "mixed",
        }
    }

    /// The concrete shape of descriptor `index` within a request.
    fn at(self, index: usize) -> Shape {
        const CYCLE: [Shape; 4] = [Shape::App, Shape::Org, Shape::OrgTeam, Shape::Path];
        match self {
            Shape::Mixed => CYCLE[index % CYCLE.len()],
            other => other,
        }
    }

    fn entries(self, value: u64) -> Vec<Entry> {
        let entry = |key: &str, value: String| Entry {
            key: key.to_owned(),
            value,
        };
        match self {
            Shape::App | Shape::Mixed => vec![entry("app_id", format!("app-{value}"))],
            Shape::Org => vec![entry("org", format!("org-{value}"))],
            // Sixteen teams per organisation, so the org counters see traffic from several teams.
            Shape::OrgTeam => vec![
                entry("org", format!("org-{}", value / 16)),
                entry("team", format!("team-{value}")),
            ],
            Shape::Path => vec![entry("path", format!("/api/v1/items/{value}"))],
        }
    }
}

/// xorshift64*: tiny, fast and deterministic, which is all key selection needs.
#[derive(Debug, Clone)]
struct XorShift(u64);

impl XorShift {
    /// Seeds through splitmix64 so that neighbouring worker ids give unrelated streams (and a zero
    /// seed, which xorshift cannot leave, is impossible).
    fn new(seed: u64, stream: u64) -> Self {
        let mut z = seed
            .wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        XorShift(if z == 0 { 1 } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (multiply-shift: no division, bias negligible for these `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Rejects anything but a loopback `http://` target and returns it with the host pinned to an IP
/// literal, so no name resolution can send the load somewhere else.
fn loopback_target(raw: &str) -> anyhow::Result<String> {
    let uri: Uri = raw
        .parse()
        .with_context(|| format!("--target {raw:?} is not a URI"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("--target must use http:// (plaintext h2c), not {other}://"),
        None => bail!("--target needs a scheme, e.g. http://127.0.0.1:8081"),
    }
    let authority = uri
        .authority()
        .with_context(|| format!("--target {raw:?} has no host"))?;
    if authority.as_str().contains('@') {
        bail!("--target must not carry user info");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bail!("--target must be a bare address, without a path or query");
    }
    let host = authority.host();
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        literal.parse::<IpAddr>().map_err(|_| {
            anyhow::anyhow!(
                "--target host {host:?} is not loopback (use 127.0.0.1, ::1 or localhost)"
            )
        })?
    };
    let loopback = match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        // Only ::1 itself: an IPv4-mapped address is not loopback to every stack.
        IpAddr::V6(v6) => v6 == Ipv6Addr::LOCALHOST,
    };
    if !loopback {
        bail!("--target host {ip} is not loopback (use 127.0.0.0/8, ::1 or localhost)");
    }
    let port = authority.port_u16().unwrap_or(8081);
    Ok(format!("http://{}", SocketAddr::new(ip, port)))
}

/// Everything a worker needs, fixed before the first request.
#[derive(Debug)]
struct Plan {
    domain: String,
    keys: u64,
    descriptors: usize,
    shape: Shape,
    hits_addend: u32,
    timeout: Duration,
    seed: u64,
    max_requests: u64,
    /// Requests started before this instant are warm-up: sent, but not recorded.
    measure_from: Instant,
    /// No request starts at or after this instant.
    deadline: Instant,
    /// Requests issued so far, warm-up included; enforces `--max-requests` across workers.
    issued: AtomicU64,
}

impl Plan {
    fn request(&self, rng: &mut XorShift) -> RateLimitRequest {
        let descriptors = (0..self.descriptors)
            .map(|i| RateLimitDescriptor {
                entries: self.shape.at(i).entries(rng.below(self.keys)),
                ..Default::default()
            })
            .collect();
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: self.hits_addend,
        }
    }

    /// Claims one request slot; `false` once the run's hard cap is reached.
    fn claim(&self) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    OverLimit,
    Error(&'static str),
}

fn classify(result: Result<Result<RateLimitResponse, tonic::Status>, ()>, sent: usize) -> Outcome {
    match result {
        Err(()) => Outcome::Error("CLIENT_TIMEOUT"),
        Ok(Err(status)) => Outcome::Error(code_name(status.code())),
        // Envoy pairs statuses with descriptors by position; a short list is a protocol bug.
        Ok(Ok(response)) if response.statuses.len() != sent => {
            Outcome::Error("STATUS_COUNT_MISMATCH")
        }
        Ok(Ok(response)) => match Code::try_from(response.overall_code) {
            Ok(Code::Ok) => Outcome::Ok,
            Ok(Code::OverLimit) => Outcome::OverLimit,
            _ => Outcome::Error("OVERALL_CODE_UNKNOWN"),
        },
    }
}

/// The canonical gRPC status names, as `grpcurl` and Envoy's stats print them.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One worker's counts; merged after the run so the hot loop shares nothing but `issued`.
#[derive(Debug)]
struct Tally {
    ok: u64,
    over_limit: u64,
    errors: BTreeMap<&'static str, u64>,
    /// Latency of answered requests (OK or OVER_LIMIT) in microseconds. Errors are left out: a
    /// refused connection answers in microseconds and would drag the percentiles down.
    latency_us: Histogram<u64>,
    /// When this worker's last measured request finished.
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            ok: 0,
            over_limit: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_LATENCY_US, 3)
                .context("latency histogram")?,
            last_done: None,
        })
    }

    fn record(&mut self, outcome: Outcome, latency: Duration, done: Instant) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::OverLimit => self.over_limit += 1,
            Outcome::Error(kind) => *self.errors.entry(kind).or_default() += 1,
        }
        if matches!(outcome, Outcome::Ok | Outcome::OverLimit) {
            let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latency_us.saturating_record(micros.max(1));
        }
        self.last_done = Some(self.last_done.map_or(done, |prev| prev.max(done)));
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.ok += other.ok;
        self.over_limit += other.over_limit;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")?;
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Ok(())
    }

    fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

async fn worker(
    mut client: RateLimitServiceClient<Channel>,
    plan: Arc<Plan>,
    stream: u64,
) -> anyhow::Result<Tally> {
    let mut rng = XorShift::new(plan.seed, stream);
    let mut tally = Tally::new()?;
    // Both bounds are checked before every request: the deadline by time, `claim` by count.
    while Instant::now() < plan.deadline && plan.claim() {
        let request = plan.request(&mut rng);
        let sent = request.descriptors.len();
        let started = Instant::now();
        let result = tokio::time::timeout(plan.timeout, client.should_rate_limit(request))
            .await
            .map(|r| r.map(tonic::Response::into_inner))
            .map_err(|_| ());
        let done = Instant::now();
        let outcome = classify(result, sent);
        if started >= plan.measure_from {
            tally.record(outcome, done - started, done);
        }
        // With no server listening every call fails at once; a short pause keeps the loop from
        // spinning a core on reconnect attempts while the run waits out its deadline.
        if outcome == Outcome::Error("UNAVAILABLE") {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(tally)
}

fn percentile(h: &Histogram<u64>, q: f64) -> serde_json::Value {
    if h.is_empty() {
        serde_json::Value::Null
    } else {
        h.value_at_quantile(q).into()
    }
}

fn report(args: &Args, tally: &Tally, measure_from: Instant) -> serde_json::Value {
    let ok_answers = tally.ok + tally.over_limit;
    let errors = tally.errors_total();
    let requests = ok_answers + errors;
    let duration_s = tally
        .last_done
        .map_or(0.0, |done| (done - measure_from).as_secs_f64());
    let throughput_rps = if duration_s > 0.0 {
        requests as f64 / duration_s
    } else {
        0.0
    };
    let h = &tally.latency_us;
    serde_json::json!({
        "requests": requests,
        "ok": tally.ok,
        "over_limit": tally.over_limit,
        "errors": errors,
        "error_kinds": tally.errors,
        "duration_s": (duration_s * 1000.0).round() / 1000.0,
        "throughput_rps": throughput_rps.round(),
        "latency_us": {
            "p50": percentile(h, 0.50),
            "p90": percentile(h, 0.90),
            "p99": percentile(h, 0.99),
            "p999": percentile(h, 0.999),
            "max": if h.is_empty() { serde_json::Value::Null } else { h.max().into() },
        },
        "connections": args.connections,
        "in_flight": args.in_flight,
        "keys": args.keys,
        "descriptors": args.descriptors,
        "shape": args.shape.name(),
        "hits_addend": args.hits_addend,
        "warmup_s": args.warmup,
    })
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    let target = loopback_target(&args.target)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let endpoint = Endpoint::from_shared(target.clone())
        .context("building the gRPC endpoint")?
        .connect_timeout(timeout)
        .tcp_nodelay(true);

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let deadline = measure_from + Duration::from_secs(args.duration);
    let plan = Arc::new(Plan {
        domain: args.domain.clone(),
        keys: args.keys,
        descriptors: args.descriptors as usize,
        shape: args.shape,
        hits_addend: args.hits_addend,
        timeout,
        seed: args.seed,
        max_requests: args.max_requests,
        measure_from,
        deadline,
        issued: AtomicU64::new(0),
    });

    eprintln!(
        "sluice-load: {target} {}x{} workers, warm-up {}s, measuring {}s (cap {} requests)",
        args.connections, args.in_flight, args.warmup, args.duration, args.max_requests
    );

    let mut workers = tokio::task::JoinSet::new();
    for conn in 0..args.connections {
        // Lazy: a missing server shows up as counted UNAVAILABLE errors, not a startup failure.
        let client = RateLimitServiceClient::new(endpoint.connect_lazy());
        for slot in 0..args.in_flight {
            let stream = u64::from(conn) * u64::from(args.in_flight) + u64::from(slot);
            workers.spawn(worker(client.clone(), Arc::clone(&plan), stream));
        }
    }

    let mut total = Tally::new()?;
    let hard_stop = deadline + timeout + SHUTDOWN_SLACK;
    loop {
        match tokio::time::timeout_at(hard_stop, workers.join_next()).await {
            Ok(Some(joined)) => total.merge(joined.context("worker panicked")??)?,
            Ok(None) => break,
            Err(_) => {
                workers.abort_all();
                bail!("workers still running {SHUTDOWN_SLACK:?} past the deadline; aborted");
            }
        }
    }
    Ok(report(args, &total, measure_from))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        // Usage-style failures (refused target, bad endpoint) exit 2 like clap's own errors, with
        // the cause chain on one line and no backtrace: they are answers, not crashes.
        Err(err) => {
            eprintln!("sluice-load: {err:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_targets_only() {
        for (raw, pinned) in [
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://127.2.3.4:9000/", "http://127.2.3.4:9000"),
            ("http://[::1]:8081", "http://[::1]:8081"),
            ("http://localhost:7000", "http://127.0.0.1:7000"),
            ("http://LOCALHOST", "http://127.0.0.1:8081"),
        ] {
            assert_eq!(loopback_target(raw).expect(raw), pinned);
        }
        for raw in [
            "http://10.0.0.1:8081",
            "http://0.0.0.0:8081",
            "http://[::]:8081",
            "http://[::ffff:127.0.0.1]:8081",
            "http://example.com:8081",
            "http://localhost.example.com:8081",
            "http://127.0.0.1@example.com:8081",
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://127.0.0.1:8081/path",
        ] {
            assert!(loopback_target(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn key_sequence_is_fixed_by_seed_and_stream() {
        let draw = |seed, stream| {
            let mut rng = XorShift::new(seed, stream);
            (0..8).map(|_| rng.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 0), draw(7, 0));
        assert_ne!(draw(7, 0), draw(7, 1));
        assert!(draw(7, 3).iter().all(|&v| v < 1000));
        let mut one = XorShift::new(1, 1);
        assert!((0..100).all(|_| one.below(1) == 0));
    }

    #[test]
    fn mixed_shape_cycles_through_the_example_rules() {
        let keys: Vec<Vec<String>> = (0..5)
            .map(|i| {
                Shape::Mixed
                    .at(i)
                    .entries(42)
                    .into_iter()
                    .map(|e| e.key)
                    .collect()
            })
            .collect();
        assert_eq!(
            keys,
            [
                vec!["app_id"],
                vec!["org"],
                vec!["org", "team"],
                vec!["path"],
                vec!["app_id"],
            ]
        );
    }

    #[test]
    fn classifies_answers_and_failures() {
        let answer = |code: Code, statuses: usize| {
            Ok(Ok(RateLimitResponse {
                overall_code: code as i32,
                statuses: vec![Default::default(); statuses],
                ..Default::default()
            }))
        };
        assert_eq!(classify(answer(Code::Ok, 2), 2), Outcome::Ok);
        assert_eq!(classify(answer(Code::OverLimit, 1), 1), Outcome::OverLimit);
        assert_eq!(
            classify(answer(Code::Ok, 1), 2),
            Outcome::Error("STATUS_COUNT_MISMATCH")
        );
        assert_eq!(
            classify(answer(Code::Unknown, 1), 1),
            Outcome::Error("OVERALL_CODE_UNKNOWN")
        );
        assert_eq!(
            classify(Ok(Err(tonic::Status::unavailable("down"))), 1),
            Outcome::Error("UNAVAILABLE")
        );
        assert_eq!(classify(Err(()), 1), Outcome::Error("CLIENT_TIMEOUT"));
    }
}
