//! envoyproxy/ratelimit's environment names and value spellings, mapped onto Sluice's settings.

use std::net::SocketAddr;

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
