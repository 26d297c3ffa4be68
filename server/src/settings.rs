//! Process settings: flags, `SLUICE_*` environment variables, and the environment names of
//! envoyproxy/ratelimit, read once at start-up.
//!
//! Precedence for each setting: the flag, then its `SLUICE_*` variable (clap reads both), then the
//! reference service's variable, then the default. `docs/settings.md` has the full table.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::limiter::{HeaderNames, HeaderStyle, RequestBounds};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Envoy-compatible external rate-limit service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a rule file or directory and exit: 0 when valid, 1 with every error otherwise.
    CheckConfig {
        /// A YAML file, or a directory of them.
        path: PathBuf,
        /// Merge domains defined in more than one file instead of rejecting them.
        #[arg(long)]
        merge_domains: bool,
    },
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

/// Flags of the server. Every field is optional so [`Settings::resolve`] can tell "not given"
/// from a default and fall back to the reference service's variable names.
#[derive(Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Rule file or directory of `*.yaml` / `*.yml` files.
    #[arg(long, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:8081].
    #[arg(long, env = "SLUICE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address (`/json`, `/healthcheck`, `/rlconfig`, `/metrics`) [default: 0.0.0.0:8080].
    #[arg(long, env = "SLUICE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Counter store [default: memory].
    #[arg(long, env = "SLUICE_BACKEND")]
    pub backend: Option<Backend>,
    /// Redis URL, e.g. redis://user:password@127.0.0.1:6379/0.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Redis connections, each multiplexing concurrent requests [default: 4].
    #[arg(long, env = "SLUICE_REDIS_POOL_SIZE")]
    pub redis_pool_size: Option<usize>,
    /// Give up on a Redis call after this many milliseconds [default: 1000].
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
    /// Log filter, e.g. info or sluice_server=debug [default: info].
    #[arg(long, env = "SLUICE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, env = "SLUICE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// Resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub config: PathBuf,
    pub grpc_addr: SocketAddr,
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
    pub bounds: RequestBounds,
    pub shutdown_grace: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
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
        let parse_num = |name: &'static str| -> Result<Option<u64>, SettingsError> {
            get(name)
                .map(|v| {
                    v.parse::<u64>().map_err(|_| SettingsError::Env {
                        name,
                        value: v.clone(),
                        reason: "not a whole number".into(),
                    })
                })
                .transpose()
        };

        let config = match args.config {
            Some(p) => p,
            None => {
                // The reference reads RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY.
                let root = get("RUNTIME_ROOT");
                let sub = get("RUNTIME_SUBDIRECTORY");
                if root.is_none() && sub.is_none() {
                    return Err(SettingsError::Invalid(
                        "no rule set given: pass --config PATH (or SLUICE_CONFIG, or the \
                         reference's RUNTIME_ROOT/RUNTIME_SUBDIRECTORY)"
                            .into(),
                    ));
                }
                let mut p =
                    PathBuf::from(root.unwrap_or_else(|| "/srv/runtime_data/current".into()));
                if let Some(sub) = sub {
                    p.push(sub);
                }
                p.push(get("RUNTIME_APPDIRECTORY").unwrap_or_else(|| "config".into()));
                p
            }
        };

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

        let redis_url = match args.redis_url {
            Some(u) => Some(u),
            None => get("REDIS_URL").map(|u| reference_redis_url(&u, get("REDIS_AUTH"), &get)),
        };
        if redis_url
            .as_deref()
            .is_some_and(|u| u.starts_with("rediss://"))
        {
            return Err(SettingsError::Invalid(
                "TLS to Redis (rediss:// or REDIS_TLS) is not supported yet; use redis:// over a \
                 trusted network or a TLS sidecar"
                    .into(),
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

        let style = match args.response_headers {
            Some(style) => Some(("--response-headers", style)),
            None => {
                get("LIMIT_RESPONSE_HEADERS_ENABLED").map(|v| ("LIMIT_RESPONSE_HEADERS_ENABLED", v))
            }
        };
        let header_style = match style {
            None => HeaderStyle::Off,
            Some((name, style)) => match style.to_ascii_lowercase().as_str() {
                "off" | "false" | "0" | "no" => HeaderStyle::Off,
                "ratelimit" | "true" | "1" | "yes" => {
                    let d = HeaderNames::default();
                    HeaderStyle::RateLimit(HeaderNames {
                        limit: args
                            .header_limit
                            .or_else(|| get("LIMIT_LIMIT_HEADER"))
                            .unwrap_or(d.limit),
                        remaining: args
                            .header_remaining
                            .or_else(|| get("LIMIT_REMAINING_HEADER"))
                            .unwrap_or(d.remaining),
                        reset: args
                            .header_reset
                            .or_else(|| get("LIMIT_RESET_HEADER"))
                            .unwrap_or(d.reset),
                    })
                }
                "x-ratelimit" => HeaderStyle::XRateLimit,
                "ietf" => HeaderStyle::Ietf,
                _ => {
                    return Err(SettingsError::Env {
                        name,
                        value: style,
                        reason: "expected off, ratelimit, x-ratelimit or ietf (or true/false)"
                            .into(),
                    });
                }
            },
        };

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

        Ok(Settings {
            config,
            grpc_addr,
            http_addr,
            backend,
            redis_url,
            redis_pool_size: match args.redis_pool_size {
                Some(n) => n,
                None => parse_num("REDIS_POOL_SIZE")?.map_or(4, |n| n as usize),
            }
            .clamp(1, 64),
            redis_timeout: Duration::from_millis(args.redis_timeout_ms.unwrap_or(1000).max(1)),
            charge_rejected: args.charge_rejected.unwrap_or(false),
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
            key_prefix: args
                .key_prefix
                .or_else(|| get("CACHE_KEY_PREFIX"))
                .unwrap_or_default(),
            near_limit_ratio,
            header_style,
            hash_values_key_file: args.hash_values_key_file,
            max_counters: args.max_counters.unwrap_or(1_000_000).max(1),
            bounds,
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs.unwrap_or(10)),
            log_level: log_level(args.log_level, get("LOG_LEVEL"))?,
            log_format,
        })
    }
}

