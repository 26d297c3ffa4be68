//! Where the rules come from: files (`--config`, or the reference's `RUNTIME_*` path), or a
//! control plane over xDS (`--xds-server`, or the reference's `CONFIG_TYPE=GRPC_XDS_SOTW` with its
//! `CONFIG_GRPC_XDS_*` and `XDS_CLIENT_*` settings).

use std::path::PathBuf;
use std::time::Duration;

use super::SettingsError;
use super::reference::{go_duration, parse_bool};
use crate::xds::{Backoff, XdsSettings, XdsTls};

/// The rules' source.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleSource {
    /// A rule file or a directory of them.
    Files(PathBuf),
    /// A State-of-the-World aggregated discovery service.
    Xds(Box<XdsSettings>),
}

/// Flags of the xDS source, flattened into [`super::ServeArgs`].
#[derive(Debug, Default, clap::Args)]
pub struct XdsArgs {
    /// Take the rules from this xDS server (`host:port`) instead of files [default: files].
    #[arg(long, env = "SLUICE_XDS_SERVER")]
    pub xds_server: Option<String>,
    /// The node id Sluice presents to the xDS server [default: default].
    #[arg(long, env = "SLUICE_XDS_NODE_ID")]
    pub xds_node_id: Option<String>,
    /// CA certificates (PEM) of the xDS server: turns TLS on towards it.
    #[arg(long, env = "SLUICE_XDS_TLS_CA")]
    pub xds_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the xDS server (mTLS).
    #[arg(long, env = "SLUICE_XDS_TLS_CERT")]
    pub xds_tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, env = "SLUICE_XDS_TLS_KEY")]
    pub xds_tls_key: Option<PathBuf>,
    /// The name the xDS server's certificate must carry [default: its host].
    #[arg(long, env = "SLUICE_XDS_TLS_SERVER_NAME")]
    pub xds_tls_server_name: Option<String>,
}

/// The largest xDS response read, at most: a rule set is far smaller.
const MAX_MESSAGE_CAP: usize = 128 * 1024 * 1024;

