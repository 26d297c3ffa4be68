//! Quota notifications at start-up: the `--notifications` file read (refused, with every error's
//! position, like a rule file), the dispatcher started on the counters' Redis, the Redis breaker's
//! changes and the runtime overrides' expiries fed to it. Each domain's own sinks follow the rule
//! set (the limiter hands every reload to the notifier).

use std::sync::Arc;

use super::StartupError;
use crate::clock::Clock;
use crate::config::LoadOptions;
use crate::limiter::RateLimiter;
use crate::metrics::Metrics;
use crate::notify::{self, Notifier, Setup};
use crate::settings::{Backend, Settings};
use crate::storage::AnyStore;

/// The notifier of this process: started even without a `--notifications` file, so a rule
/// reload that adds a domain's block is served without a restart.
pub(super) fn start(
    settings: &Settings,
    store: &AnyStore,
    clock: &Arc<dyn Clock>,
    metrics: &mut Metrics,
) -> Result<Notifier, StartupError> {
    let opts = LoadOptions {
        memory_store: settings.backend == Backend::Memory,
        ..LoadOptions::default()
    };
    let global =
        match &settings.notifications {
            None => None,
            Some(path) => Some(crate::config::load_notifications(path, &opts).map_err(
                |errors| StartupError::Notifications {
                    path: path.clone(),
                    errors,
                },
            )?),
        };
    let notifier = notify::start(
        Setup {
            global,
            redis: store.redis().cloned(),
            clock: Arc::clone(clock),
        },
        metrics.registry(),
    );
    let on_breaker = notifier.clone();
    store.on_breaker_change(move |state| on_breaker.breaker_changed(state));
    Ok(notifier)
}

/// Feeds the overrides in force to the notifier's expiry scan, for as long as `limiter` lives.
pub(super) fn follow_overrides(notifier: &Notifier, limiter: &Arc<RateLimiter<AnyStore>>) {
    let limiter = Arc::downgrade(limiter);
    notifier.watch_overrides(move || {
        let limiter = limiter.upgrade()?;
        let list = limiter.overrides().overrides().cloned().collect();
        Some(list)
    });
}
