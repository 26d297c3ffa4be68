//! Where Redis is and how to reach it: one primary, a primary behind Sentinel, or a Cluster; with
//! credentials and TLS.
//!
//! The address forms are the reference's (`REDIS_TYPE` / `REDIS_URL`):
//!
//! | type | address |
//! |---|---|
//! | `single` | `redis://[user:password@]host:port[/db]`, `rediss://…` for TLS (or the reference's `host:port`) |
//! | `sentinel` | `master_name,host:port,host:port,…`: the master's name, then the sentinels |
//! | `cluster` | `host:port,host:port,…`: any nodes of the cluster (seeds), or URLs |
//!
//! Credentials: in a single URL, or `--redis-auth` (`password` or `user:password`, the reference's
//! `REDIS_AUTH`) for every type; sentinels may have their own (`--redis-sentinel-auth`).
//!
//! **TLS** (rustls, `rediss://` or `--redis-tls`): the server certificate is checked against the
//! CA bundle given (`--redis-tls-ca`, else the system's roots) and against the host name used to
//! connect, which is also the SNI name: connect by the name the certificate carries. A client
//! certificate and key (`--redis-tls-cert`, `--redis-tls-key`) enable mutual TLS.

use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo,
    TlsCertificates, TlsMode,
};

/// How Redis is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisType {
    Single,
    Sentinel,
    Cluster,
}

impl RedisType {
    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "single" | "standalone" => Some(RedisType::Single),
            "sentinel" => Some(RedisType::Sentinel),
            "cluster" => Some(RedisType::Cluster),
            _ => None,
        }
    }
}

/// PEM files for TLS, read at start-up.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// CA bundle to check servers against; the system roots when absent.
    pub ca: Option<Vec<u8>>,
    /// Client certificate chain and key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsFiles {
    fn certificates(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: self
                .client
                .clone()
                .map(|(client_cert, client_key)| ClientTlsConfig {
                    client_cert,
                    client_key,
                }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Credentials: a password, or a user and a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: Option<String>,
    pub password: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("user", &self.user).finish()
    }
}

impl Auth {
    /// The reference's `REDIS_AUTH` form: `password` or `user:password`.
    pub fn parse(text: &str) -> Self {
        match text.split_once(':') {
            Some((user, password)) => Auth {
                user: Some(user.to_string()),
                password: password.to_string(),
            },
            None => Auth {
                user: None,
                password: text.to_string(),
            },
        }
    }

    fn apply(&self, info: RedisConnectionInfo) -> RedisConnectionInfo {
        let info = info.set_password(self.password.clone());
        match &self.user {
            Some(user) => info.set_username(user.clone()),
            None => info,
        }
    }
}

/// Everything needed to connect, validated.
#[derive(Clone)]
pub struct RedisTarget {
    pub kind: RedisType,
    /// Single: the primary. Cluster: the seeds. Sentinel: the sentinels.
    pub nodes: Vec<ConnectionInfo>,
    /// Sentinel: the master's name.
    pub master: Option<String>,
    /// Whether connections use TLS.
    pub tls: bool,
    pub tls_files: TlsFiles,
    /// Credentials of the data nodes (Sentinel: of the master).
    pub auth: Option<Auth>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        f.debug_struct("RedisTarget")
            .field("kind", &self.kind)
            .field("nodes", &nodes)
            .field("master", &self.master)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Options read from settings, beyond the address.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    pub auth: Option<Auth>,
    pub sentinel_auth: Option<Auth>,
    /// TLS even for addresses without `rediss://`.
    pub tls: bool,
    pub tls_files: TlsFiles,
}

impl RedisTarget {
    /// Reads `address` as `kind` describes it. Errors say what is wrong with the address.
    pub fn parse(kind: RedisType, address: &str, opts: TargetOptions) -> Result<Self, String> {
        let parts: Vec<&str> = address
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        let (master, node_parts) = match kind {
            RedisType::Single if parts.len() != 1 => {
                return Err(format!(
                    "a single Redis takes one address, not {} (use --redis-type cluster or \
                     sentinel for several)",
                    parts.len()
                ));
            }
            RedisType::Sentinel => match parts.split_first() {
                Some((name, sentinels)) if !sentinels.is_empty() && !name.contains(':') => {
                    (Some(name.to_string()), sentinels.to_vec())
                }
                _ => {
                    return Err(
                        "a Sentinel address is `master_name,host:port[,host:port…]`: the master's \
                         name, then at least one sentinel"
                            .into(),
                    );
                }
            },
            _ if parts.is_empty() => return Err("no Redis address given".into()),
            _ => (None, parts),
        };
        let any_tls = opts.tls || node_parts.iter().any(|p| p.starts_with("rediss://"));
        let node_auth = match kind {
            RedisType::Sentinel => opts.sentinel_auth.as_ref(),
            _ => opts.auth.as_ref(),
        };
        let nodes = node_parts
            .iter()
            .map(|p| node(p, any_tls, node_auth))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(RedisTarget {
            kind,
            nodes,
            master,
            tls: any_tls,
            tls_files: opts.tls_files,
            auth: opts.auth,
        })
    }