pub(super) fn resolve(
    config: Option<PathBuf>,
    args: XdsArgs,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<RuleSource, SettingsError> {
    if let Some(path) = config {
        return Ok(RuleSource::Files(path));
    }
    let xds = match get("CONFIG_TYPE") {
        _ if args.xds_server.is_some() => true,
        None => false,
        Some(t) if t.eq_ignore_ascii_case("FILE") => false,
        Some(t) if t.eq_ignore_ascii_case("GRPC_XDS_SOTW") => true,
        Some(t) => {
            return Err(SettingsError::Env {
                name: "CONFIG_TYPE",
                value: t,
                reason: "expected FILE or GRPC_XDS_SOTW".into(),
            });
        }
    };
    if xds {
        return xds_settings(args, get).map(|x| RuleSource::Xds(Box::new(x)));
    }
    // The reference reads RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY.
    let root = get("RUNTIME_ROOT");
    let sub = get("RUNTIME_SUBDIRECTORY");
    if root.is_none() && sub.is_none() {
        return Err(SettingsError::Invalid(
            "no rule set given: pass --config PATH (or SLUICE_CONFIG, or the reference's \
             RUNTIME_ROOT/RUNTIME_SUBDIRECTORY), or --xds-server HOST:PORT"
                .into(),
        ));
    }
    let mut p = PathBuf::from(root.unwrap_or_else(|| "/srv/runtime_data/current".into()));
    if let Some(sub) = sub {
        p.push(sub);
    }
    p.push(get("RUNTIME_APPDIRECTORY").unwrap_or_else(|| "config".into()));
    Ok(RuleSource::Files(p))
}

fn xds_settings(
    args: XdsArgs,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<XdsSettings, SettingsError> {
    let env_bool = |name: &'static str| -> Result<Option<bool>, SettingsError> {
        get(name).map(|v| parse_bool(name, &v)).transpose()
    };
    let duration = |name: &'static str, default: Duration| -> Result<Duration, SettingsError> {
        Ok(go_duration(get, name)?.unwrap_or(default))
    };
    let server = args
        .xds_server
        .or_else(|| get("CONFIG_GRPC_XDS_SERVER_URL"))
        .unwrap_or_else(|| "localhost:18000".into());
    if server.contains("://")
        || !server
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(SettingsError::Invalid(format!(
            "xDS server {server:?}: expected host:port (CONFIG_GRPC_XDS_SERVER_URL)"
        )));
    }
    let path =
        |flag: Option<PathBuf>, name: &'static str| flag.or_else(|| get(name).map(PathBuf::from));
    // Sluice's flag turns TLS on; the reference's names apply with its switch, as there.
    let use_tls =
        args.xds_tls_ca.is_some() || env_bool("CONFIG_GRPC_XDS_SERVER_USE_TLS")? == Some(true);
    let ca = path(args.xds_tls_ca, "CONFIG_GRPC_XDS_SERVER_TLS_CACERT");
    let tls = if use_tls {
        let ca = ca.ok_or_else(|| {
            SettingsError::Invalid(
                "TLS to the xDS server needs its CA: CONFIG_GRPC_XDS_SERVER_TLS_CACERT or \
                 --xds-tls-ca"
                    .into(),
            )
        })?;
        let cert = path(args.xds_tls_cert, "CONFIG_GRPC_XDS_CLIENT_TLS_CERT");
        let key = path(args.xds_tls_key, "CONFIG_GRPC_XDS_CLIENT_TLS_KEY");
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(SettingsError::Invalid(
                    "a client certificate for the xDS server needs both its certificate and key"
                        .into(),
                ));
            }
        };
        for file in std::iter::once(&ca).chain(identity.iter().flat_map(|(c, k)| [c, k])) {
            std::fs::metadata(file).map_err(|e| {
                SettingsError::Invalid(format!("xDS TLS file {}: {e}", file.display()))
            })?;
        }
        Some(XdsTls {
            ca,
            identity,
            server_name: args
                .xds_tls_server_name
                .or_else(|| get("CONFIG_GRPC_XDS_SERVER_TLS_SAN")),
        })
    } else {
        None
    };
    let random_factor = match get("XDS_CLIENT_BACKOFF_RANDOM_FACTOR") {
        None => 0.5,
        Some(v) => match v.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => f,
            _ => {
                return Err(SettingsError::Env {
                    name: "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
                    value: v,
                    reason: "expected a number between 0 and 1".into(),
                });
            }
        },
    };
    let max_message_bytes = match get("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES") {
        None => 4 * 1024 * 1024,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1024..=MAX_MESSAGE_CAP).contains(&n) => n,
            _ => {
                return Err(SettingsError::Env {
                    name: "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES",
                    value: v,
                    reason: format!("expected bytes between 1024 and {MAX_MESSAGE_CAP}"),
                });
            }
        },
    };
    let settings = XdsSettings {
        server,
        node_id: args
            .xds_node_id
            .or_else(|| get("CONFIG_GRPC_XDS_NODE_ID"))
            .unwrap_or_else(|| "default".into()),
        node_metadata: pairs(get, "CONFIG_GRPC_XDS_NODE_METADATA", false)?,
        headers: pairs(get, "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", true)?,
        tls,
        connect_retry: duration(
            "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
            Duration::from_secs(3),
        )?,
        backoff: Backoff {
            initial: duration(
                "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
                Duration::from_secs(10),
            )?,
            max: duration("XDS_CLIENT_BACKOFF_MAX_INTERVAL", Duration::from_secs(60))?,
            random_factor,
            jitter: env_bool("XDS_CLIENT_BACKOFF_JITTER")?.unwrap_or(true),
        },
        max_message_bytes,
        force_start: env_bool("FORCE_START_WITHOUT_INITIAL_CONFIG")?.unwrap_or(false),
    };
    if settings.connect_retry.is_zero() || settings.backoff.initial.is_zero() {
        return Err(SettingsError::Invalid(
            "the xDS retry intervals must be more than 0".into(),
        ));
    }
    Ok(settings)
}

/// `key:value,key=value` pairs (the reference's map syntax); `header`: each must be a valid gRPC
/// metadata name and value.
fn pairs(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    header: bool,
) -> Result<Vec<(String, String)>, SettingsError> {
    let Some(value) = get(name) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let bad = |reason: &str| SettingsError::Env {
                name,
                value: value.clone(),
                reason: format!("{pair:?}: {reason}"),
            };
            let (k, v) = pair
                .split_once([':', '='])
                .ok_or_else(|| bad("expected key:value"))?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() {
                return Err(bad("an empty key"));
            }
            if header {
                let name_ok = k
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
                    && !k.ends_with("-bin");
                if !name_ok || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                    return Err(bad(
                        "a header needs a lower-case name and a printable ASCII value",
                    ));
                }
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

impl RuleSource {
    /// For logs: the path, or `xds://host:port`.
    pub fn describe(&self) -> String {
        match self {
            Self::Files(path) => path.display().to_string(),
            Self::Xds(xds) => format!("xds://{}", xds.server),
        }
    }
}
