//! `sluice-load`: a load generator for Envoy's `ShouldRateLimit`, over gRPC or the reference's
//! `POST /json`, in a closed loop ([`closed`]) or an open loop at a fixed rate ([`open`]).
//!
//! Modules: [`args`] (flags), [`target`] (the loopback guard), [`workload`] (keys, descriptors,
//! encoding), [`client`] (transports and answer classification), [`tally`] (counts, percentiles,
//! CPU time), [`redis_info`] (Redis commands and CPU per decision). The result is one JSON line on stdout; everything else goes to stderr.

mod args;
mod client;
mod closed;
// The same socket adapter as Sluice's gRPC listener: one source for both.
#[path = "../../server/src/grpc/coalesce.rs"]
mod coalesce;
mod open;
mod proc_cpu;
mod redis_info;
mod tally;
mod target;
mod workload;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::args::{Args, Mode, Shape, Transport};
use crate::client::{Answer, Client};
use crate::proc_cpu::process_cpu;
use crate::tally::{Tally, percentiles};
use crate::workload::{Payload, Workload};

/// Slack on top of the run's own bounds before the whole run is abandoned. Each request is
/// already bounded by `--timeout-ms`, so this only fires if the runtime itself wedges.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Everything the loops need, fixed before the first request.
pub struct Plan {
    pub workload: Workload,
    pub timeout: Duration,
    pub seed: u64,
    pub max_requests: u64,
    pub allow_empty: bool,
    pub max_outstanding: u64,
    /// Open loop: the pacer's least sleep past a request's due time (`--send-tick-us`).
    pub send_tick: Duration,
    /// The schedule's origin (open loop) and the start of the warm-up.
    pub start: Instant,
    /// Requests started (closed loop) or due (open loop) before this are warm-up: sent, not
    /// recorded.
    pub measure_from: Instant,
    /// No request starts at or after this instant.
    pub deadline: Instant,
    /// Requests issued so far, warm-up included; enforces `--max-requests`.
    issued: AtomicU64,
    /// Open loop: requests sent and not answered yet.
    pub outstanding: AtomicU64,
}

impl Plan {
    /// Claims one request slot; `false` once the run's hard cap is reached.
    pub fn claim(&self) -> bool {
        self.issued.fetch_add(1, Ordering::Relaxed) < self.max_requests
    }

    /// Sends one request under the per-request timeout.
    pub async fn send(&self, client: &Client, payload: Payload, sent: usize) -> Answer {
        match tokio::time::timeout(self.timeout, client.send(payload, sent, self.allow_empty)).await
        {
            Ok(answer) => answer,
            Err(_) => Answer {
                outcome: client::Outcome::Error("CLIENT_TIMEOUT"),
                empty_statuses: false,
            },
        }
    }
}

/// CPU time of the server and of this process, and Redis's counters, at one instant.
struct CpuMark {
    server: Option<Duration>,
    client: Duration,
    /// One per `--redis` address, in the order given.
    redis: Option<Vec<redis_info::RedisMark>>,
}

async fn cpu_mark(server_pid: Option<u32>, redis: &[SocketAddr]) -> anyhow::Result<CpuMark> {
    let redis = if redis.is_empty() {
        None
    } else {
        Some(redis_info::mark_all(redis).await?)
    };
    Ok(CpuMark {
        server: server_pid.map(|p| process_cpu(Some(p))).transpose()?,
        client: process_cpu(None)?,
        redis,
    })
}

fn report(
    args: &Args,
    tally: &Tally,
    measure_from: Instant,
    cpu: Option<(CpuMark, CpuMark)>,
    redis_addrs: &[SocketAddr],
) -> serde_json::Value {
    let decisions = tally.decisions();
    let errors = tally.errors_total();
    let requests = decisions + errors;
    let duration_s = tally
        .last_done
        .map_or(0.0, |done| (done - measure_from).as_secs_f64());
    let per_s = |n: u64| {
        if duration_s > 0.0 {
            (n as f64 / duration_s).round()
        } else {
            0.0
        }
    };
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let (server_cpu_s, client_cpu_s) = match &cpu {
        Some((a, b)) => (
            a.server
                .zip(b.server)
                .map(|(a, b)| b.saturating_sub(a).as_secs_f64()),
            Some((b.client.saturating_sub(a.client)).as_secs_f64()),
        ),
        None => (None, None),
    };
    let per_decision_us = |cpu: Option<f64>| {
        cpu.filter(|_| decisions > 0)
            .map(|s| round(s * 1e6 / decisions as f64, 2))
    };
    let redis = match &cpu {
        Some((CpuMark { redis: Some(a), .. }, CpuMark { redis: Some(b), .. })) => {
            redis_info::report_nodes(redis_addrs, a, b, decisions)
        }
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "transport": args.transport.name(),
        "mode": args.mode.name(),
        "target_rate_rps": args.rate,
        "send_tick_us": (args.mode == Mode::Open).then_some(args.send_tick_us),
        "requests": requests,
        "ok": tally.ok,
        "over_limit": tally.over_limit,
        "errors": errors,
        "error_kinds": tally.errors,
        "empty_statuses": tally.empty_statuses,
        "duration_s": round(duration_s, 3),
        "throughput_rps": per_s(requests),
        "decisions_per_s": per_s(decisions),
        "latency_us": percentiles(&tally.latency_us),
        "send_lag_us": if args.mode == Mode::Open {
            percentiles(&tally.send_lag_us)
        } else {
            serde_json::Value::Null
        },
        "server_cpu_s": server_cpu_s.map(|s| round(s, 3)),
        "server_cpu_us_per_decision": per_decision_us(server_cpu_s),
        "redis": redis,
        "client_cpu_s": client_cpu_s.map(|s| round(s, 3)),
        "client_cpu_us_per_decision": per_decision_us(client_cpu_s),
        "connections": args.connections,
        "coalesce_writes": args.transport == Transport::Grpc && args.coalesce_writes && args.tls_ca.is_none(),
        "tls": args.tls_ca.is_some(),
        "reconnect": args.reconnect,
        "in_flight": if args.mode == Mode::Closed { Some(args.in_flight) } else { None },
        "domain": args.domain,
        "keys": args.keys,
        "key_dist": args.key_dist.name(),
        "zipf_s": if args.key_dist == args::KeyDist::Zipf { Some(args.zipf_s) } else { None },
        "descriptors": args.descriptors,
        "shape": args.shape.name(),
        "entries": if args.shape == Shape::Generic { Some(args.entries) } else { None },
        "hits_addend": args.hits_addend,
        "warmup_s": args.warmup,
    })
}

