//! How the shared store comes back: the breaker's trials are health probes made on a schedule,
//! not checks, and the last trial before closing hands the outage's local hits over first.
//!
//! Two promises follow. **Readiness does not wait for traffic**: a replica that fails readiness is
//! taken out of its Service and gets no checks, so trials made by checks would never come; the
//! probes close the breaker within a few hundred milliseconds of the store answering. **An outage
//! cannot be double-spent**: no check is decided against the store's counts until this replica's
//! local hits are in them (reconcile, then close), so a tenant that used its local share during
//! the outage finds it spent afterwards.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Inner;
use crate::storage::Store;
use crate::storage::layer::breaker::{BreakerState, Permit};
use crate::storage::layer::local_share::RECONCILE_EVERY;

/// How often the store is pinged while the breaker is not closed.
pub const PROBE_EVERY: Duration = Duration::from_millis(100);

/// While the breaker is not closed, pings the store every [`PROBE_EVERY`]. During an opening a
/// successful ping ends it early (and revives connections before checks need them); after it, a
/// ping is the breaker's trial, and the trial that would close the breaker must also hand every
/// local hit over, or it counts as failed.
pub(super) async fn probe_loop<S: Store>(inner: Weak<Inner<S>>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(i) = inner.upgrade() else {
            return;
        };
        if i.breaker.state() == BreakerState::Closed {
            continue;
        }
        let permit = i.breaker.permit(Instant::now());
        let answered = ping(&i).await;
        match permit {
            Permit::Trial => {
                let ok = if answered && i.breaker.trial_would_close() {
                    hand_over(&i).await
                } else {
                    answered
                };
                i.breaker.record(Instant::now(), Permit::Trial, ok);
            }
            _ if answered => i.breaker.probe_succeeded(Instant::now()),
            _ => {}
        }
    }
}

/// One health ping, bounded well below the probe period's multiples so a hung store does not
/// pile pings up.
async fn ping<S: Store>(i: &Inner<S>) -> bool {
    matches!(
        tokio::time::timeout(PROBE_EVERY * 3, i.shared.ping()).await,
        Ok(Ok(()))
    )
}

/// Hands every local hit over; whether all of them went.
async fn hand_over<S: Store>(i: &Inner<S>) -> bool {
    if i.local.pending() == 0 {
        return true;
    }
    match i.local.reconcile(&i.shared, i.options.slow_timeout).await {
        Ok(units) => {
            tracing::info!(
                units,
                "local hits added to the shared counters before deciding against them again"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand local hits over yet; the breaker stays open");
            false
        }
    }
}

/// Hands over what is left while the breaker is closed (hits a check let through locally just as
/// the breaker closed), whenever it closes and every [`RECONCILE_EVERY`]. Holds the store weakly,
/// so it ends (within that period) once the store is dropped.
pub(super) async fn reconcile_loop<S: Store>(
    inner: Weak<Inner<S>>,
    wake: Arc<tokio::sync::Notify>,
) {
    loop {
        {
            let Some(i) = inner.upgrade() else {
                return;
            };
            if i.local.pending() > 0 && i.breaker.state() == BreakerState::Closed {
                hand_over(&i).await;
            }
        }
        let _ = tokio::time::timeout(RECONCILE_EVERY, wake.notified()).await;
    }
}
