//! `sluice`: serve, `sluice check-config PATH`, or `sluice admin …` (a client of the admin API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_server::config::{self, LoadOptions};
use sluice_server::server::{Listeners, Sluice, shutdown_signal};
use sluice_server::settings::{Backend, LogFormat, ServeArgs, Settings};
use sluice_server::trace;

// Every check allocates a handful of small, short-lived buffers (protobuf messages, HTTP/2
// frames, counter keys); glibc's allocator showed up at ~13% of CPU under load, mimalloc's
// thread-local free lists make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Envoy-compatible external rate-limit service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a rule file or directory and exit: 0 when valid, 1 with every error otherwise.
    CheckConfig {
        /// A YAML file, or a directory of them.
        path: PathBuf,
        /// Merge domains defined in more than one file instead of rejecting them.
        #[arg(long)]
        merge_domains: bool,
        /// Check for this counter store: with `memory`, a notifications `redis_stream` is
        /// refused, as start-up and reloads refuse it [default: not checked].
        #[arg(long)]
        backend: Option<Backend>,
        /// Also validate this `--notifications` file.
        #[arg(long, value_name = "FILE")]
        notifications: Option<PathBuf>,
        /// Explain a request against these rules with empty counters: `--explain DOMAIN
        /// key=value ...` (`+` between descriptors).
        #[arg(long, num_args = 1.., value_name = "DOMAIN KEY=VALUE")]
        explain: Option<Vec<String>>,
    },
    /// Talk to a running Sluice's admin API: counters, resets, top consumers, leases,
    /// runtime overrides and the audit log.
    Admin(Box<sluice_server::admin::cli::AdminArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Some(Command::Admin(args)) => return sluice_server::admin::cli::run(*args),
        other => other,
    };
    if let Some(Command::CheckConfig {
        path,
        merge_domains,
        backend,
        notifications,
        explain,
    }) = command
    {
        let opts = LoadOptions {
            merge_domains,
            memory_store: backend == Some(Backend::Memory),
        };
        return check_config(&path, &opts, notifications.as_deref(), explain);
    }

    let settings = match Settings::resolve(cli.serve, |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&settings);
    for note in &settings.reference_notes {
        tracing::warn!("{note}");
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = settings.worker_threads {
        builder.worker_threads(n);
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(settings));
    // A trace flush that outlived the grace period is left behind, not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    // Inside the runtime: the exporter's gRPC channel lives on it.
    let tracing = match &settings.otlp_endpoint {
        Some(endpoint) => Some(trace::init(endpoint, settings.trace_sample_ratio)?),
        None => None,
    };
    let sluice = Sluice::open(settings.clone()).await?;
    let listeners = Listeners::bind(
        settings.grpc_addr,
        settings.grpc_uds.as_deref(),
        settings.http_addr,
    )
    .await?;
    let signalled = std::sync::Arc::new(std::sync::OnceLock::new());
    let signal = {
        let signalled = std::sync::Arc::clone(&signalled);
        async move {
            shutdown_signal().await;
            let _ = signalled.set(std::time::Instant::now());
        }
    };
    let served = sluice.serve(listeners, signal).await;
    if let Some(tracing) = tracing {
        // Flushing blocks until the exporter has sent the last spans (its own timeout is 5 s),
        // so it gets what is left of the drain window and grace period, and no more: a hung
        // collector must not hold up a shutdown.
        let allowed = settings.drain_window + settings.shutdown_grace;
        let spent = signalled.get().map_or(allowed, |at| at.elapsed());
        let left = allowed
            .saturating_sub(spent)
            .max(std::time::Duration::from_millis(100));
        let flush = tokio::task::spawn_blocking(move || tracing.shutdown());
        if tokio::time::timeout(left, flush).await.is_err() {
            tracing::warn!(waited = ?left, "trace export did not finish within the grace period; the last spans are dropped");
        }
    }
    served?;
    Ok(())
}

fn init_tracing(settings: &Settings) {
    // Validated in `Settings::resolve`.
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// `check-config`: the rules at `path` (and a notifications file) loaded, every error printed;
/// with `explain`, a request explained against them.
fn check_config(
    path: &std::path::Path,
    opts: &LoadOptions,
    notifications: Option<&std::path::Path>,
    explain: Option<Vec<String>>,
) -> ExitCode {
    let mut valid = true;
    if let Some(file) = notifications
        && let Err(errors) = config::load_notifications(file, opts)
    {
        eprintln!("{errors}");
        valid = false;
    }
    match config::load(path, opts) {
        Ok(_) if !valid => ExitCode::FAILURE,
        Ok(rules) if explain.is_some() => explain_offline(rules, explain.unwrap_or_default()),
        Ok(rules) => {
            println!(
                "{}: valid ({} domains from {} files)",
                path.display(),
                rules.domains.len(),
                rules.sources.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config --explain`: the request explained against `rules` with empty counters, printed
/// as JSON; exit 1 when it cannot be explained.
fn explain_offline(rules: sluice_server::config::RuleSet, args: Vec<String>) -> ExitCode {
    use sluice_server::limiter::{LimiterOptions, RateLimiter};
    use sluice_server::storage::backend::memory::MemoryStore;
    let Some((domain, entries)) = args.split_first() else {
        eprintln!("--explain needs a domain");
        return ExitCode::FAILURE;
    };
    let request = sluice_server::admin::cli::explain_body(domain, entries, None)
        .and_then(|body| sluice_server::http::json::parse_request(body.to_string().as_bytes()));
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let clock: std::sync::Arc<dyn sluice_server::clock::Clock> =
        std::sync::Arc::new(sluice_server::clock::SystemClock);
    let store = std::sync::Arc::new(MemoryStore::new(1_000_000, clock));
    let limiter = RateLimiter::new(
        rules,
        store,
        std::sync::Arc::new(sluice_server::metrics::Metrics::new()),
        LimiterOptions::default(),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(limiter.explain(&request)) {
        Ok(explanation) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&explanation).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