async fn run(args: &Args) -> anyhow::Result<serde_json::Value> {
    args.validate()?;
    let default_port = match args.transport {
        Transport::Grpc => 8081,
        Transport::Json => 8080,
    };
    let addr = target::loopback_target(args.target_or_default(), default_port)?;
    let timeout = Duration::from_millis(args.timeout_ms);
    let connect = || match args.transport {
        Transport::Grpc => Client::grpc(
            addr,
            timeout,
            args.coalesce_writes,
            &client::Connect {
                tls: args
                    .tls_ca
                    .as_deref()
                    .map(|ca| (ca, args.tls_name.as_str())),
                reconnect: args.reconnect,
            },
        ),
        Transport::Json => Ok(Client::json(addr)),
    };

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let deadline = measure_from + Duration::from_secs(args.duration);
    let plan = Arc::new(Plan {
        workload: Workload::from_args(args),
        timeout,
        seed: args.seed,
        max_requests: args.max_requests,
        allow_empty: args.allow_empty_statuses,
        max_outstanding: args.max_outstanding,
        send_tick: Duration::from_micros(args.send_tick_us),
        start,
        measure_from,
        deadline,
        issued: AtomicU64::new(0),
        outstanding: AtomicU64::new(0),
    });
    let shape = match (args.mode, args.rate) {
        (Mode::Open, Some(rate)) => format!(
            "open loop at {rate}/s over {} connections",
            args.connections
        ),
        _ => format!(
            "closed loop, {}x{} workers",
            args.connections, args.in_flight
        ),
    };
    eprintln!(
        "sluice-load: {} {addr}, {shape}, warm-up {}s, measuring {}s (cap {} requests)",
        args.transport.name(),
        args.warmup,
        args.duration,
        args.max_requests
    );
    // Server CPU is read when measuring starts and again when the last answer is in.
    let server_pid = args.server_pid;
    if let Some(pid) = server_pid {
        process_cpu(Some(pid)).with_context(|| format!("--server-pid {pid}"))?;
    }
    let redis: Arc<[SocketAddr]> = match args.redis.as_deref() {
        Some(raw) => redis_info::parse_addrs(raw)?.into(),
        None => Arc::new([]),
    };
    redis_info::mark_all(&redis).await?;
    let first_mark = tokio::spawn({
        let redis = Arc::clone(&redis);
        async move {
            tokio::time::sleep_until(measure_from).await;
            cpu_mark(server_pid, &redis).await
        }
    });

    let mut workers = JoinSet::new();
    let mut pacer = None;
    match (args.mode, args.rate) {
        (Mode::Open, Some(rate)) => {
            let mut senders = Vec::new();
            for _ in 0..args.connections {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                senders.push(tx);
                workers.spawn(open::lane(connect()?, Arc::clone(&plan), rx));
            }
            pacer = Some(open::spawn_pacer(Arc::clone(&plan), rate, senders));
        }
        _ => {
            for conn in 0..args.connections {
                let client = connect()?;
                for slot in 0..args.in_flight {
                    let stream = u64::from(conn) * u64::from(args.in_flight) + u64::from(slot);
                    workers.spawn(closed::worker(client.clone(), Arc::clone(&plan), stream));
                }
            }
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
    if let Some(pacer) = pacer {
        let backlog = pacer
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))??;
        total.merge(backlog)?;
    }
    let cpu = if Instant::now() > measure_from {
        let first = first_mark.await.context("CPU sampler")??;
        Some((first, cpu_mark(server_pid, &redis).await?))
    } else {
        first_mark.abort();
        None
    };
    Ok(report(args, &total, measure_from, cpu, &redis))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if args.threads > 0 {
        builder.worker_threads(args.threads as usize);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        // Usage-style failures (refused target, bad flags) exit 2 like clap's own errors, with
        // the cause chain on one line and no backtrace: they are answers, not crashes.
        Err(err) => {
            eprintln!("sluice-load: {err:#}");
            ExitCode::from(2)
        }
    }
}
