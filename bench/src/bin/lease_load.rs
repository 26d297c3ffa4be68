//! `sluice-lease-load`: acquire-and-release throughput of concurrency leases over gRPC.
//!
//! Each worker repeats: `ShouldRateLimit` with a pool descriptor (acquires a lease; the answer
//! carries its id in `x-sluice-lease-id`), then the same descriptor with a `sluice.lease_id`
//! entry and `is_negative_hits` (releases it). A pair is one acquire and its release. Workers
//! spread over `--connections` HTTP/2 connections and `--keys` pools (one pool: every worker
//! contends on one key). Prints one JSON line: pairs per second, the latency of each half, and
//! refusals (a full pool) and errors.
//!
//! With `--server-pid` the line carries the server's CPU per pair, and with `--redis` (one or
//! more loopback addresses, comma-separated: every Cluster master) Redis's commands and CPU per
//! pair, both over the measured seconds only.
//!
//! Loopback targets only; bounded by `--duration` (≤ 300 s) and `--max-pairs`.

#[path = "../proc_cpu.rs"]
mod proc_cpu;
#[path = "../redis_info.rs"]
mod redis_info;
#[path = "../target.rs"]
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-lease-load",
    about = "Lease acquire + release throughput over gRPC"
)]
struct Args {
    /// The service (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    target: String,
    #[arg(long, default_value = "bench")]
    domain: String,
    /// The descriptor key of the concurrency pool.
    #[arg(long, default_value = "lease_pool")]
    key: String,
    /// Distinct pools (descriptor values) the workers spread over.
    #[arg(long, default_value_t = 64)]
    keys: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Workers per connection.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds first.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Hard cap on pairs, warm-up included.
    #[arg(long, default_value_t = 20_000_000)]
    max_pairs: u64,
    /// The server's process id: its CPU per pair is reported.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Redis's address(es), comma-separated: commands and CPU per pair are reported.
    #[arg(long)]
    redis: Option<String>,
}

fn loopback(target: &str) -> anyhow::Result<()> {
    let host = target
        .strip_prefix("http://")
        .context("--target must be http://HOST:PORT")?
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or_default();
    let ok = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    anyhow::ensure!(ok, "--target {target}: only loopback targets are allowed");
    Ok(())
}

fn descriptor(key: &str, value: &str, lease: Option<&str>) -> RateLimitDescriptor {
    let mut entries = vec![Entry {
        key: key.to_owned(),
        value: value.to_owned(),
    }];
    if let Some(id) = lease {
        entries.push(Entry {
            key: "sluice.lease_id".into(),
            value: id.to_owned(),
        });
    }
    RateLimitDescriptor {
        entries,
        is_negative_hits: lease.is_some(),
        ..Default::default()
    }
}

#[derive(Default)]
struct Tally {
    acquire: Option<Histogram<u64>>,
    release: Option<Histogram<u64>>,
    pairs: u64,
    refused: u64,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds")
}

