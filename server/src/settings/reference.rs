//! envoyproxy/ratelimit's environment names and value spellings, mapped onto Sluice's settings.

use std::net::SocketAddr;
use std::time::Duration;

use super::SettingsError;

/// The flag is a `tracing` filter; the reference's `LOG_LEVEL` is a logrus level name, any case.
pub(super) fn log_level(
    flag: Option<String>,
    reference: Option<String>,
) -> Result<String, SettingsError> {
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
pub(super) fn parse_bool(name: &'static str, value: &str) -> Result<bool, SettingsError> {
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

pub(super) fn host_port(
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
pub(super) fn reference_redis_url(
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

/// A whole number from the reference variable `name` (envconfig's `int`, never negative here).
pub(super) fn whole_number(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<usize>, SettingsError> {
    get(name)
        .map(|value| {
            value.parse().map_err(|_| SettingsError::Env {
                name,
                value: value.clone(),
                reason: "not a whole number".into(),
            })
        })
        .transpose()
}

/// A Go `time.Duration` from the reference variable `name` (`1h30m`, `500ms`, `10s`, `0`), as
/// the reference's envconfig reads its durations.
pub(super) fn go_duration(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<Duration>, SettingsError> {
    let Some(value) = get(name) else {
        return Ok(None);
    };
    parse_go_duration(&value)
        .map(Some)
        .map_err(|reason| SettingsError::Env {
            name,
            value,
            reason,
        })
}

/// Go's `time.ParseDuration`, without negative durations (none of the reference's may be).
pub(super) fn parse_go_duration(value: &str) -> Result<Duration, String> {
    const UNITS: [(&str, f64); 8] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("\u{b5}s", 1e-6),
        ("\u{3bc}s", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let bad = || format!("{value:?} is not a duration such as 500ms, 10s, 5m or 1h30m");
    let mut rest = value.strip_prefix('+').unwrap_or(value);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{value:?} has a number without a unit (ms, s, m, h)"))?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, after) = rest.split_at(unit_len);
        let scale = UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?;
        total += number * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// The reference's `TRACING_SAMPLING_RATE`, a ratio between 0 and 1.
pub(super) fn sample_rate(
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<Option<f64>, SettingsError> {
    let name = "TRACING_SAMPLING_RATE";
    get(name)
        .map(|v| match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(SettingsError::Env {
                name,
                value: v,
                reason: "expected a ratio between 0 and 1".into(),
            }),
        })
        .transpose()
}