    /// A client for one data node (a single primary, or the master Sentinel named).
    pub fn client(&self, info: ConnectionInfo) -> redis::RedisResult<redis::Client> {
        if self.tls {
            redis::Client::build_with_tls(info, self.tls_files.certificates())
        } else {
            redis::Client::open(info)
        }
    }

    /// The Cluster client, built from the seeds.
    pub fn cluster_client(
        &self,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let mut builder = redis::cluster::ClusterClient::builder(self.nodes.clone())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
            // Redirections and a reconnect are retried within the call; the time budget bounds
            // the whole call anyway.
            .retries(3)
            .min_retry_wait(5)
            .max_retry_wait(100);
        if self.tls {
            builder = builder
                .tls(TlsMode::Secure)
                .certs(self.tls_files.certificates());
        }
        if let Some(auth) = &self.auth {
            builder = builder.password(auth.password.clone());
            if let Some(user) = &auth.user {
                builder = builder.username(user.clone());
            }
        }
        builder.build()
    }

    /// The Sentinel client that finds the master.
    pub fn sentinel_client(&self) -> redis::RedisResult<SentinelClient> {
        let master = self.master.clone().unwrap_or_default();
        let addrs = self.nodes.iter().map(|n| n.addr().clone());
        let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)?;
        let sentinel = self.nodes.first().map(|n| n.redis_settings().clone());
        if let Some(user) = sentinel.as_ref().and_then(|s| s.username()) {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = sentinel.as_ref().and_then(|s| s.password()) {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some(auth) = &self.auth {
            builder = builder.set_client_to_redis_password(&auth.password);
            if let Some(user) = &auth.user {
                builder = builder.set_client_to_redis_username(user);
            }
        }
        if self.tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_certificates(self.tls_files.certificates())
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_redis_certificates(self.tls_files.certificates());
        }
        builder.build()
    }
}

/// One node: a URL, or the reference's `host:port`.
fn node(text: &str, tls: bool, auth: Option<&Auth>) -> Result<ConnectionInfo, String> {
    let url = if text.contains("://") {
        text.to_string()
    } else {
        let scheme = if tls { "rediss" } else { "redis" };
        format!("{scheme}://{text}")
    };
    let info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| format!("{text:?} is not a Redis address: {e}"))?;
    let info = match (info.addr().clone(), tls) {
        (ConnectionAddr::Tcp(host, port), true) => info.set_addr(ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }),
        (ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. }, _) => info,
        _ => return Err(format!("{text:?}: only TCP addresses are supported")),
    };
    // Credentials in the URL win over the separate setting.
    let has_url_auth = info.redis_settings().password().is_some();
    Ok(match auth {
        Some(auth) if !has_url_auth => {
            let settings = auth.apply(info.redis_settings().clone());
            info.set_redis_settings(settings)
        }
        _ => info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: RedisType, text: &str) -> Result<RedisTarget, String> {
        RedisTarget::parse(kind, text, TargetOptions::default())
    }

    #[test]
    fn the_reference_forms() {
        let t = parse(
            RedisType::Sentinel,
            "mymaster,127.0.0.1:26379, 127.0.0.1:26380",
        )
        .unwrap();
        assert_eq!(t.master.as_deref(), Some("mymaster"));
        assert_eq!(t.nodes.len(), 2);
        let t = parse(RedisType::Cluster, "127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert_eq!(t.nodes[1].addr().to_string(), "127.0.0.1:7001");
        let t = parse(RedisType::Single, "redis://u:p@127.0.0.1:6379/2").unwrap();
        assert_eq!(t.nodes[0].redis_settings().db(), 2);
        assert!(!t.tls);
        assert!(
            parse(RedisType::Single, "rediss://localhost:6380")
                .unwrap()
                .tls
        );
        assert_eq!(RedisType::parse("CLUSTER"), Some(RedisType::Cluster));
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            parse(RedisType::Single, "a:1,b:2")
                .unwrap_err()
                .contains("one address")
        );
        assert!(
            parse(RedisType::Sentinel, "127.0.0.1:26379")
                .unwrap_err()
                .contains("master")
        );
        assert!(
            parse(RedisType::Cluster, "")
                .unwrap_err()
                .contains("no Redis")
        );
        assert!(parse(RedisType::Cluster, "http://x").is_err());
    }

    #[test]
    fn separate_credentials_and_tls_apply_to_every_node() {
        let opts = TargetOptions {
            auth: Some(Auth::parse("sluice:secret")),
            tls: true,
            ..Default::default()
        };
        let t =
            RedisTarget::parse(RedisType::Cluster, "h1:7000,redis://o:x@h2:7001", opts).unwrap();
        assert_eq!(t.nodes[0].redis_settings().username(), Some("sluice"));
        assert_eq!(t.nodes[0].redis_settings().password(), Some("secret"));
        assert_eq!(t.nodes[1].redis_settings().username(), Some("o"));
        assert!(matches!(t.nodes[0].addr(), ConnectionAddr::TcpTls { .. }));
        assert!(matches!(t.nodes[1].addr(), ConnectionAddr::TcpTls { .. }));
        assert!(!format!("{t:?}").contains("secret"));
    }
}