async fn worker(
    mut client: RateLimitServiceClient<Channel>,
    args: Arc<Args>,
    id: u64,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Tally {
    let mut t = Tally {
        acquire: Some(histogram()),
        release: Some(histogram()),
        ..Tally::default()
    };
    let value = format!("pool-{}", id % args.keys.max(1));
    while !stop.load(Ordering::Relaxed) {
        if sent.fetch_add(1, Ordering::Relaxed) >= args.max_pairs {
            break;
        }
        let started = Instant::now();
        let acquire = RateLimitRequest {
            domain: args.domain.clone(),
            descriptors: vec![descriptor(&args.key, &value, None)],
            hits_addend: 0,
        };
        let answer = match client.should_rate_limit(acquire).await {
            Ok(a) => a.into_inner(),
            Err(_) => {
                t.errors += 1;
                continue;
            }
        };
        let acquired = started.elapsed();
        let Some(lease) = answer
            .response_headers_to_add
            .iter()
            .find(|h| h.key == "x-sluice-lease-id")
            .map(|h| h.value.clone())
        else {
            t.refused += 1;
            continue;
        };
        let released_at = Instant::now();
        let release = RateLimitRequest {
            domain: args.domain.clone(),
            descriptors: vec![descriptor(&args.key, &value, Some(&lease))],
            hits_addend: 0,
        };
        if client.should_rate_limit(release).await.is_err() {
            t.errors += 1;
            continue;
        }
        let released = released_at.elapsed();
        if measuring.load(Ordering::Relaxed) {
            t.pairs += 1;
            if let Some(h) = t.acquire.as_mut() {
                let _ = h.record(acquired.as_micros().max(1) as u64);
            }
            if let Some(h) = t.release.as_mut() {
                let _ = h.record(released.as_micros().max(1) as u64);
            }
        }
    }
    t
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    loopback(&args.target)?;
    anyhow::ensure!(
        args.duration >= 1 && args.duration <= 300,
        "--duration: 1..=300"
    );
    anyhow::ensure!(args.warmup <= 60, "--warmup: at most 60");
    anyhow::ensure!(
        args.connections >= 1 && args.connections <= 256,
        "--connections: 1..=256"
    );
    anyhow::ensure!(
        args.in_flight >= 1 && args.in_flight <= 1024,
        "--in-flight: 1..=1024"
    );
    let args = Arc::new(args);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let channel = Endpoint::from_shared(args.target.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.target))?;
        for w in 0..args.in_flight {
            let id = (c * args.in_flight + w) as u64;
            tasks.push(tokio::spawn(worker(
                RateLimitServiceClient::new(channel.clone()),
                Arc::clone(&args),
                id,
                Arc::clone(&measuring),
                Arc::clone(&stop),
                Arc::clone(&sent),
            )));
        }
    }
    let redis = match &args.redis {
        Some(raw) => redis_info::parse_addrs(raw)?,
        None => Vec::new(),
    };
    let server_cpu = || {
        args.server_pid
            .map(|p| proc_cpu::process_cpu(Some(p)))
            .transpose()
    };
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let (cpu_before, redis_before) = (server_cpu()?, redis_info::mark_all(&redis).await?);
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let (cpu_after, redis_after) = (server_cpu()?, redis_info::mark_all(&redis).await?);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut total = Tally {
        acquire: Some(histogram()),
        release: Some(histogram()),
        ..Tally::default()
    };
    for t in tasks {
        let t = t.await?;
        total.pairs += t.pairs;
        total.refused += t.refused;
        total.errors += t.errors;
        for (into, from) in [
            (&mut total.acquire, t.acquire),
            (&mut total.release, t.release),
        ] {
            if let (Some(into), Some(from)) = (into.as_mut(), from) {
                let _ = into.add(from);
            }
        }
    }
    let quantile =
        |h: &Option<Histogram<u64>>, q: f64| h.as_ref().map_or(0, |h| h.value_at_quantile(q));
    let line = serde_json::json!({
        "workers": args.connections * args.in_flight,
        "pools": args.keys,
        "seconds": elapsed.as_secs_f64(),
        "pairs": total.pairs,
        "pairs_per_sec": total.pairs as f64 / elapsed.as_secs_f64(),
        "checks_per_sec": 2.0 * total.pairs as f64 / elapsed.as_secs_f64(),
        "acquire_us": {"p50": quantile(&total.acquire, 0.5), "p99": quantile(&total.acquire, 0.99)},
        "release_us": {"p50": quantile(&total.release, 0.5), "p99": quantile(&total.release, 0.99)},
        "refused": total.refused,
        "errors": total.errors,
        "server_cpu_us_per_pair": cpu_before.zip(cpu_after).map(|(a, b)| {
            let us = b.saturating_sub(a).as_secs_f64() * 1e6 / total.pairs.max(1) as f64;
            (us * 100.0).round() / 100.0
        }),
        "redis": (!redis.is_empty())
            .then(|| redis_info::report_nodes(&redis, &redis_before, &redis_after, total.pairs)),
    });
    println!("{line}");
    Ok(())
}
