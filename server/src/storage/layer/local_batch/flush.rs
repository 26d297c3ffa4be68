//! The flush: pending hits to the shared store every interval, counts back into the views.

use std::sync::Weak;

use super::{Inner, Shared, answered_window, micros, window_start};
use crate::algorithm::Claim;
use crate::storage::{Admission, Batch, Hit, Role, StoreError};

/// Counters per flush call.
pub const CHUNK: usize = 128;

impl<S: Shared> Inner<S> {
    pub(super) async fn flush(&self) -> Result<u64, StoreError> {
        let now = micros(&*self.clock);
        let mut taken: Vec<(Hit, u64)> = Vec::new();
        {
            let mut views = self.views.lock();
            let expired = &self.metrics.expired_hits;
            views.retain(|_, v| {
                if window_start(&v.policy, now) == v.start {
                    return true;
                }
                expired.inc_by(v.pending);
                v.pending = 0;
                v.in_flight > 0
            });
            for (key, v) in views.iter_mut().filter(|(_, v)| v.pending > 0) {
                let hit = Hit {
                    key: key.clone(),
                    policy: v.policy,
                    delta: v.pending as i64,
                    role: Role::Shadow,
                    claim: Claim::None,
                };
                taken.push((hit, v.start));
                v.in_flight += v.pending;
                v.pending = 0;
            }
        }
        let mut flushed = 0;
        let mut failure = None;
        for chunk in taken.chunks(CHUNK) {
            let batch = Batch {
                hits: chunk.iter().map(|(h, _)| h.clone()).collect(),
                admission: Admission::Reconcile,
            };
            let sent = micros(&*self.clock);
            let result = match failure {
                Some(_) => None,
                None => Some(self.shared.decide(&batch, None).await.0),
            };
            let now = micros(&*self.clock);
            let mut views = self.views.lock();
            for (i, (hit, start)) in chunk.iter().enumerate() {
                let delta = hit.delta as u64;
                let Some(v) = views.get_mut(&hit.key).filter(|v| v.start == *start) else {
                    continue;
                };
                v.in_flight = v.in_flight.saturating_sub(delta);
                match &result {
                    Some(Ok(outcome)) => {
                        let r = &outcome.readings[i];
                        if answered_window(&hit.policy, sent, r) == v.start {
                            v.shared = v.shared.max(r.used_after);
                        }
                    }
                    _ if window_start(&v.policy, now) == v.start => v.pending += delta,
                    _ => {
                        self.metrics.expired_hits.inc_by(delta);
                    }
                }
            }
            match result {
                Some(Ok(_)) => {
                    let hits: u64 = chunk.iter().map(|(h, _)| h.delta as u64).sum();
                    self.metrics.flushes.inc();
                    self.metrics.flushed_hits.inc_by(hits);
                    flushed += hits;
                }
                Some(Err(e)) => {
                    self.metrics.flush_failures.inc();
                    failure = Some(e);
                }
                None => {}
            }
        }
        failure.map_or(Ok(flushed), Err)
    }
}

/// Flushes every interval; holds the store weakly, so it ends once the store is dropped.
pub(super) async fn flush_loop<S: Shared>(inner: Weak<Inner<S>>) {
    let Some(interval) = inner.upgrade().map(|i| i.options.interval) else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(i) = inner.upgrade() else {
            return;
        };
        if let Err(e) = i.flush().await {
            tracing::debug!(error = %e, "local hits not flushed yet; retrying next interval");
        }
    }
}
