//! Concurrency pools' metrics, per rule.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::RuleLabels;

/// Concurrency pools, per rule: lease operations and the pool's depth as last seen by this
/// instance.
#[derive(Debug, Default)]
pub struct LeaseStats {
    pub acquisitions: Family<RuleLabels, Counter>,
    pub renewals: Family<RuleLabels, Counter>,
    pub rejections: Family<RuleLabels, Counter>,
    pub releases: Family<RuleLabels, Counter>,
    pub in_use: Family<RuleLabels, Gauge>,
    pub capacity: Family<RuleLabels, Gauge>,
}

impl LeaseStats {
    pub(super) fn register(&self, registry: &mut Registry) {
        let counters = [
            ("lease_acquisitions", "Leases taken", &self.acquisitions),
            ("lease_renewals", "Leases renewed", &self.renewals),
            (
                "lease_rejections",
                "Acquisitions refused because the pool was full",
                &self.rejections,
            ),
            (
                "lease_releases",
                "Leases given back before expiring",
                &self.releases,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "lease_pool_in_use",
            "Leases held in a pool, as of this instance's latest operation on it",
            self.in_use.clone(),
        );
        registry.register(
            "lease_pool_capacity",
            "Leases a pool can hold",
            self.capacity.clone(),
        );
    }
}
