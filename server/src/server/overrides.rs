//! Runtime overrides at start-up: opening the store the settings name, the first load (bounded by
//! what is left of `--redis-timeout-ms` for Redis), and the task that keeps a replica's overrides
//! current: reload when the store signals a change (Redis pub/sub, an etcd watch), and every
//! poll interval in any case, so a lost notification or a broken subscription delays a change by
//! one interval at most. A reload that finds nothing new changes nothing; an unreachable store
//! keeps the overrides last loaded.

use std::sync::Arc;
use std::time::Duration;

use crate::limiter::RateLimiter;
use crate::overrides::OverrideStore;
use crate::overrides::backend::OverrideError;
use crate::settings::{OverrideBackend, Settings};
use crate::storage::Store;

/// Keeps `limiter`'s overrides current until the task is dropped.
pub(super) fn follow<S: Store>(
    store: Arc<OverrideStore>,
    limiter: Arc<RateLimiter<S>>,
    poll: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = store.changes();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(()) = async {
                    match changes.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            match store.load().await {
                Ok(list) => {
                    if failing {
                        tracing::info!(store = store.name(), "override store reachable again");
                        failing = false;
                    }
                    if limiter.set_overrides(list) {
                        tracing::info!(
                            store = store.name(),
                            overrides = limiter.overrides().overrides().count(),
                            "runtime overrides changed"
                        );
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(store = store.name(), error = %e, "cannot load overrides; keeping the last ones");
                        failing = true;
                    }
                }
            }
        }
    })
}

/// The store `settings` name. `redis` reaches the Redis of overrides: the one of
/// `--override-redis-url`, else the counters' (a single one), with the counters' TLS files
/// either way (`redis`). A Redis store connects on first use, so an unreachable Redis does not
/// hold up start-up.
pub(super) async fn open(
    settings: &Settings,
    redis: Option<redis::Client>,
) -> Result<OverrideStore, OverrideError> {
    // etcd gets at least a second per call; Redis what --redis-timeout-ms says.
    let timeout = match settings.admin.override_store {
        OverrideBackend::Etcd => settings.redis_timeout.max(Duration::from_secs(1)),
        _ => settings.redis_timeout,
    };
    Ok(match settings.admin.override_store {
        OverrideBackend::Memory => OverrideStore::memory(),
        OverrideBackend::Redis => {
            let Some(client) = redis else {
                return Err(OverrideError::Unreachable(
                    "overrides in Redis need --override-redis-url".into(),
                ));
            };
            let store = crate::overrides::backend::redis::RedisOverrides::new(
                client,
                &settings.key_prefix,
                timeout,
            );
            OverrideStore::Redis(Box::new(store))
        }
        OverrideBackend::Etcd => OverrideStore::Etcd(
            crate::overrides::backend::etcd::EtcdOverrides::connect(
                &settings.admin.etcd_endpoints,
                &settings.admin.etcd_prefix,
                timeout,
            )
            .await?,
        ),
    })
}

/// The first load into `limiter`. For Redis, bounded by `deadline` (what is left of
/// `--redis-timeout-ms` after the counters' connection) and not fatal: the counters' Redis may be
/// down at start-up, Sluice serves under the failure policies meanwhile, and [`follow`] loads the
/// overrides once Redis answers.
pub(super) async fn load<S: Store>(
    store: &OverrideStore,
    limiter: &RateLimiter<S>,
    settings: &Settings,
    deadline: tokio::time::Instant,
) -> Result<(), OverrideError> {
    let load = match store.name() {
        "redis" => tokio::time::timeout_at(deadline, store.load())
            .await
            .unwrap_or_else(|_| {
                Err(OverrideError::Unreachable(format!(
                    "no answer within --redis-timeout-ms ({:?})",
                    settings.redis_timeout
                )))
            }),
        _ => store.load().await,
    };
    match load {
        Ok(list) => {
            limiter.set_overrides(list);
            Ok(())
        }
        Err(e) if store.name() == "redis" => {
            tracing::warn!(error = %e, "cannot load overrides yet; they apply once Redis answers");
            Ok(())
        }
        Err(e) => Err(e),
    }
}
