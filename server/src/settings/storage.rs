//! Settings of the shared store: how Redis is deployed and reached (type, credentials, TLS), and
//! how checks are answered when it misbehaves (time budget, breaker, failure policy, local share,
//! L1 cache). Flags and `SLUICE_*` variables, then the reference's names where it has one.

use std::path::PathBuf;
use std::time::Duration;

use super::SettingsError;
use super::reference::{go_duration, parse_bool, parse_go_duration, whole_number};
use crate::storage::backend::redis::batcher::MAX_REQUESTS;
use crate::storage::backend::redis::{Auth, Pipeline, RedisType};
use crate::storage::layer::failover::{DenyWith, FailureMode};
use crate::storage::layer::local_share::Share;

/// Flags of the shared store, flattened into [`super::ServeArgs`].
#[derive(Debug, Default, clap::Args)]
pub struct StorageArgs {
    /// Redis deployment: single, sentinel (address `master_name,host:port,…`) or cluster
    /// (address `host:port,…`) [default: single].
    #[arg(long, env = "SLUICE_REDIS_TYPE")]
    pub redis_type: Option<String>,
    /// Redis credentials, `password` or `user:password`, for addresses without them.
    #[arg(long, env = "SLUICE_REDIS_AUTH")]
    pub redis_auth: Option<String>,
    /// Credentials of the Sentinel processes themselves, `password` or `user:password`.
    #[arg(long, env = "SLUICE_REDIS_SENTINEL_AUTH")]
    pub redis_sentinel_auth: Option<String>,
    /// Connect to Redis over TLS (as `rediss://` does).
    #[arg(long, env = "SLUICE_REDIS_TLS", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_tls: Option<bool>,
    /// PEM bundle of the CAs that sign Redis's certificates [default: the system's roots].
    #[arg(long, env = "SLUICE_REDIS_TLS_CA")]
    pub redis_tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS.
    #[arg(long, env = "SLUICE_REDIS_TLS_CERT")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long, env = "SLUICE_REDIS_TLS_KEY")]
    pub redis_tls_key: Option<PathBuf>,
    /// The longest a check waits for the shared store before its failure policy answers
    /// [default: 10].
    #[arg(long, env = "SLUICE_STORE_BUDGET_MS")]
    pub store_budget_ms: Option<u64>,
    /// Failure policy of domains without `failure_mode`: allow, deny or local [default: deny].
    #[arg(long, env = "SLUICE_FAILURE_MODE")]
    pub failure_mode: Option<String>,
    /// How `deny` answers: unavailable (gRPC UNAVAILABLE, so Envoy's failure_mode_deny decides)
    /// or over_limit [default: unavailable].
    #[arg(long, env = "SLUICE_DENY_WITH")]
    pub deny_with: Option<String>,
    /// Sluice replicas sharing the store: under `local`, each enforces 1/N of every limit; with
    /// --local-batch, each admits at most 1/N of a limit between flushes [default: 1].
    #[arg(long, env = "SLUICE_REPLICAS")]
    pub replicas: Option<u32>,
    /// This replica's share of every limit under `local`, in (0, 1] (instead of 1/replicas).
    #[arg(long, env = "SLUICE_LOCAL_SHARE")]
    pub local_share: Option<f64>,
    /// Store failures in a row that open the circuit breaker [default: 5].
    #[arg(long, env = "SLUICE_BREAKER_FAILURES")]
    pub breaker_failures: Option<u32>,
    /// How long the breaker first stays open before a trial call [default: 100].
    #[arg(long, env = "SLUICE_BREAKER_OPEN_MS")]
    pub breaker_open_ms: Option<u64>,
    /// Counters the L1 over-limit cache remembers; 0 turns it off [default: 100000].
    #[arg(long, env = "SLUICE_L1_ENTRIES")]
    pub l1_entries: Option<usize>,
    /// Decide fixed windows from a local view and flush hits to Redis every INTERVAL (`200ms`,
    /// `1s`; a bare number is milliseconds; `off` or 0 turns it off); each replica admits at most
    /// its --replicas share between flushes [default: off; the flag alone means 200ms].
    #[arg(long, env = "SLUICE_LOCAL_BATCH", num_args = 0..=1, default_missing_value = "200ms", value_name = "INTERVAL")]
    pub local_batch: Option<String>,
    /// Let a Redis call that could leave at once wait this long (`150us`, `1ms`) for more checks
    /// to share it, trading that much latency for Redis CPU below saturation; shorter than
    /// --store-budget-ms [default: 0, no wait].
    #[arg(long, env = "SLUICE_REDIS_PIPELINE_WINDOW", value_name = "DURATION")]
    pub redis_pipeline_window: Option<String>,
    /// A waiting call leaves as soon as this many checks share it; 0 or more than 64 mean 64
    /// [default: 64].
    #[arg(long, env = "SLUICE_REDIS_PIPELINE_LIMIT")]
    pub redis_pipeline_limit: Option<usize>,
}

