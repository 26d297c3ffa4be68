//! Settings of the admin API, runtime overrides and the lease API.

use std::path::PathBuf;
use std::time::Duration;

use super::SettingsError;
use super::args::{Backend, OverrideBackend};
use crate::storage::backend::redis::RedisType;

#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    /// Bearer tokens; the admin API is off without them.
    pub token_file: Option<PathBuf>,
    pub override_store: OverrideBackend,
    /// Redis for overrides: `--override-redis-url`, else (`None`) the counters' Redis.
    pub override_redis_url: Option<String>,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    pub override_poll: Duration,
    pub lease_max_wait: Duration,
}

/// The flags, as given.
pub(super) struct Args {
    pub token_file: Option<PathBuf>,
    pub store: Option<OverrideBackend>,
    pub redis_url: Option<String>,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: Option<String>,
    pub poll_ms: Option<u64>,
    pub lease_max_wait_ms: Option<u64>,
}

impl AdminSettings {
    pub(super) fn resolve(
        a: Args,
        backend: Backend,
        redis_type: RedisType,
    ) -> Result<Self, SettingsError> {
        // Overrides share the counters' Redis when it is one server (the client is made from the
        // same address, credentials and TLS settings). Sentinel and Cluster deployments keep them
        // in memory unless told where: the override store talks to one Redis only.
        let shared = backend == Backend::Redis && redis_type == RedisType::Single;
        let store = a.store.unwrap_or(if shared {
            OverrideBackend::Redis
        } else {
            OverrideBackend::Memory
        });
        let override_redis_url = a.redis_url;
        let etcd_endpoints: Vec<String> = a
            .etcd_endpoints
            .into_iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        match store {
            OverrideBackend::Redis if override_redis_url.is_none() && !shared => {
                return Err(SettingsError::Invalid(
                    "--override-store redis needs --override-redis-url, or the redis backend \
                     on one Redis (--redis-type single)"
                        .into(),
                ));
            }
            OverrideBackend::Etcd if etcd_endpoints.is_empty() => {
                return Err(SettingsError::Invalid(
                    "--override-store etcd needs --etcd-endpoints (e.g. http://127.0.0.1:2379)"
                        .into(),
                ));
            }
            _ => {}
        }
        if let Some(e) = etcd_endpoints
            .iter()
            .find(|e| !e.starts_with("http://") && !e.starts_with("https://"))
        {
            return Err(SettingsError::Invalid(format!(
                "etcd endpoint {e:?}: expected http://host:port"
            )));
        }
        let poll_ms = a.poll_ms.unwrap_or(1000);
        if poll_ms == 0 {
            return Err(SettingsError::Invalid(
                "--override-poll-ms must be at least 1".into(),
            ));
        }
        Ok(Self {
            token_file: a.token_file,
            override_store: store,
            override_redis_url,
            etcd_endpoints,
            etcd_prefix: a.etcd_prefix.unwrap_or_else(|| "/sluice".into()),
            override_poll: Duration::from_millis(poll_ms),
            lease_max_wait: Duration::from_millis(a.lease_max_wait_ms.unwrap_or(30_000)),
        })
    }
}
