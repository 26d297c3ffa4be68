//! Adaptive limits at start-up: the reports `POST /reports` feeds, and the controller's task.
//! The fleet's aggregate lives in the override store's Redis when overrides are in Redis, so
//! every replica adds its reports to the same hash and one of them decides each interval; with
//! overrides in memory (one instance) the process decides alone. With etcd overrides, each
//! replica would decide from its own reports and write over the others': the controller does not
//! run there (logged at start-up).

use std::sync::Arc;

use crate::adaptive::controller::AdaptiveMetrics;
use crate::adaptive::fleet::Fleet;
use crate::adaptive::{Controller, Reports};
use crate::clock::Clock;
use crate::limiter::RateLimiter;
use crate::overrides::OverrideStore;
use crate::settings::{OverrideBackend, Settings};
use crate::storage::Store;

pub(super) fn start<S: Store>(
    settings: &Settings,
    limiter: &Arc<RateLimiter<S>>,
    store: &Arc<OverrideStore>,
    redis: Option<redis::Client>,
    clock: Arc<dyn Clock>,
    notifier: &crate::notify::Notifier,
) -> (Arc<Reports>, tokio::task::JoinHandle<()>) {
    let metrics = limiter.metrics();
    let reports = Arc::new(Reports::new(metrics.adaptive_reports.clone()));
    let fleet = match (&settings.admin.override_store, redis) {
        (OverrideBackend::Redis, Some(client)) => {
            Fleet::redis(client, &settings.key_prefix, settings.redis_timeout)
        }
        (OverrideBackend::Memory, _) => Fleet::local(),
        _ => {
            tracing::warn!(
                "adaptive limits need the override store in Redis or memory; with etcd their \
                 limits stay as configured"
            );
            return (reports, tokio::spawn(async {}));
        }
    };
    let rules_of = Arc::clone(limiter);
    let apply_to = Arc::clone(limiter);
    let controller = Arc::new(
        Controller::new(
            Arc::clone(&reports),
            fleet,
            Arc::clone(store),
            Arc::new(move || rules_of.rules()),
            Arc::new(move |list| {
                apply_to.set_overrides(list);
            }),
            AdaptiveMetrics {
                limit: metrics.adaptive_limit.clone(),
                signal: metrics.adaptive_signal.clone(),
                decisions: metrics.adaptive_decisions.clone(),
            },
        )
        .with_notifier(notifier.clone()),
    );
    (reports, controller.spawn(clock))
}