/// The shared store's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageSettings {
    pub redis_type: RedisType,
    /// Credentials for addresses without them (single: already in the URL).
    pub redis_auth: Option<Auth>,
    pub sentinel_auth: Option<Auth>,
    pub tls: bool,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub budget: Duration,
    pub failure_mode: FailureMode,
    pub deny_with: DenyWith,
    pub share: Share,
    pub breaker_failures: u32,
    pub breaker_open: Duration,
    pub l1_entries: usize,
    /// The flush interval of `--local-batch`; `None`: off.
    pub local_batch: Option<Duration>,
    /// `--redis-pipeline-window` and `--redis-pipeline-limit`.
    pub pipeline: Pipeline,
}

/// The reference's `LOCAL_CACHE_SIZE_IN_BYTES` counts bytes; an L1 entry takes about this many.
pub const L1_ENTRY_BYTES: usize = 128;

pub(super) fn resolve(
    args: StorageArgs,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<StorageSettings, SettingsError> {
    let redis_type = match args.redis_type {
        Some(t) => RedisType::parse(&t).ok_or_else(|| {
            SettingsError::Invalid(format!(
                "--redis-type {t:?}: expected single, sentinel or cluster"
            ))
        })?,
        None => match get("REDIS_TYPE") {
            Some(t) => RedisType::parse(&t).ok_or(SettingsError::Env {
                name: "REDIS_TYPE",
                value: t,
                reason: "expected single, sentinel or cluster".into(),
            })?,
            None => RedisType::Single,
        },
    };
    let tls = match args.redis_tls {
        Some(b) => b,
        None => match get("REDIS_TLS") {
            Some(v) => parse_bool("REDIS_TLS", &v)?,
            None => false,
        },
    };
    if let Some(v) = get("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION")
        && parse_bool("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION", &v)?
    {
        return Err(SettingsError::Env {
            name: "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
            value: v,
            reason: "Sluice always checks Redis's certificate against the host it connects to; \
                     connect by a name the certificate carries"
                .into(),
        });
    }
    let tls_cert = args
        .redis_tls_cert
        .or_else(|| get("REDIS_TLS_CLIENT_CERT").map(PathBuf::from));
    let tls_key = args
        .redis_tls_key
        .or_else(|| get("REDIS_TLS_CLIENT_KEY").map(PathBuf::from));
    if tls_cert.is_some() != tls_key.is_some() {
        return Err(SettingsError::Invalid(
            "a TLS client certificate needs its key and a key its certificate \
             (--redis-tls-cert with --redis-tls-key)"
                .into(),
        ));
    }
    let failure_mode = match args.failure_mode {
        Some(m) => FailureMode::parse(&m).ok_or_else(|| {
            SettingsError::Invalid(format!(
                "--failure-mode {m:?}: expected allow, deny or local"
            ))
        })?,
        None => FailureMode::Deny,
    };
    let deny_with = match args.deny_with.as_deref().map(str::to_ascii_lowercase) {
        None => DenyWith::Unavailable,
        Some(v) if v == "unavailable" => DenyWith::Unavailable,
        Some(v) if v == "over_limit" || v == "over-limit" => DenyWith::OverLimit,
        Some(v) => {
            return Err(SettingsError::Invalid(format!(
                "--deny-with {v:?}: expected unavailable or over_limit"
            )));
        }
    };
    let share = match (args.local_share, args.replicas) {
        (Some(f), _) => Share::new(f).map_err(SettingsError::Invalid)?,
        (None, Some(0)) => {
            return Err(SettingsError::Invalid(
                "--replicas must be at least 1".into(),
            ));
        }
        (None, n) => Share::of_replicas(n.unwrap_or(1)),
    };
    let budget = Duration::from_millis(args.store_budget_ms.unwrap_or(10));
    if budget.is_zero() {
        return Err(SettingsError::Invalid(
            "--store-budget-ms must be at least 1".into(),
        ));
    }
    let l1_entries = match args.l1_entries {
        Some(n) => n,
        None => whole_number(get, "LOCAL_CACHE_SIZE_IN_BYTES")?
            .map_or(100_000, |bytes| bytes / L1_ENTRY_BYTES),
    };
    let pipeline = pipeline_window(
        args.redis_pipeline_window.as_deref(),
        args.redis_pipeline_limit,
        get,
        budget,
    )?;
    let local_batch = match args.local_batch {
        None => None,
        Some(text) => parse_interval(&text).map_err(|reason| {
            SettingsError::Invalid(format!("--local-batch {text:?}: {reason}"))
        })?,
    };
    Ok(StorageSettings {
        redis_type,
        redis_auth: args
            .redis_auth
            .or_else(|| get("REDIS_AUTH"))
            .map(|a| Auth::parse(&a)),
        sentinel_auth: args
            .redis_sentinel_auth
            .or_else(|| get("REDIS_SENTINEL_AUTH"))
            .map(|a| Auth::parse(&a)),
        tls,
        tls_ca: args
            .redis_tls_ca
            .or_else(|| get("REDIS_TLS_CACERT").map(PathBuf::from)),
        tls_cert,
        tls_key,
        budget,
        failure_mode,
        deny_with,
        share,
        breaker_failures: args.breaker_failures.unwrap_or(5).max(1),
        breaker_open: Duration::from_millis(args.breaker_open_ms.unwrap_or(100).max(1)),
        l1_entries,
        local_batch,
        pipeline,
    })
}

/// The batcher's window: the flag, else the reference's `REDIS_PIPELINE_WINDOW` and
/// `REDIS_PIPELINE_LIMIT`. A window as long as the store budget would hand every check that waits
/// in it to the failure policy, so it must be shorter.
fn pipeline_window(
    window: Option<&str>,
    limit: Option<usize>,
    get: &impl Fn(&'static str) -> Option<String>,
    budget: Duration,
) -> Result<Pipeline, SettingsError> {
    let (window, named) = match window {
        Some(text) => (
            parse_go_duration(text.trim()).map_err(|reason| {
                SettingsError::Invalid(format!("--redis-pipeline-window {text:?}: {reason}"))
            })?,
            "--redis-pipeline-window",
        ),
        None => (
            go_duration(get, "REDIS_PIPELINE_WINDOW")?.unwrap_or_default(),
            "REDIS_PIPELINE_WINDOW",
        ),
    };
    if window >= budget {
        return Err(SettingsError::Invalid(format!(
            "{named} {window:?} must be shorter than the store budget ({budget:?}, \
             --store-budget-ms): a check waits at most the budget for Redis"
        )));
    }
    let limit = match limit {
        Some(n) => n,
        None => whole_number(get, "REDIS_PIPELINE_LIMIT")?.unwrap_or(0),
    };
    Ok(Pipeline {
        window,
        limit: if limit == 0 {
            MAX_REQUESTS
        } else {
            limit.min(MAX_REQUESTS)
        },
    })
}

/// `200ms`, `1s`, a bare number of milliseconds, or `off` / 0 (`None`). Between 10 ms and 60 s:
/// shorter costs a store call per check again, longer lets the views age.
fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let t = text.trim().to_ascii_lowercase();
    if t == "off" || t == "false" || t == "0" {
        return Ok(None);
    }
    let (digits, scale) = match t.strip_suffix("ms") {
        Some(d) => (d, 1),
        None => match t.strip_suffix('s') {
            Some(d) => (d, 1000),
            None => (t.as_str(), 1),
        },
    };
    let ms = digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or("expected an interval such as 200ms or 1s, or off")?;
    if !(10..=60_000).contains(&ms) {
        return Err("the interval must be between 10ms and 60s".into());
    }
    Ok(Some(Duration::from_millis(ms)))
}
