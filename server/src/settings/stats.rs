//! Settings of the reference's stats: the statsd push (`USE_STATSD` and its family, or
//! `--statsd`) and the Prometheus names of the reference's statsd_exporter mapping on their own
//! address (`USE_PROMETHEUS`, or `--reference-metrics-addr`). Sluice's own `/metrics` is always
//! served, whatever these say.

use std::net::SocketAddr;
use std::time::Duration;

use super::SettingsError;
use super::reference::{go_duration, parse_bool};

/// Flags of the reference's stats, flattened into [`super::ServeArgs`].
#[derive(Debug, Default, clap::Args)]
pub struct StatsArgs {
    /// Push the reference's stats (`ratelimit.service.rate_limit.…`) to this statsd server,
    /// `host:port`, over UDP [default: off].
    #[arg(long, env = "SLUICE_STATSD")]
    pub statsd: Option<String>,
    /// Tag the pushed stats the DogStatsD way (`|#k:v`) rather than in their names.
    #[arg(long, env = "SLUICE_STATSD_DOGSTATSD", num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub statsd_dogstatsd: Option<bool>,
    /// Milliseconds between two pushes [default: 10000].
    #[arg(long, env = "SLUICE_STATSD_FLUSH_MS")]
    pub statsd_flush_ms: Option<u64>,
    /// Tags on every pushed stat, `key:value,key:value`.
    #[arg(long, env = "SLUICE_STATSD_TAGS")]
    pub statsd_tags: Option<String>,
    /// Serve the reference's Prometheus names (its default statsd_exporter mapping) on this
    /// address [default: off].
    #[arg(long, env = "SLUICE_REFERENCE_METRICS_ADDR")]
    pub reference_metrics_addr: Option<SocketAddr>,
    /// The path they are served at [default: /metrics].
    #[arg(long, env = "SLUICE_REFERENCE_METRICS_PATH")]
    pub reference_metrics_path: Option<String>,
}

/// Where the reference's stats go; `None`s: nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSettings {
    pub statsd: Option<Statsd>,
    /// The address and path of the reference-named Prometheus exposition.
    pub reference_prometheus: Option<(SocketAddr, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statsd {
    /// `host:port`, resolved at every push (a statsd agent's address may change).
    pub target: String,
    pub dogstatsd: bool,
    pub tags: Vec<(String, String)>,
    pub flush: Duration,
}

pub(super) fn resolve(
    args: StatsArgs,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<StatsSettings, SettingsError> {
    let flag_bool = |name: &'static str| -> Result<Option<bool>, SettingsError> {
        get(name).map(|v| parse_bool(name, &v)).transpose()
    };
    let disabled = flag_bool("DISABLE_STATS")? == Some(true);
    // The reference pushes by default (USE_STATSD defaults to true there); Sluice does when told
    // to, or when the statsd server's address is given and USE_STATSD is not set to false.
    let use_statsd = match flag_bool("USE_STATSD")? {
        Some(on) => on,
        None => get("STATSD_HOST").is_some() || get("STATSD_PORT").is_some(),
    };
    let statsd = match args.statsd {
        Some(target) => Some(target),
        None if use_statsd && !disabled => {
            let host = get("STATSD_HOST").unwrap_or_else(|| "localhost".into());
            let port = match get("STATSD_PORT") {
                Some(p) => p.parse::<u16>().map_err(|_| SettingsError::Env {
                    name: "STATSD_PORT",
                    value: p.clone(),
                    reason: "not a port number".into(),
                })?,
                None => 8125,
            };
            Some(format!("{host}:{port}"))
        }
        None => None,
    };
    let statsd = match statsd {
        None => None,
        Some(target) => Some(Statsd {
            dogstatsd: match args.statsd_dogstatsd {
                Some(b) => b,
                None => flag_bool("USE_DOG_STATSD")?.unwrap_or(false),
            },
            tags: match args.statsd_tags {
                Some(tags) => parse_tags("--statsd-tags", &tags)?,
                None => match get("EXTRA_TAGS") {
                    Some(tags) => parse_tags("EXTRA_TAGS", &tags)?,
                    None => Vec::new(),
                },
            },
            flush: match args.statsd_flush_ms {
                Some(ms) => Duration::from_millis(ms),
                None => {
                    go_duration(get, "STATS_FLUSH_INTERVAL")?.unwrap_or(Duration::from_secs(10))
                }
            },
            target: checked_target(target)?,
        }),
    };
    if statsd.as_ref().is_some_and(|s| s.flush.is_zero()) {
        return Err(SettingsError::Invalid(
            "the statsd flush interval must be more than 0".into(),
        ));
    }

    let reference_prometheus = match args.reference_metrics_addr {
        Some(addr) => Some(addr),
        None if flag_bool("USE_PROMETHEUS")? == Some(true) && !disabled => {
            let addr = get("PROMETHEUS_ADDR").unwrap_or_else(|| ":9090".into());
            // Go's `:9090` listens on every address.
            let full = match addr.strip_prefix(':') {
                Some(port) => format!("0.0.0.0:{port}"),
                None => addr.clone(),
            };
            Some(full.parse().map_err(|_| SettingsError::Env {
                name: "PROMETHEUS_ADDR",
                value: addr,
                reason: "expected host:port or :port with an IP address".into(),
            })?)
        }
        None => None,
    };
    let reference_prometheus = match reference_prometheus {
        None => None,
        Some(addr) => {
            let (name, path) = match args.reference_metrics_path {
                Some(p) => ("--reference-metrics-path", p),
                None => (
                    "PROMETHEUS_PATH",
                    get("PROMETHEUS_PATH").unwrap_or_else(|| "/metrics".into()),
                ),
            };
            if !path.starts_with('/') || path.contains(char::is_whitespace) {
                return Err(SettingsError::Invalid(format!(
                    "{name} {path:?}: a path starting with /"
                )));
            }
            Some((addr, path))
        }
    };
    Ok(StatsSettings {
        statsd,
        reference_prometheus,
    })
}

/// `key:value,key:value`, as the reference's envconfig reads a map; no statsd separator in either.
fn parse_tags(name: &'static str, value: &str) -> Result<Vec<(String, String)>, SettingsError> {
    value
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|tag| {
            let bad = |reason: &str| SettingsError::Env {
                name,
                value: value.into(),
                reason: format!("{tag:?}: {reason}"),
            };
            let (k, v) = tag
                .split_once(':')
                .ok_or_else(|| bad("expected key:value"))?;
            let forbidden = |s: &str| s.is_empty() || s.contains(['|', '#', ':', '=', '\n', ' ']);
            if forbidden(k) || forbidden(v) {
                return Err(bad(
                    "a key and a value, neither empty nor with | # : = or spaces",
                ));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn checked_target(target: String) -> Result<String, SettingsError> {
    match target.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(target),
        _ => Err(SettingsError::Invalid(format!(
            "statsd address {target:?}: expected host:port"
        ))),
    }
}
