//! Every setting of envoyproxy/ratelimit (its `src/settings/settings.go` at f2fb157), and what
//! Sluice does with it: honoured, refused when set to a value Sluice cannot honour, or noted (it
//! means nothing here, and a line at start-up says so). None is silently ignored; the walk in the
//! tests proves each entry against a fixture of the reference's names.

use super::SettingsError;
use super::reference::parse_bool;

/// What Sluice does with one of the reference's settings.
#[derive(Debug, Clone, Copy)]
pub enum Treatment {
    /// Read, with the reference's meaning (`docs/settings.md` says under which Sluice setting).
    Honoured,
    /// Honoured for the values `accepts` allows; any other stops start-up with `instead`.
    Limited {
        accepts: fn(&str) -> bool,
        instead: &'static str,
    },
    /// Means nothing in Sluice: when set, a line at start-up says why.
    Noted(&'static str),
}

use Treatment::{Honoured, Limited, Noted};

fn is_false(v: &str) -> bool {
    parse_bool("", v) == Ok(false)
}

const NOT_PERSECOND: &str = "only with REDIS_PERSECOND, which Sluice refuses";
const NOT_MEMCACHE: &str = "Sluice has no memcached backend (BACKEND_TYPE=memcache is refused)";
const NOT_PIPELINE: &str = "Sluice batches a Cluster's checks per primary, about \
                            --redis-pool-size calls in flight across them";
const NOT_STARTUP: &str = "Sluice's start-up waits at most --redis-timeout-ms for Redis, then \
                           serves with its failure policy";

/// The reference's settings, in the order of its settings file.
pub const REFERENCE: &[(&str, Treatment)] = &[
    ("HOST", Honoured),
    ("PORT", Honoured),
    (
        "DEBUG_HOST",
        Noted("Sluice has no debug listener; /metrics and /rlconfig are on the HTTP port"),
    ),
    (
        "DEBUG_PORT",
        Noted("Sluice has no debug listener; /metrics and /rlconfig are on the HTTP port"),
    ),
    ("GRPC_UDS", Honoured),
    ("GRPC_HOST", Honoured),
    ("GRPC_PORT", Honoured),
    ("GRPC_MAX_CONNECTION_AGE", Honoured),
    ("GRPC_MAX_CONNECTION_AGE_GRACE", Honoured),
    ("GRPC_SERVER_USE_TLS", Honoured),
    ("GRPC_SERVER_TLS_CERT", Honoured),
    ("GRPC_SERVER_TLS_KEY", Honoured),
    ("GRPC_CLIENT_TLS_CACERT", Honoured),
    ("GRPC_CLIENT_TLS_SAN", Honoured),
    ("LOG_LEVEL", Honoured),
    ("LOG_FORMAT", Honoured),
    ("CONFIG_TYPE", Honoured),
    ("FORCE_START_WITHOUT_INITIAL_CONFIG", Honoured),
    ("CONFIG_GRPC_XDS_NODE_ID", Honoured),
    ("CONFIG_GRPC_XDS_NODE_METADATA", Honoured),
    ("CONFIG_GRPC_XDS_SERVER_URL", Honoured),
    ("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", Honoured),
    ("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", Honoured),
    ("CONFIG_GRPC_XDS_SERVER_USE_TLS", Honoured),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", Honoured),
    ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", Honoured),
    ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", Honoured),
    ("CONFIG_GRPC_XDS_SERVER_TLS_SAN", Honoured),
    ("XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", Honoured),
    ("XDS_CLIENT_BACKOFF_MAX_INTERVAL", Honoured),
    ("XDS_CLIENT_BACKOFF_RANDOM_FACTOR", Honoured),
    ("XDS_CLIENT_BACKOFF_JITTER", Honoured),
    ("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", Honoured),
    ("USE_DOG_STATSD", Honoured),
    (
        "USE_DOG_STATSD_MOGRIFIERS",
        Limited {
            accepts: |_| false,
            instead: "Sluice pushes the reference's stat names with EXTRA_TAGS as tags, without \
                  mogrifiers: unset it and map the names in the DogStatsD agent",
        },
    ),
    ("USE_STATSD", Honoured),
    ("STATSD_HOST", Honoured),
    ("STATSD_PORT", Honoured),
    ("EXTRA_TAGS", Honoured),
    ("STATS_FLUSH_INTERVAL", Honoured),
    ("DISABLE_STATS", Honoured),
    ("USE_PROMETHEUS", Honoured),
    ("PROMETHEUS_ADDR", Honoured),
    ("PROMETHEUS_PATH", Honoured),
    (
        "PROMETHEUS_MAPPER_YAML",
        Limited {
            accepts: |_| false,
            instead: "Sluice serves the reference's default mapping only: unset it, or relabel in \
                  Prometheus",
        },
    ),
    (
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
        Limited {
            accepts: is_false,
            instead: "Sluice serves ratelimit_service_response_time_seconds in seconds, as the \
                  reference does by default: set it to false",
        },
    ),
    ("RUNTIME_ROOT", Honoured),
    ("RUNTIME_SUBDIRECTORY", Honoured),
    ("RUNTIME_APPDIRECTORY", Honoured),
    (
        "RUNTIME_IGNOREDOTFILES",
        Noted("Sluice always skips files whose names start with a dot"),
    ),
    ("RUNTIME_WATCH_ROOT", Honoured),
    (
        "EXPIRATION_JITTER_MAX_SECONDS",
        Noted("Sluice's counters expire with their window"),
    ),
    ("LOCAL_CACHE_SIZE_IN_BYTES", Honoured),
    ("NEAR_LIMIT_RATIO", Honoured),
    ("CACHE_KEY_PREFIX", Honoured),
    ("BACKEND_TYPE", Honoured),
    ("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", Honoured),
    ("LIMIT_RESPONSE_HEADERS_ENABLED", Honoured),
    ("LIMIT_LIMIT_HEADER", Honoured),
    ("LIMIT_REMAINING_HEADER", Honoured),
    ("LIMIT_RESET_HEADER", Honoured),
    (
        "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED",
        Noted(
            "Sluice never starts without a valid rule \
        set, so it is always healthy with one loaded",
        ),
    ),
    (
        "REDIS_SOCKET_TYPE",
        Limited {
            accepts: |v| v.eq_ignore_ascii_case("tcp"),
            instead: "Sluice reaches Redis over TCP: set it to tcp and REDIS_URL to host:port",
        },
    ),
    ("REDIS_TYPE", Honoured),
    ("REDIS_URL", Honoured),
    ("REDIS_POOL_SIZE", Honoured),
    ("REDIS_AUTH", Honoured),
    ("REDIS_TLS", Honoured),
    ("REDIS_TLS_CLIENT_CERT", Honoured),
    ("REDIS_TLS_CLIENT_KEY", Honoured),
    ("REDIS_TLS_CACERT", Honoured),
    (
        "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
        Limited {
            accepts: is_false,
            instead: "Sluice always verifies Redis's certificate: give REDIS_TLS_CACERT and a \
                  certificate that names the address used",
        },
    ),
    ("REDIS_PIPELINE_WINDOW", Honoured),
    ("REDIS_PIPELINE_LIMIT", Honoured),
    ("REDIS_CLUSTER_PIPELINE_PARALLELISM", Noted(NOT_PIPELINE)),
    (
        "REDIS_PERSECOND",
        Limited {
            accepts: is_false,
            instead: "Sluice keeps every unit's counters in one store: drop the per-second Redis",
        },
    ),
    ("REDIS_PERSECOND_SOCKET_TYPE", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_TYPE", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_URL", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_POOL_SIZE", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_AUTH", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_TLS", Noted(NOT_PERSECOND)),
    ("REDIS_SENTINEL_AUTH", Honoured),
    ("REDIS_PERSECOND_SENTINEL_AUTH", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_PIPELINE_WINDOW", Noted(NOT_PERSECOND)),
    ("REDIS_PERSECOND_PIPELINE_LIMIT", Noted(NOT_PERSECOND)),
    (
        "REDIS_PERSECOND_CLUSTER_PIPELINE_PARALLELISM",
        Noted(NOT_PERSECOND),
    ),
    (
        "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION",
        Noted("Sluice's readiness always follows Redis"),
    ),
    ("REDIS_TIMEOUT", Honoured),
    ("REDIS_PERSECOND_TIMEOUT", Noted(NOT_PERSECOND)),
    (
        "REDIS_POOL_ON_EMPTY_BEHAVIOR",
        Noted(
            "Sluice multiplexes checks over its connections; \
        there is no pool to run empty",
        ),
    ),
    (
        "REDIS_PERSECOND_POOL_ON_EMPTY_BEHAVIOR",
        Noted(NOT_PERSECOND),
    ),
    ("REDIS_STARTUP_INITIAL_INTERVAL", Noted(NOT_STARTUP)),
    ("REDIS_STARTUP_MAX_INTERVAL", Noted(NOT_STARTUP)),
    ("REDIS_STARTUP_MAX_ELAPSED_TIME", Noted(NOT_STARTUP)),
    ("MEMCACHE_HOST_PORT", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_MAX_IDLE_CONNS", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_SRV", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_SRV_REFRESH", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_TLS", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_TLS_CLIENT_CERT", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_TLS_CLIENT_KEY", Noted(NOT_MEMCACHE)),
    ("MEMCACHE_TLS_CACERT", Noted(NOT_MEMCACHE)),
    (
        "MEMCACHE_TLS_SKIP_HOSTNAME_VERIFICATION",
        Noted(NOT_MEMCACHE),
    ),
    ("SHADOW_MODE", Honoured),
    ("QUOTA_MODE", Honoured),
    (
        "RESPONSE_DYNAMIC_METADATA",
        Noted(
            "Sluice puts only a lease into a response's dynamic \
        metadata",
        ),
    ),
    ("MERGE_DOMAIN_CONFIG", Honoured),
    ("TRACING_ENABLED", Honoured),
    (
        "TRACING_SERVICE_NAME",
        Noted("Sluice's spans name their service sluice"),
    ),
    (
        "TRACING_SERVICE_NAMESPACE",
        Noted("Sluice's spans name their service sluice"),
    ),
    (
        "TRACING_SERVICE_INSTANCE_ID",
        Noted("Sluice's spans name their service sluice"),
    ),
    (
        "TRACING_EXPORTER_PROTOCOL",
        Limited {
            accepts: |v| v.eq_ignore_ascii_case("grpc"),
            instead: "Sluice exports spans over OTLP/gRPC only: set it to grpc and \
                  OTEL_EXPORTER_OTLP_ENDPOINT to the collector's gRPC port (4317)",
        },
    ),
    ("TRACING_SAMPLING_RATE", Honoured),
];

/// Refuses a reference setting Sluice cannot honour, and returns a line for each that means
/// nothing here. `traced`: a trace endpoint is configured (`TRACING_ENABLED=true` needs one).
pub(super) fn review(
    get: &impl Fn(&'static str) -> Option<String>,
    traced: bool,
) -> Result<Vec<String>, SettingsError> {
    let mut notes = Vec::new();
    for &(name, treatment) in REFERENCE {
        let Some(value) = get(name) else {
            continue;
        };
        match treatment {
            Honoured => {}
            Limited { accepts, instead } if !accepts(&value) => {
                return Err(SettingsError::Env {
                    name,
                    value,
                    reason: instead.into(),
                });
            }
            Limited { .. } => {}
            Noted(why) => notes.push(format!("{name} is set but means nothing here: {why}")),
        }
    }
    if let Some(v) = get("TRACING_ENABLED")
        && parse_bool("TRACING_ENABLED", &v)?
        && !traced
    {
        return Err(SettingsError::Env {
            name: "TRACING_ENABLED",
            value: v,
            reason: "Sluice exports spans over OTLP/gRPC: also set OTEL_EXPORTER_OTLP_ENDPOINT \
                     (e.g. http://otel-collector:4317)"
                .into(),
        });
    }
    Ok(notes)
}
