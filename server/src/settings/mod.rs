//! Process settings: flags, `SLUICE_*` environment variables, and the environment names of
//! envoyproxy/ratelimit, read once at start-up.
//!
//! Precedence for each setting: the flag, then its `SLUICE_*` variable (clap reads both), then the
//! reference service's variable, then the default. `docs/settings.md` has the full table.
//!
//! [`args`] declares the flags, `resolve` (here) applies the precedence, and [`reference`](mod@reference) reads
//! the reference's environment names.
//!
//! Boundary: turns flags into the typed settings of lower modules ([`crate::listener::Limits`],
//! [`crate::limiter::RequestBounds`], storage and metrics settings); it starts nothing and imports
//! no listener, adapter or start-up code.

mod admin;
pub mod args;
pub mod compat;
mod headers;
pub mod listener;
mod reference;
pub mod rules;
pub mod stats;
pub mod storage;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use admin::AdminSettings;
pub use args::{Backend, LogFormat, OverrideBackend, ServeArgs};
use reference::{host_port, log_level, parse_bool, reference_redis_url};
pub use rules::{RuleSource, XdsArgs};
pub use stats::{StatsArgs, StatsSettings, Statsd};
pub use storage::{StorageArgs, StorageSettings};
pub use tls::{TlsArgs, TlsSettings};

