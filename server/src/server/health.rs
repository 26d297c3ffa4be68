//! Readiness, as `/healthcheck` and gRPC health report it, and the signal that starts a drain.
//!
//! A replica is ready while it is not shutting down and its counter store answers, or, with
//! `--ready-when-store-down`, whatever the store does (checks are then answered by the failure
//! policies). gRPC health follows the same rule: a task asks the store every
//! [`HEALTH_EVERY`], so it changes within that of the store failing or coming back, traffic or
//! not. On SIGTERM both say NOT_SERVING at once; the listeners keep answering for the drain
//! window (`--drain-window-secs`) so load balancers that poll them stop sending first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::limiter::RateLimiter;
use crate::storage::{AnyStore, Store};

/// How often gRPC health asks the counter store.
pub const HEALTH_EVERY: Duration = Duration::from_millis(500);

/// The reference registers its health under the name `ratelimit`; Sluice also answers for the
/// whole server (`""`), which is what most probes ask.
pub async fn set(health: &HealthReporter, status: ServingStatus) {
    for service in ["ratelimit", ""] {
        health.set_service_status(service, status).await;
    }
}

/// Keeps gRPC health in step with readiness until a drain starts (`ready` false).
pub async fn follow_store(
    health: HealthReporter,
    limiter: Arc<RateLimiter<AnyStore>>,
    ready: Arc<AtomicBool>,
    when_store_down: bool,
) {
    let mut serving = true;
    loop {
        tokio::time::sleep(HEALTH_EVERY).await;
        if !ready.load(Ordering::Acquire) {
            return;
        }
        let now = when_store_down || limiter.store().ping().await.is_ok();
        // The drain may have begun during the ping: it already said NOT_SERVING.
        if now != serving && ready.load(Ordering::Acquire) {
            serving = now;
            let status = if now {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            set(&health, status).await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
