//! [`Failover`] as a [`Store`]: batches go through its decision (cache, breaker, budget,
//! failure policy); the pool, queue and trial operations go to the shared store within the
//! budget, or fail while the breaker is open.

use std::time::Duration;

use super::{Failover, FailureMode};
use crate::storage::layer::breaker::BreakerState;
use crate::storage::{Batch, Outcome, Store, StoreError};

impl<S: Store> Store for Failover<S> {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        self.inner.decide(batch, None).await.0
    }

    async fn apply_or(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> Result<Outcome, StoreError> {
        self.inner.decide(batch, on_failure).await.0
    }

    /// A pool's holders, from the shared store within the budget (an error while it cannot
    /// answer: the local share holds no leases worth listing).
    async fn holders(&self, key: &[u8]) -> Result<Vec<crate::algorithm::lease::Lease>, StoreError> {
        if self.inner.breaker.state() == BreakerState::Open {
            return Err(StoreError::CircuitOpen);
        }
        let budget = self.inner.options.slow_timeout;
        match tokio::time::timeout(budget, self.inner.shared.holders(key)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(budget)),
        }
    }

    /// A queue operation, on the shared store within the budget. While the store cannot answer
    /// this fails, and the limiter decides the request as if the pool had no queue (under the
    /// domain's failure policy).
    async fn queue(
        &self,
        key: &[u8],
        policy: &crate::algorithm::Policy,
        op: &crate::storage::QueueOp,
    ) -> Result<crate::storage::QueueOutcome, StoreError> {
        if self.inner.breaker.state() == BreakerState::Open {
            return Err(StoreError::CircuitOpen);
        }
        let budget = self.inner.options.slow_timeout;
        match tokio::time::timeout(budget, self.inner.shared.queue(key, policy, op)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(budget)),
        }
    }

    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        self.inner.shared.queue_changes()
    }

    /// A trial's first sighting, from the shared store within the budget (an error while it
    /// cannot answer: the limiter then enforces).
    async fn first_seen(
        &self,
        key: &[u8],
        keep: Duration,
        create: bool,
    ) -> Result<crate::storage::FirstSeen, StoreError> {
        if self.inner.breaker.state() == BreakerState::Open {
            return Err(StoreError::CircuitOpen);
        }
        let budget = self.inner.options.budget;
        match tokio::time::timeout(budget, self.inner.shared.first_seen(key, keep, create)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(budget)),
        }
    }

    /// Not ready until the breaker has closed (checks are decided against the store again);
    /// then the shared store's own ping.
    async fn ping(&self) -> Result<(), StoreError> {
        if self.inner.breaker.state() != BreakerState::Closed {
            return Err(StoreError::CircuitOpen);
        }
        let timeout = self.inner.options.slow_timeout;
        match tokio::time::timeout(timeout, self.inner.shared.ping()).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }
}
