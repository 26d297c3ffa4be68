//! Adaptive limits and standing at start-up: the reports `POST /reports` feeds, and the tasks of
//! the adaptive controller and of standing. The fleet's aggregates live where the overrides do
//! (Redis or etcd), so every replica adds its reports (and refused tenants) to the same place and
//! one of them decides each interval; with overrides in memory (one instance) the process
//! decides alone.

use std::sync::Arc;

use crate::adaptive::controller::{AdaptiveMetrics, Apply, Rules};
use crate::adaptive::fleet::Fleet;
use crate::adaptive::standing::{Standing, StandingMetrics};
use crate::adaptive::{Controller, Reports};
use crate::clock::Clock;
use crate::limiter::RateLimiter;
use crate::notify::Notifier;
use crate::overrides::OverrideStore;
use crate::settings::{OverrideBackend, Settings};
use crate::storage::Store;

/// The tasks started here; dropping it does not stop them (they end with the runtime).
pub(super) struct Tasks {
    _adaptive: tokio::task::JoinHandle<()>,
    _standing: tokio::task::JoinHandle<()>,
}

pub(super) fn start<S: Store>(
    settings: &Settings,
    limiter: &Arc<RateLimiter<S>>,
    store: &Arc<OverrideStore>,
    redis: Option<redis::Client>,
    clock: Arc<dyn Clock>,
    notifier: &Notifier,
) -> (Arc<Reports>, Tasks) {
    let metrics = limiter.metrics();
    let reports = Arc::new(Reports::new(metrics.adaptive_reports.clone()));
    // One fleet (one Redis connection) for both: their keys do not meet.
    let fleet = match (&settings.admin.override_store, redis) {
        (OverrideBackend::Redis, Some(client)) => Some(Fleet::redis(
            client,
            &settings.key_prefix,
            settings.redis_timeout,
        )),
        (OverrideBackend::Memory, _) => Some(Fleet::local()),
        (OverrideBackend::Etcd, _) => Some(Fleet::etcd(Arc::clone(store))),
        (OverrideBackend::Redis, None) => None,
    };
    let Some(fleet) = fleet.map(Arc::new) else {
        tracing::warn!(
            "adaptive limits and standing have no Redis connection for their fleet-wide \
             aggregates; their limits and weights stay as configured"
        );
        let idle = || tokio::spawn(async {});
        return (
            reports,
            Tasks {
                _adaptive: idle(),
                _standing: idle(),
            },
        );
    };
    let rules_of = Arc::clone(limiter);
    let rules: Rules = Arc::new(move || rules_of.rules());
    let apply_to = Arc::clone(limiter);
    let apply: Apply = Arc::new(move |list| {
        apply_to.set_overrides(list);
    });
    let controller = Arc::new(
        Controller::new(
            Arc::clone(&reports),
            Arc::clone(&fleet),
            Arc::clone(store),
            Arc::clone(&rules),
            Arc::clone(&apply),
            AdaptiveMetrics {
                limit: metrics.adaptive_limit.clone(),
                signal: metrics.adaptive_signal.clone(),
                decisions: metrics.adaptive_decisions.clone(),
            },
        )
        .with_notifier(notifier.clone()),
    );
    let standing = Arc::new(Standing::new(
        Arc::clone(limiter.refusals()),
        fleet,
        Arc::clone(store),
        rules,
        apply,
        StandingMetrics {
            penalised: metrics.standing_penalised.clone(),
            changes: metrics.standing_changes.clone(),
        },
    ));
    let tasks = Tasks {
        _adaptive: controller.spawn(Arc::clone(&clock)),
        _standing: standing.spawn(clock),
    };
    (reports, tasks)
}