/// The flag is a `tracing` filter; the reference's `LOG_LEVEL` is a logrus level name, any case.
fn log_level(flag: Option<String>, reference: Option<String>) -> Result<String, SettingsError> {
    let level = match (flag, reference) {
        (Some(f), _) => f,
        (None, Some(r)) => match r.to_ascii_lowercase().as_str() {
            "warning" => "warn".into(),
            "fatal" | "panic" => "error".into(),
            other => other.into(),
        },
        (None, None) => "info".into(),
    };
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
        SettingsError::Invalid(format!("log level {level:?} is not a valid filter: {e}"))
    })?;
    Ok(level)
}

/// Go's `strconv.ParseBool`, which the reference uses for its boolean variables.
fn parse_bool(name: &'static str, value: &str) -> Result<bool, SettingsError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(SettingsError::Env {
            name,
            value: value.into(),
            reason: "expected true or false".into(),
        }),
    }
}

fn host_port(
    get: &impl Fn(&'static str) -> Option<String>,
    host_var: &'static str,
    port_var: &'static str,
    default_port: u16,
) -> Result<SocketAddr, SettingsError> {
    let host = get(host_var).unwrap_or_else(|| "0.0.0.0".into());
    let port = match get(port_var) {
        Some(p) => p.parse::<u16>().map_err(|_| SettingsError::Env {
            name: port_var,
            value: p.clone(),
            reason: "not a port number".into(),
        })?,
        None => default_port,
    };
    let joined = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    joined.parse().map_err(|_| SettingsError::Env {
        name: host_var,
        value: host,
        reason: "not an IP address".into(),
    })
}

/// The reference takes `REDIS_URL` as `host:port` (or a URL) and the password separately in
/// `REDIS_AUTH` (`password` or `user:password`), with `REDIS_TLS` for TLS.
fn reference_redis_url(
    url: &str,
    auth: Option<String>,
    get: &impl Fn(&'static str) -> Option<String>,
) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let tls = get("REDIS_TLS").is_some_and(|v| parse_bool("REDIS_TLS", &v).unwrap_or(false));
    let scheme = if tls { "rediss" } else { "redis" };
    match auth {
        Some(a) if a.contains(':') => format!("{scheme}://{a}@{url}"),
        Some(a) => format!("{scheme}://:{a}@{url}"),
        None => format!("{scheme}://{url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut argv = vec!["sluice"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(cli.serve, |k| env.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = resolve(&["--config", "rules.yaml"], &[]).expect("valid");
        assert_eq!(s.grpc_addr, "0.0.0.0:8081".parse().expect("addr"));
        assert_eq!(s.http_addr, "0.0.0.0:8080".parse().expect("addr"));
        assert_eq!(s.backend, Backend::Memory);
        assert!(!s.charge_rejected);
        assert!(s.watch);
        assert_eq!(s.near_limit_ratio, 0.8);
        assert_eq!(s.header_style, HeaderStyle::Off);
        assert_eq!(s.hash_values_key_file, None);
    }

    #[test]
    fn reference_environment_names() {
        let s = resolve(
            &[],
            &[
                ("RUNTIME_ROOT", "/data"),
                ("RUNTIME_SUBDIRECTORY", "ratelimit"),
                ("GRPC_HOST", "127.0.0.1"),
                ("GRPC_PORT", "9081"),
                ("HOST", "::1"),
                ("PORT", "9080"),
                ("BACKEND_TYPE", "redis"),
                ("REDIS_URL", "127.0.0.1:6379"),
                ("REDIS_AUTH", "user:secret"),
                ("MERGE_DOMAIN_CONFIG", "true"),
                ("SHADOW_MODE", "1"),
                ("QUOTA_MODE", "true"),
                ("CACHE_KEY_PREFIX", "rl:"),
                ("NEAR_LIMIT_RATIO", "0.9"),
                ("LIMIT_RESPONSE_HEADERS_ENABLED", "true"),
                ("LIMIT_REMAINING_HEADER", "X-Left"),
                ("LOG_LEVEL", "DEBUG"),
                ("LOG_FORMAT", "json"),
                ("REDIS_POOL_SIZE", "8"),
            ],
        )
        .expect("valid");
        assert_eq!(s.config, PathBuf::from("/data/ratelimit/config"));
        assert_eq!(s.grpc_addr, "127.0.0.1:9081".parse().expect("addr"));
        assert_eq!(s.http_addr, "[::1]:9080".parse().expect("addr"));
        assert_eq!(s.backend, Backend::Redis);
        assert_eq!(
            s.redis_url.as_deref(),
            Some("redis://user:secret@127.0.0.1:6379")
        );
        assert!(s.merge_domains);
        assert!(s.shadow_mode);
        assert!(s.quota_mode);
        assert_eq!(s.key_prefix, "rl:");
        assert_eq!(s.near_limit_ratio, 0.9);
        let HeaderStyle::RateLimit(headers) = s.header_style else {
            panic!("headers on: {:?}", s.header_style);
        };
        assert_eq!(headers.remaining, "X-Left");
        assert_eq!(headers.limit, "RateLimit-Limit");
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.redis_pool_size, 8);
    }

    #[test]
    fn flags_win_over_reference_names() {
        let s = resolve(
            &[
                "--config",
                "a.yaml",
                "--grpc-addr",
                "127.0.0.1:1",
                "--charge-rejected",
            ],
            &[("GRPC_PORT", "9081"), ("RUNTIME_ROOT", "/x")],
        )
        .expect("valid");
        assert_eq!(s.config, PathBuf::from("a.yaml"));
        assert_eq!(s.grpc_addr, "127.0.0.1:1".parse().expect("addr"));
        assert!(s.charge_rejected);
    }

    #[test]
    fn header_styles() {
        for (flag, want) in [
            ("--response-headers=off", HeaderStyle::Off),
            (
                "--response-headers",
                HeaderStyle::RateLimit(HeaderNames::default()),
            ),
            (
                "--response-headers=true",
                HeaderStyle::RateLimit(HeaderNames::default()),
            ),
            ("--response-headers=x-ratelimit", HeaderStyle::XRateLimit),
            ("--response-headers=IETF", HeaderStyle::Ietf),
        ] {
            let s = resolve(&["--config", "a", flag], &[]).expect("valid");
            assert_eq!(s.header_style, want, "{flag}");
        }
        let err = resolve(&["--config", "a", "--response-headers=fancy"], &[]).expect_err("bad");
        assert!(err.to_string().contains("x-ratelimit"), "{err}");
        let s = resolve(
            &["--config", "a", "--hash-values-key-file", "/run/secret"],
            &[],
        )
        .expect("valid");
        assert_eq!(s.hash_values_key_file, Some(PathBuf::from("/run/secret")));
    }

    #[test]
    fn bad_values_are_named() {
        let err = resolve(&["--config", "a"], &[("SHADOW_MODE", "yes")]).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "SHADOW_MODE=\"yes\": expected true or false"
        );
        let err =
            resolve(&["--config", "a"], &[("BACKEND_TYPE", "memcache")]).expect_err("invalid");
        assert!(err.to_string().contains("BACKEND_TYPE"), "{err}");
        let err = resolve(&["--config", "a", "--backend", "redis"], &[]).expect_err("invalid");
        assert!(err.to_string().contains("--redis-url"), "{err}");
        let err = resolve(
            &["--config", "a"],
            &[("REDIS_URL", "r:6379"), ("REDIS_TLS", "true")],
        )
        .expect_err("no TLS yet");
        assert!(err.to_string().contains("TLS"), "{err}");
        let err = resolve(&["--config", "a", "--log-level", "loud=="], &[]).expect_err("filter");
        assert!(err.to_string().contains("log level"), "{err}");
        let s = resolve(&["--config", "a"], &[("LOG_LEVEL", "WARNING")]).expect("logrus name");
        assert_eq!(s.log_level, "warn");
        let err = resolve(&[], &[]).expect_err("no config");
        assert!(err.to_string().contains("--config"), "{err}");
    }
}
