//! Composing a shared backend with its layers, in the order a check's batch passes through them
//! (see [`super::layer`]): `--local-batch`'s local views, then the failover layer (the L1
//! over-limit cache, the breaker, the time budget and the failure policy with its local share),
//! then the backend. Start-up (`server`) reads the settings into a [`Stack`]; this module
//! knows nothing of settings.

use std::sync::Arc;

use prometheus_client::registry::Registry;

use super::AnyStore;
use super::backend::redis::RedisStore;
use super::layer::failover::{Failover, FailoverOptions};
use super::layer::l1::OverLimitCache;
use super::layer::local_batch::{BatchOptions, Batched};
use super::layer::local_share::{LocalShare, Share};
use crate::clock::Clock;

/// The layers around a shared backend.
#[derive(Debug, Clone)]
pub struct Stack {
    pub failover: FailoverOptions,
    /// Counters the L1 over-limit cache remembers; 0 turns it off.
    pub l1_entries: usize,
    /// This replica's share of every limit, for `failure_mode: local`.
    pub share: Share,
    /// Most counters the local share (and the local views) keep.
    pub max_counters: usize,
    /// `--local-batch`: fixed windows counted locally between flushes.
    pub local_batch: Option<BatchOptions>,
}

/// `backend` inside its layers; every layer's metrics registered in `registry`.
pub fn shared(
    backend: RedisStore,
    stack: Stack,
    clock: &Arc<dyn Clock>,
    registry: &mut Registry,
) -> AnyStore {
    let l1 = (stack.l1_entries > 0).then(|| OverLimitCache::new(stack.l1_entries));
    let local = LocalShare::new(stack.share, stack.max_counters, Arc::clone(clock));
    let failover = Failover::new(backend, stack.failover, l1, local, registry);
    match stack.local_batch {
        None => AnyStore::Redis(failover),
        Some(options) => {
            AnyStore::Batched(Batched::new(failover, options, Arc::clone(clock), registry))
        }
    }
}
