//! Scrape-time metrics of a Redis store.

use std::sync::Arc;

use super::{RedisStore, batcher};

/// Scrape-time metrics of a Redis store: the expired leases its scripts reclaimed, and the script
/// calls sent with the requests they carried (their ratio is the cross-request batch depth).
pub struct RedisStoreMetrics(Arc<std::sync::atomic::AtomicU64>, Arc<batcher::Stats>);

impl std::fmt::Debug for RedisStoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStoreMetrics")
    }
}

impl RedisStore {
    pub fn metrics(&self) -> RedisStoreMetrics {
        RedisStoreMetrics(Arc::clone(&self.leases_reclaimed), Arc::clone(&self.stats))
    }

    /// Expired leases the script reclaimed since the store was opened.
    pub fn leases_reclaimed(&self) -> u64 {
        self.leases_reclaimed
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl prometheus_client::collector::Collector for RedisStoreMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let reclaimed = prometheus_client::metrics::counter::ConstCounter::new(
            self.0.load(std::sync::atomic::Ordering::Relaxed),
        );
        reclaimed.encode(encoder.encode_descriptor(
            "lease_expirations_reclaimed",
            "Expired leases removed from their pools by an operation on the pool",
            None,
            reclaimed.metric_type(),
        )?)?;
        let load = |a: &std::sync::atomic::AtomicU64| {
            prometheus_client::metrics::counter::ConstCounter::new(
                a.load(std::sync::atomic::Ordering::Relaxed),
            )
        };
        let calls = load(&self.1.calls);
        calls.encode(encoder.encode_descriptor(
            "redis_script_calls",
            "Decision scripts sent to Redis (one per request, or per batch of requests queued \
             while the calls in flight ran, per node on a Cluster, where a request across \
             slots sends one per slot)",
            None,
            calls.metric_type(),
        )?)?;
        let requests = load(&self.1.requests);
        requests.encode(encoder.encode_descriptor(
            "redis_script_requests",
            "Requests those scripts decided: divided by the calls, the batch depth",
            None,
            requests.metric_type(),
        )?)
    }
}
