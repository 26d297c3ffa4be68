//! Keeping a replica's overrides current: reload when the store signals a change (Redis
//! pub/sub, etcd watch), and every poll interval in any case, so a lost notification or a broken
//! subscription delays a change by one interval at most. A reload that finds nothing new changes
//! nothing; an unreachable store keeps the overrides last loaded.

use std::sync::Arc;
use std::time::Duration;

use super::OverrideStore;
use crate::limiter::RateLimiter;
use crate::storage::Store;

/// Loads the overrides into `limiter` now, then keeps them current until the task is dropped.
pub fn spawn<S: Store>(
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
