//! Pool queues' metrics, per rule: waiters, how their waits ended, how long they waited, and
//! grants by the tenant's weight (weights come from the rule file, so that label is bounded by
//! it; who waits, per tenant, is the admin API's top consumers, never a label).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{RuleLabels, Shared};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub rule: Shared,
    /// `granted`, `timed_out`, `full`, `unweighted`, `oversized`, `refused` (by another limit),
    /// `withdrawn` (its caller went away) or `error` (the store could not queue).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct WeightLabels {
    pub rule: Shared,
    pub weight: u32,
}

#[derive(Debug)]
pub struct QueueStats {
    pub waiting: Family<RuleLabels, Gauge>,
    pub waits: Family<OutcomeLabels, Counter>,
    pub wait_seconds: Family<RuleLabels, Histogram>,
    pub grants: Family<WeightLabels, Counter>,
}

impl Default for QueueStats {
    fn default() -> Self {
        Self {
            waiting: Family::default(),
            waits: Family::default(),
            // 1 ms .. ~65 s: a queue's `max_wait_ms` is at most 60 s.
            wait_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            }),
            grants: Family::default(),
        }
    }
}

impl QueueStats {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "queue_waiting",
            "Requests waiting in a pool's queue on this instance",
            self.waiting.clone(),
        );
        registry.register(
            "queue_waits",
            "Requests that queued for a pool, by how their wait ended",
            self.waits.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time requests spent in a pool's queue, whatever the outcome",
            self.wait_seconds.clone(),
        );
        registry.register(
            "queue_grants",
            "Slots granted to queued requests, by the tenant's weight",
            self.grants.clone(),
        );
    }
}
