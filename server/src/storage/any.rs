//! The configured backend as one [`Store`] (dispatched by `match`, without boxing, on the hot
//! path), and any store behind an `Arc`.

use std::future::Future;

use super::{
    Batch, FailureMode, FirstSeen, Lease, Outcome, Policy, QueueOp, QueueOutcome, Store,
    StoreError, backend, layer,
};

/// The configured backend, dispatched without boxing on the hot path.
pub enum AnyStore {
    Memory(std::sync::Arc<backend::memory::MemoryStore>),
    /// Redis behind the time budget, breaker, L1 cache and failure policy.
    Redis(layer::failover::Failover<backend::redis::RedisStore>),
    /// The same, with fixed windows counted locally between flushes (`--local-batch`).
    Batched(layer::local_batch::Batched<layer::failover::Failover<backend::redis::RedisStore>>),
}

impl AnyStore {
    /// The Redis backend under the layers, for what shares its connections (a notification
    /// stream); `None` for the memory store.
    pub fn redis(&self) -> Option<&backend::redis::RedisStore> {
        match self {
            AnyStore::Memory(_) => None,
            AnyStore::Redis(s) => Some(s.shared()),
            AnyStore::Batched(s) => Some(s.shared().shared()),
        }
    }

    /// Calls `listener` on every change of the Redis breaker's state; `false` for the memory
    /// store, which has no breaker.
    pub fn on_breaker_change(
        &self,
        listener: impl Fn(layer::breaker::BreakerState) + Send + Sync + 'static,
    ) -> bool {
        match self {
            AnyStore::Memory(_) => return false,
            AnyStore::Redis(s) => s.on_breaker_change(listener),
            AnyStore::Batched(s) => s.shared().on_breaker_change(listener),
        }
        true
    }
}

impl Store for AnyStore {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        match self {
            AnyStore::Memory(s) => s.apply(batch).await,
            AnyStore::Redis(s) => s.apply(batch).await,
            AnyStore::Batched(s) => s.apply(batch).await,
        }
    }

    async fn apply_or(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> Result<Outcome, StoreError> {
        match self {
            AnyStore::Memory(s) => s.apply(batch).await,
            AnyStore::Redis(s) => s.apply_or(batch, on_failure).await,
            AnyStore::Batched(s) => s.apply_or(batch, on_failure).await,
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self {
            AnyStore::Memory(s) => s.ping().await,
            AnyStore::Redis(s) => s.ping().await,
            AnyStore::Batched(s) => s.ping().await,
        }
    }

    async fn holders(&self, key: &[u8]) -> Result<Vec<Lease>, StoreError> {
        match self {
            AnyStore::Memory(s) => s.holders(key).await,
            AnyStore::Redis(s) => s.holders(key).await,
            AnyStore::Batched(s) => s.holders(key).await,
        }
    }

    async fn queue(
        &self,
        key: &[u8],
        policy: &Policy,
        op: &QueueOp,
    ) -> Result<QueueOutcome, StoreError> {
        match self {
            AnyStore::Memory(s) => s.queue(key, policy, op).await,
            AnyStore::Redis(s) => s.queue(key, policy, op).await,
            AnyStore::Batched(s) => s.queue(key, policy, op).await,
        }
    }

    async fn first_seen(
        &self,
        key: &[u8],
        keep: std::time::Duration,
        create: bool,
    ) -> Result<FirstSeen, StoreError> {
        match self {
            AnyStore::Memory(s) => s.first_seen(key, keep, create).await,
            AnyStore::Redis(s) => s.first_seen(key, keep, create).await,
            AnyStore::Batched(s) => s.first_seen(key, keep, create).await,
        }
    }

    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        match self {
            AnyStore::Memory(s) => s.queue_changes(),
            AnyStore::Redis(s) => s.queue_changes(),
            AnyStore::Batched(s) => s.queue_changes(),
        }
    }
}

impl<T: Store> Store for std::sync::Arc<T> {
    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<Outcome, StoreError>> + Send {
        (**self).apply(batch)
    }

    fn apply_or(
        &self,
        batch: &Batch,
        on_failure: Option<FailureMode>,
    ) -> impl Future<Output = Result<Outcome, StoreError>> + Send {
        (**self).apply_or(batch, on_failure)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).ping()
    }

    fn holders(&self, key: &[u8]) -> impl Future<Output = Result<Vec<Lease>, StoreError>> + Send {
        (**self).holders(key)
    }

    fn queue(
        &self,
        key: &[u8],
        policy: &Policy,
        op: &QueueOp,
    ) -> impl Future<Output = Result<QueueOutcome, StoreError>> + Send {
        (**self).queue(key, policy, op)
    }

    fn first_seen(
        &self,
        key: &[u8],
        keep: std::time::Duration,
        create: bool,
    ) -> impl Future<Output = Result<FirstSeen, StoreError>> + Send {
        (**self).first_seen(key, keep, create)
    }

    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        (**self).queue_changes()
    }
}
