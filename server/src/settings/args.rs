//! The serve flags (`sluice [FLAGS]`; the subcommands are `main.rs`'s). Every flag is optional,
//! so [`super::Settings::resolve`] can tell "not given" from a default and fall back to the
//! reference service's variable names.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::ValueEnum;

/// Where runtime overrides live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverrideBackend {
    /// In this process (a single instance).
    Memory,
    /// In Redis, shared by every replica (pub/sub and polling).
    Redis,
    /// In etcd (v3 API), shared by every replica (watch and polling).
    Etcd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags of the server. Every field is optional so [`Settings::resolve`](super::Settings::resolve) can tell "not given"
/// from a default and fall back to the reference service's variable names.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Rule file or directory of `*.yaml` / `*.yml` files.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:8081].
    #[arg(long, env = "SLUICE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Serve gRPC on this Unix domain socket instead of TCP (a stale socket file is replaced)
    /// [default: none].
    #[arg(long, env = "SLUICE_GRPC_UDS")]
    pub grpc_uds: Option<PathBuf>,
    /// HTTP listen address (`/json`, `/healthcheck`, `/rlconfig`, `/metrics`) [default: 0.0.0.0:8080].
    #[arg(long, env = "SLUICE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Counter store [default: memory].
    #[arg(long, env = "SLUICE_BACKEND")]
    pub backend: Option<Backend>,
    /// Redis address: a URL such as redis://user:password@127.0.0.1:6379/0 (rediss:// for TLS),
    /// or the list `--redis-type` names.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis connections, each multiplexing concurrent requests [default: 4].
    #[arg(long, env = "SLUICE_REDIS_POOL_SIZE")]
    pub redis_pool_size: Option<usize>,
    /// Give up connecting to Redis, or on a health ping, after this many milliseconds; a check
    /// waits at most --store-budget-ms [default: 1000].
    #[arg(long, env = "SLUICE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: Option<u64>,
    /// Charge every limited descriptor even when the request is rejected (the reference's
    /// behaviour). By default a rejected request is charged nowhere.
    #[arg(long, env = "SLUICE_CHARGE_REJECTED", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub charge_rejected: Option<bool>,
    /// Merge a domain defined in several files instead of rejecting the config.
    #[arg(long, env = "SLUICE_MERGE_DOMAINS", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub merge_domains: Option<bool>,
    /// Decide and count as usual but always answer OK.
    #[arg(long, env = "SLUICE_SHADOW_MODE", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub shadow_mode: Option<bool>,
    /// Treat every rule as `quota_mode`: reject only when all of a request's limits are over.
    #[arg(long, env = "SLUICE_QUOTA_MODE", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub quota_mode: Option<bool>,
    /// Reload rules when the config path changes [default: true].
    #[arg(long, env = "SLUICE_WATCH", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub watch: Option<bool>,
    /// Prefix for every counter key.
    #[arg(long, env = "SLUICE_KEY_PREFIX")]
    pub key_prefix: Option<String>,
    /// Hits past floor(limit × ratio) count as near the limit [default: 0.8].
    #[arg(long, env = "SLUICE_NEAR_LIMIT_RATIO")]
    pub near_limit_ratio: Option<f64>,
    /// Rate-limit headers on answers: off, ratelimit (RateLimit-Limit/Remaining/Reset),
    /// x-ratelimit (Envoy's draft-03 X-RateLimit-*) or ietf (RateLimit-Policy and RateLimit)
    /// [default: off; the flag alone means ratelimit]. Retry-After is sent on every over-limit
    /// answer whatever the style.
    #[arg(long, env = "SLUICE_RESPONSE_HEADERS", num_args = 0..=1, default_missing_value = "ratelimit")]
    pub response_headers: Option<String>,
    #[arg(long, env = "SLUICE_HEADER_LIMIT")]
    pub header_limit: Option<String>,
    #[arg(long, env = "SLUICE_HEADER_REMAINING")]
    pub header_remaining: Option<String>,
    #[arg(long, env = "SLUICE_HEADER_RESET")]
    pub header_reset: Option<String>,
    /// A file holding a secret (at least 16 bytes): descriptor values then reach the counter
    /// store only as keyed hashes, never as the API keys or user ids they are.
    #[arg(long, env = "SLUICE_HASH_VALUES_KEY_FILE")]
    pub hash_values_key_file: Option<PathBuf>,
    /// Most live counters the memory store keeps [default: 1000000].
    #[arg(long, env = "SLUICE_MAX_COUNTERS")]
    pub max_counters: Option<usize>,
    /// Most descriptors in one request [default: 64].
    #[arg(long, env = "SLUICE_MAX_DESCRIPTORS")]
    pub max_descriptors: Option<usize>,
    /// Most entries in one descriptor [default: 32].
    #[arg(long, env = "SLUICE_MAX_ENTRIES")]
    pub max_entries: Option<usize>,
    /// Most bytes of domain, keys and values in one request [default: 16384].
    #[arg(long, env = "SLUICE_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Seconds to finish in-flight calls after SIGTERM/SIGINT [default: 10].
    #[arg(long, env = "SLUICE_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// Seconds between SIGTERM and closing the listeners: health says NOT_SERVING at once while
    /// both listeners keep accepting and answering, so load balancers stop sending first
    /// [default: 0].
    #[arg(long, env = "SLUICE_DRAIN_WINDOW_SECS")]
    pub drain_window_secs: Option<u64>,
    /// Stay ready (`/healthcheck` 200, gRPC health SERVING) while the counter store cannot
    /// answer, the failure policies answering checks meanwhile [default: false: not ready].
    #[arg(long, env = "SLUICE_READY_WHEN_STORE_DOWN", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub ready_when_store_down: Option<bool>,
    /// Status `/auth/{domain}` answers an over-limit request with: 403 or 401, the only
    /// refusals NGINX's `auth_request` passes on [default: 403].
    #[arg(long, env = "SLUICE_AUTH_OVER_LIMIT_STATUS")]
    pub auth_over_limit_status: Option<u16>,
    /// Export a span per check over OTLP/gRPC to this collector, e.g. http://127.0.0.1:4317
    /// [default: off].
    #[arg(long, env = "SLUICE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Share of checks without a sampled caller trace that are traced; a caller's own sampling
    /// decision is always followed [default: 0.01].
    #[arg(long, env = "SLUICE_TRACE_SAMPLE_RATIO")]
    pub trace_sample_ratio: Option<f64>,
    /// Log filter, e.g. info or sluice_server=debug [default: info].
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "SLUICE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Series each per-rule metric family may hold; past it, hits count in its `rule="overflow"`
    /// series [default: 10000].
    #[arg(long, env = "SLUICE_MAX_METRIC_SERIES")]
    pub max_metric_series: Option<usize>,
    /// Runtime worker threads [default: one per CPU].
    #[arg(long, env = "SLUICE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// A file of bearer tokens (`name:token` per line) that turns on the admin API under
    /// /admin/ [default: off].
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Where runtime overrides live [default: redis with the Redis backend, else memory].
    #[arg(long, env = "SLUICE_OVERRIDE_STORE")]
    pub override_store: Option<OverrideBackend>,
    /// Redis for overrides [default: --redis-url].
    #[arg(long, env = "SLUICE_OVERRIDE_REDIS_URL")]
    pub override_redis_url: Option<String>,
    /// etcd endpoints for overrides, comma-separated, e.g. http://127.0.0.1:2379.
    #[arg(long, env = "SLUICE_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of Sluice's data in etcd [default: /sluice].
    #[arg(long, env = "SLUICE_ETCD_PREFIX")]
    pub etcd_prefix: Option<String>,
    /// How often a replica reloads overrides even without a change notification, in
    /// milliseconds [default: 1000].
    #[arg(long, env = "SLUICE_OVERRIDE_POLL_MS")]
    pub override_poll_ms: Option<u64>,
    /// The longest a lease acquire over HTTP may wait for a slot, in milliseconds
    /// [default: 30000].
    #[arg(long, env = "SLUICE_LEASE_MAX_WAIT_MS")]
    pub lease_max_wait_ms: Option<u64>,
    /// A YAML file with a `notifications:` block: webhooks and a Redis stream that receive every
    /// domain's quota notifications and the Redis breaker's [default: none].
    #[arg(long, env = "SLUICE_NOTIFICATIONS")]
    pub notifications: Option<PathBuf>,
    /// Log every check's explanation (the rule each descriptor matched, its path, every
    /// limit's counter, the decision) at debug level; costs nothing while off.
    #[arg(long, env = "SLUICE_EXPLAIN_LOG", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub explain_log: Option<bool>,
    #[command(flatten)]
    pub store: super::storage::StorageArgs,
    #[command(flatten)]
    pub listener: super::listener::ListenerArgs,
    #[command(flatten)]
    pub tls: super::tls::TlsArgs,
    #[command(flatten)]
    pub stats: super::stats::StatsArgs,
    #[command(flatten)]
    pub xds: super::rules::XdsArgs,
}