use crate::limiter::{HeaderStyle, RequestBounds};
use crate::listener::Limits;
use crate::storage::backend::redis::{RedisTarget, RedisType, TargetOptions};

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the rules come from: files or an xDS server.
    pub rules: RuleSource,
    pub grpc_addr: SocketAddr,
    /// gRPC on a Unix domain socket instead of `grpc_addr`.
    pub grpc_uds: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub backend: Backend,
    pub redis_url: Option<String>,
    pub redis_pool_size: usize,
    pub redis_timeout: Duration,
    pub charge_rejected: bool,
    pub merge_domains: bool,
    pub shadow_mode: bool,
    pub quota_mode: bool,
    pub watch: bool,
    pub key_prefix: String,
    pub near_limit_ratio: f64,
    pub header_style: HeaderStyle,
    pub hash_values_key_file: Option<PathBuf>,
    pub max_counters: usize,
    /// Series each per-rule metric family may hold.
    pub max_metric_series: usize,
    pub bounds: RequestBounds,
    pub shutdown_grace: Duration,
    /// Between SIGTERM and closing the listeners: not ready, still serving.
    pub drain_window: Duration,
    /// Every check's explanation in a debug-level log line.
    pub explain_log: bool,
    /// Whether readiness holds while the counter store cannot answer.
    pub ready_when_store_down: bool,
    /// What `/auth/{domain}` answers an over-limit request with (401 or 403).
    pub auth_over_limit_status: u16,
    /// Where to export trace spans (OTLP/gRPC); `None` turns tracing off.
    pub otlp_endpoint: Option<String>,
    /// Sampling ratio for checks without a sampled caller trace.
    pub trace_sample_ratio: f64,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `None`: one per CPU, the runtime's default.
    pub worker_threads: Option<usize>,
    /// The admin API, runtime overrides and the lease API's bounds.
    pub admin: AdminSettings,
    /// The shared store's deployment and failure handling.
    pub store: StorageSettings,
    /// Both listeners' bounds on connections, streams, sizes and time.
    pub listener: Limits,
    /// TLS on each listener.
    pub tls: TlsSettings,
    /// The reference's stats: the statsd push and its Prometheus names.
    pub stats: StatsSettings,
    /// The `--notifications` file: sinks for every domain's notifications.
    pub notifications: Option<PathBuf>,
    /// The reference's settings that are set but mean nothing here, each with why: logged once
    /// at start-up.
    pub reference_notes: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SettingsError {
    #[error("{name}={value:?}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Resolve flags against the environment (`env` looks a variable up; tests pass a map).
    pub fn resolve(
        args: ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let get = |name: &'static str| env(name).filter(|v| !v.is_empty());
        let parse_env = |name: &'static str| -> Result<Option<bool>, SettingsError> {
            get(name).map(|v| parse_bool(name, &v)).transpose()
        };

        let rules = rules::resolve(args.config, args.xds, &get)?;

        let grpc_addr = match args.grpc_addr {
            Some(a) => a,
            None => host_port(&get, "GRPC_HOST", "GRPC_PORT", 8081)?,
        };
        let http_addr = match args.http_addr {
            Some(a) => a,
            None => host_port(&get, "HOST", "PORT", 8080)?,
        };

        let backend = match args.backend {
            Some(b) => b,
            None => match get("BACKEND_TYPE").as_deref() {
                None | Some("memory") => Backend::Memory,
                Some("redis") => Backend::Redis,
                Some(other) => {
                    return Err(SettingsError::Env {
                        name: "BACKEND_TYPE",
                        value: other.into(),
                        reason: "Sluice supports `redis` and `memory`".into(),
                    });
                }
            },
        };

        let store = storage::resolve(args.store, &get)?;
        let redis_url = match args.redis_url {
            Some(u) => Some(u),
            // The reference's `host:port` with `REDIS_AUTH` and `REDIS_TLS` for one server; the
            // lists of Sentinel and Cluster as given.
            None => get("REDIS_URL").map(|u| match store.redis_type {
                RedisType::Single => reference_redis_url(&u, get("REDIS_AUTH"), &get),
                _ => u,
            }),
        };
        if let Some(url) = &redis_url {
            RedisTarget::parse(store.redis_type, url, TargetOptions::default())
                .map_err(SettingsError::Invalid)?;
        }
        let key_prefix = args
            .key_prefix
            .or_else(|| get("CACHE_KEY_PREFIX"))
            .unwrap_or_default();
        if store.redis_type == RedisType::Cluster && key_prefix.contains(['{', '}']) {
            return Err(SettingsError::Invalid(format!(
                "key prefix {key_prefix:?}: on Redis Cluster a prefix must not contain braces, \
                 which would put every counter in one hash slot"
            )));
        }
        if backend == Backend::Memory && store.local_batch.is_some() {
            return Err(SettingsError::Invalid(
                "--local-batch batches hits to a shared store: it needs --backend redis".into(),
            ));
        }
        if backend == Backend::Redis && redis_url.is_none() {
            return Err(SettingsError::Invalid(
                "the redis backend needs --redis-url (or SLUICE_REDIS_URL / REDIS_URL)".into(),
            ));
        }

        let near_limit_ratio = match args.near_limit_ratio {
            Some(r) => r,
            None => match get("NEAR_LIMIT_RATIO") {
                Some(v) => v.parse::<f64>().map_err(|_| SettingsError::Env {
                    name: "NEAR_LIMIT_RATIO",
                    value: v.clone(),
                    reason: "not a number".into(),
                })?,
                None => 0.8,
            },
        };
        if !(0.0..=1.0).contains(&near_limit_ratio) {
            return Err(SettingsError::Invalid(format!(
                "near-limit ratio {near_limit_ratio} is not between 0 and 1"
            )));
        }

        let header_style = headers::resolve(
            headers::Args {
                style: args.response_headers,
                limit: args.header_limit,
                remaining: args.header_remaining,
                reset: args.header_reset,
            },
            &get,
        )?;

        let bounds = RequestBounds {
            max_descriptors: args
                .max_descriptors
                .unwrap_or(RequestBounds::default().max_descriptors),
            max_entries: args
                .max_entries
                .unwrap_or(RequestBounds::default().max_entries),
            max_bytes: args
                .max_request_bytes
                .unwrap_or(RequestBounds::default().max_bytes),
        };
        if bounds.max_descriptors == 0 || bounds.max_entries == 0 || bounds.max_bytes == 0 {
            return Err(SettingsError::Invalid(
                "request bounds must be at least 1".into(),
            ));
        }

        let listener = listener::resolve(args.listener, bounds.max_message_bytes(), &get)?;
        let tls = tls::resolve(args.tls, &get)?;
        let stats = stats::resolve(args.stats, &get)?;

        let auth_over_limit_status = args.auth_over_limit_status.unwrap_or(403);
        if !matches!(auth_over_limit_status, 401 | 403) {
            return Err(SettingsError::Invalid(format!(
                "--auth-over-limit-status {auth_over_limit_status}: NGINX's auth_request passes \
                 on only 401 and 403"
            )));
        }

        // OpenTelemetry's own variables, as its SDKs read them, after Sluice's.
        // The reference exports only with TRACING_ENABLED=true; Sluice's flag needs no switch.
        let reference_off = parse_env("TRACING_ENABLED")? == Some(false);
        let otlp_endpoint = args.otlp_endpoint.or_else(|| {
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .filter(|_| !reference_off)
        });
        let reference_notes = compat::review(&get, otlp_endpoint.is_some())?;
        let trace_sample_ratio = match args.trace_sample_ratio {
            Some(r) => r,
            None => reference::sample_rate(&get)?.unwrap_or(0.01),
        };
        if !(0.0..=1.0).contains(&trace_sample_ratio) {
            return Err(SettingsError::Invalid(format!(
                "trace sample ratio {trace_sample_ratio} is not between 0 and 1"
            )));
        }

        let log_format = match args.log_format {
            Some(f) => f,
            None => match get("LOG_FORMAT").map(|v| v.to_ascii_lowercase()).as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(SettingsError::Env {
                        name: "LOG_FORMAT",
                        value: other.into(),
                        reason: "expected text or json".into(),
                    });
                }
            },
        };

        let admin = AdminSettings::resolve(
            admin::Args {
                token_file: args.admin_token_file,
                store: args.override_store,
                redis_url: args.override_redis_url,
                etcd_endpoints: args.etcd_endpoints,
                etcd_prefix: args.etcd_prefix,
                poll_ms: args.override_poll_ms,
                lease_max_wait_ms: args.lease_max_wait_ms,
            },
            backend,
            store.redis_type,
        )?;

        Ok(Settings {
            admin,
            rules,
            grpc_addr,
            grpc_uds: args.grpc_uds.or_else(|| get("GRPC_UDS").map(PathBuf::from)),
            http_addr,
            backend,
            redis_url,
            redis_pool_size: match args.redis_pool_size {
                Some(n) => n,
                None => reference::whole_number(&get, "REDIS_POOL_SIZE")?.unwrap_or(4),
            }
            .clamp(1, 64),
            redis_timeout: match args.redis_timeout_ms {
                Some(ms) => Duration::from_millis(ms.max(1)),
                None => reference::go_duration(&get, "REDIS_TIMEOUT")?
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(1)),
            },
            // The reference charges every descriptor of a rejected request unless told to stop.
            charge_rejected: match args.charge_rejected {
                Some(b) => b,
                None => {
                    parse_env("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT")?.is_some_and(|stop| !stop)
                }
            },
            merge_domains: match args.merge_domains {
                Some(b) => b,
                None => parse_env("MERGE_DOMAIN_CONFIG")?.unwrap_or(false),
            },
            shadow_mode: match args.shadow_mode {
                Some(b) => b,
                None => parse_env("SHADOW_MODE")?.unwrap_or(false),
            },
            quota_mode: match args.quota_mode {
                Some(b) => b,
                None => parse_env("QUOTA_MODE")?.unwrap_or(false),
            },
            watch: match args.watch {
                Some(b) => b,
                None => parse_env("RUNTIME_WATCH_ROOT")?.unwrap_or(true),
            },
            key_prefix,
            near_limit_ratio,
            header_style,
            hash_values_key_file: args.hash_values_key_file,
            max_counters: args.max_counters.unwrap_or(1_000_000).max(1),
            max_metric_series: args
                .max_metric_series
                .unwrap_or(crate::metrics::DEFAULT_MAX_SERIES)
                .max(1),
            bounds,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs.unwrap_or(10)),
            drain_window: Duration::from_secs(args.drain_window_secs.unwrap_or(0)),
            ready_when_store_down: args.ready_when_store_down.unwrap_or(false),
            explain_log: args.explain_log.unwrap_or(false),
            auth_over_limit_status,
            otlp_endpoint,
            trace_sample_ratio,
            log_level: log_level(args.log_level, get("LOG_LEVEL"))?,
            log_format,
            worker_threads: match args.worker_threads {
                Some(0) => {
                    return Err(SettingsError::Invalid(
                        "--worker-threads must be at least 1".into(),
                    ));
                }
                n => n,
            },
            store,
            listener,
            tls,
            stats,
            notifications: args.notifications,
            reference_notes,
        })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_compat;
