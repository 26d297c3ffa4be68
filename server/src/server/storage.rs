//! Opening the counter store the settings name: memory, or Redis (one server, Sentinel or
//! Cluster, with TLS) inside the layers `storage::stack` composes (the time budget, circuit
//! breaker, L1 cache and failure policy, and with `--local-batch` the batched local counting in
//! front of them).

use std::sync::Arc;

use super::StartupError;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::settings::{Backend, Settings};
use crate::storage::backend::memory::MemoryStore;
use crate::storage::backend::redis::{
    RedisClock, RedisOptions, RedisStore, RedisTarget, RedisType, TargetOptions, TlsFiles,
};
use crate::storage::layer::breaker::BreakerConfig;
use crate::storage::layer::failover::FailoverOptions;
use crate::storage::layer::local_batch::BatchOptions;
use crate::storage::stack::{self, Stack};
use crate::storage::{AnyStore, StoreError};

/// The counter store, and a client for the Redis of runtime overrides when there is one: the
/// counters' Redis when it is one server (where overrides live by default), or
/// `--override-redis-url`.
pub(super) async fn open(
    settings: &Settings,
    metrics: &mut Metrics,
    clock: &Arc<dyn Clock>,
) -> Result<(AnyStore, Option<redis::Client>), StartupError> {
    let (store, counters) = open_counters(settings, metrics, clock).await?;
    let overrides = match &settings.admin.override_redis_url {
        Some(url) => Some(override_client(settings, url)?),
        None => counters,
    };
    Ok((store, overrides))
}

/// The override store's own Redis: one server, with the credentials its URL carries, over TLS
/// for `rediss://`, verified with the same CA bundle and presenting the same client certificate
/// as the counters' connections (a Redis signed by a private CA is reached as the counters are).
fn override_client(settings: &Settings, url: &str) -> Result<redis::Client, StartupError> {
    let target = RedisTarget::parse(
        RedisType::Single,
        url,
        TargetOptions {
            tls_files: tls_files(settings)?,
            ..TargetOptions::default()
        },
    )
    .map_err(|e| StoreError::Server(format!("--override-redis-url: {e}")))?;
    target
        .client(target.nodes[0].clone())
        .map_err(|e| StoreError::Server(format!("--override-redis-url: {e}")).into())
}

async fn open_counters(
    settings: &Settings,
    metrics: &mut Metrics,
    clock: &Arc<dyn Clock>,
) -> Result<(AnyStore, Option<redis::Client>), StartupError> {
    Ok(match settings.backend {
        Backend::Memory => {
            let store = Arc::new(MemoryStore::new(settings.max_counters, Arc::clone(clock)));
            store.spawn_sweeper(std::time::Duration::from_secs(10));
            metrics.register_collector(Box::new(store.metrics()));
            (AnyStore::Memory(store), None)
        }
        Backend::Redis => {
            let target = redis_target(settings)?;
            let client = match target.kind {
                RedisType::Single => target.client(target.nodes[0].clone()).ok(),
                _ => None,
            };
            let backend = open_backend(settings, target, metrics.registry()).await?;
            let store = stack::shared(backend, layers(settings), clock, metrics.registry());
            (store, client)
        }
    })
}

/// The TLS files named in the settings, read.
fn tls_files(settings: &Settings) -> Result<TlsFiles, StartupError> {
    let s = &settings.store;
    let read = |path: &std::path::PathBuf| {
        std::fs::read(path).map_err(|e| StartupError::File {
            path: path.clone(),
            reason: e.to_string(),
        })
    };
    Ok(TlsFiles {
        ca: s.tls_ca.as_ref().map(read).transpose()?,
        client: match (&s.tls_cert, &s.tls_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        },
    })
}

/// Where Redis is, with credentials and TLS files read.
fn redis_target(settings: &Settings) -> Result<RedisTarget, StartupError> {
    let s = &settings.store;
    let tls_files = tls_files(settings)?;
    let address = settings.redis_url.as_deref().unwrap_or_default();
    let target = RedisTarget::parse(
        s.redis_type,
        address,
        TargetOptions {
            auth: s.redis_auth.clone(),
            sentinel_auth: s.sentinel_auth.clone(),
            tls: s.tls,
            tls_files,
        },
    )
    .map_err(StoreError::Server)?;
    Ok(target)
}

/// Redis at `settings`' address. Returns without waiting for an unreachable Redis beyond
/// `--redis-timeout-ms` (it is connected in the background).
async fn open_backend(
    settings: &Settings,
    target: RedisTarget,
    registry: &mut prometheus_client::registry::Registry,
) -> Result<RedisStore, StartupError> {
    let redis = RedisStore::open(
        target,
        RedisOptions {
            timeout: settings.redis_timeout,
            pool_size: settings.redis_pool_size,
            clock: RedisClock::Redis,
            key_prefix: settings.key_prefix.clone(),
            pipeline: settings.store.pipeline,
        },
    )
    .await?;
    registry.register_collector(Box::new(redis.metrics()));
    Ok(redis)
}

/// The layers the settings put around a shared backend.
fn layers(settings: &Settings) -> Stack {
    let s = &settings.store;
    Stack {
        failover: FailoverOptions {
            budget: s.budget,
            default_mode: s.failure_mode,
            deny_with: s.deny_with,
            breaker: BreakerConfig {
                consecutive_failures: s.breaker_failures,
                open_for: s.breaker_open,
                ..BreakerConfig::default()
            },
            slow_timeout: settings.redis_timeout,
        },
        l1_entries: s.l1_entries,
        share: s.share,
        max_counters: settings.max_counters,
        local_batch: s.local_batch.map(|interval| BatchOptions {
            interval,
            share: s.share,
            max_counters: settings.max_counters,
        }),
    }
}
