//! Start-up, serving and drain: load the rules, open the store, bind both listeners, serve until a
//! shutdown signal, then stop accepting and let in-flight calls finish within a grace period.
//!
//! Boundary: the only module that reads [`crate::settings`] into running parts; nothing imports it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::admin::{self, AdminState, AdminTokens};
use crate::clock::{Clock, SystemClock};
use crate::config::ConfigErrors;
use crate::grpc::RlsService;
use crate::http::{HttpState, router};
use crate::limiter::{LimiterOptions, RateLimiter};
use crate::listener::{Acceptor, ListenerStats};
use crate::metrics::Metrics;
use crate::settings::{Backend, Settings};
use crate::storage::keys::{KeySchema, ValueHasher};
use crate::storage::{Admission, AnyStore, StoreError};

mod adaptive;
mod health;
mod listen;
mod notifications;
mod overrides;
mod rules;
mod stats;
mod storage;
mod tls;

pub use health::shutdown_signal;
pub use listen::Listeners;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("the rule set at {path} is invalid:\n{errors}")]
    Config {
        path: std::path::PathBuf,
        errors: ConfigErrors,
    },
    #[error("cannot use {path} as the value-hashing secret: {reason}")]
    HashKey {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot open the counter store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot read {path}: {reason}")]
    File {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen on the Unix socket {path}: {source}")]
    BindUnix {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serve TLS on the {listener} listener: {source}")]
    Tls {
        listener: &'static str,
        source: crate::listener::tls::TlsError,
    },
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        path: std::path::PathBuf,
        source: notify::Error,
    },
    #[error("server failed: {0}")]
    Serve(String),
    #[error("cannot read the admin tokens in {path}: {reason}")]
    AdminTokens {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot open the override store: {0}")]
    Overrides(#[from] crate::overrides::backend::OverrideError),
    #[error("the notifications file {path} is invalid:\n{errors}")]
    Notifications {
        path: std::path::PathBuf,
        errors: ConfigErrors,
    },
}

/// A ready-to-serve Sluice: rules loaded, store open.
pub struct Sluice {
    pub limiter: Arc<RateLimiter<AnyStore>>,
    settings: Settings,
    listener_stats: ListenerStats,
    /// Keeps the rules current.
    _rules: rules::Following,
    /// The admin API, when tokens are configured.
    admin: Option<Arc<AdminState<AnyStore>>>,
    /// What `POST /reports` feeds the adaptive controller.
    reports: Arc<crate::adaptive::Reports>,
    /// The tasks of the adaptive controller and of standing.
    _adaptive: adaptive::Tasks,
}

impl Sluice {
    /// Load the rules and open the store named by `settings`.
    pub async fn open(settings: Settings) -> Result<Self, StartupError> {
        Self::open_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn open_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartupError> {
        let mut metrics = Metrics::new();
        metrics.set_max_series(settings.max_metric_series);
        let listener_stats = ListenerStats::default();
        listener_stats.register(metrics.registry());
        let (rules, follow) = rules::first(&settings, &metrics).await?;
        let hasher = match &settings.hash_values_key_file {
            None => None,
            Some(path) => {
                let secret = std::fs::read(path).map_err(|e| StartupError::HashKey {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let hasher =
                    ValueHasher::from_secret(&secret).map_err(|reason| StartupError::HashKey {
                        path: path.clone(),
                        reason,
                    })?;
                Some(hasher)
            }
        };
        let redis_deadline = tokio::time::Instant::now() + settings.redis_timeout;
        let (store, override_client) = storage::open(&settings, &mut metrics, &clock).await?;
        let tokens = match &settings.admin.token_file {
            None => None,
            Some(path) => {
                Some(
                    AdminTokens::load(path).map_err(|reason| StartupError::AdminTokens {
                        path: path.clone(),
                        reason,
                    })?,
                )
            }
        };
        let options = LimiterOptions {
            admission: if settings.charge_rejected {
                Admission::ChargeAll
            } else {
                Admission::AllOrNothing
            },
            keys: {
                let keys = KeySchema::new(settings.key_prefix.clone(), hasher);
                let cluster = settings.backend == Backend::Redis
                    && settings.store.redis_type
                        == crate::storage::backend::redis::RedisType::Cluster;
                if cluster { keys.with_hash_tags() } else { keys }
            },
            near_limit_ratio: settings.near_limit_ratio,
            global_shadow_mode: settings.shadow_mode,
            global_quota_mode: settings.quota_mode,
            header_style: settings.header_style.clone(),
            bounds: settings.bounds,
            traced: settings.otlp_endpoint.is_some(),
            explain_log: settings.explain_log,
        };
        let notifier = notifications::start(&settings, &store, &clock, &mut metrics)?;
        let mut limiter = RateLimiter::new(rules, store, Arc::new(metrics), options)
            .with_notifier(notifier.clone());
        if tokens.is_some() {
            limiter = limiter.with_top_consumers();
        }
        let limiter = Arc::new(limiter);
        notifications::follow_overrides(&notifier, &limiter);
        let following = follow.start(&limiter);
        // Overrides apply from the first request on, and follow the shared store after that.
        let fleet_client = override_client.clone();
        let store = Arc::new(overrides::open(&settings, override_client).await?);
        overrides::load(&store, &limiter, &settings, redis_deadline).await?;
        overrides::follow(
            Arc::clone(&store),
            Arc::clone(&limiter),
            settings.admin.override_poll,
        );
        let (reports, adaptive) = adaptive::start(
            &settings,
            &limiter,
            &store,
            fleet_client,
            Arc::clone(&clock),
            &notifier,
        );
        let admin =
            tokens.map(|tokens| Arc::new(AdminState::new(Arc::clone(&limiter), tokens, store)));
        Ok(Self {
            limiter,
            settings,
            listener_stats,
            _rules: following,
            admin,
            reports,
            _adaptive: adaptive,
        })
    }

    /// Serve gRPC and HTTP on `listeners` until `shutdown` resolves, then drain.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let grpc_addr = listeners.grpc.describe();
        let http_addr = listeners
            .http_addr()
            .map_err(|e| StartupError::Serve(e.to_string()))?;
        let ready = Arc::new(AtomicBool::new(true));
        let (health, health_service) = tonic_health::server::health_reporter();
        health::set(&health, tonic_health::ServingStatus::Serving).await;
        tokio::spawn(health::follow_store(
            health.clone(),
            Arc::clone(&self.limiter),
            Arc::clone(&ready),
            self.settings.ready_when_store_down,
        ));

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let grpc_stop = wait_for(stop_rx.clone());
        let http_stop = wait_for(stop_rx.clone());

        let limits = Arc::new(listen::connection_limits(&self.settings.listener));
        let (grpc_tls, http_tls, _tls_watches) = tls::terminators(&self.settings.tls)?;
        let grpc = crate::grpc::serve(
            Acceptor::new(
                listeners.grpc,
                "grpc",
                Arc::clone(&limits),
                self.listener_stats.clone(),
            )
            .with_tls(grpc_tls),
            crate::grpc::Routes::new(
                RlsService::new(Arc::clone(&self.limiter)),
                health_service,
                Arc::clone(&limits),
            ),
            grpc_stop,
        );
        let mut app = router(Arc::new(
            HttpState::new(Arc::clone(&self.limiter), Arc::clone(&ready))
                .with_ready_when_store_down(self.settings.ready_when_store_down)
                .with_auth_over_limit_status(self.settings.auth_over_limit_status)
                .with_lease_max_wait(self.settings.admin.lease_max_wait)
                .with_reports(Arc::clone(&self.reports))
                .with_admin_token(self.admin.clone().map(|admin| {
                    Arc::new(move |headers: &axum::http::HeaderMap| {
                        admin.authorized(headers).is_some()
                    }) as crate::http::Authorize
                })),
        ));
        if let Some(state) = &self.admin {
            app = app
                .nest("/admin/ui", admin::ui::router())
                .nest("/admin", admin::router(Arc::clone(state)));
        }
        let http = crate::http::listener::serve(
            Acceptor::new(
                listeners.http,
                "http",
                Arc::clone(&limits),
                self.listener_stats.clone(),
            )
            .with_tls(http_tls),
            app,
            self.settings.bounds.max_message_bytes(),
            http_stop,
        );

        // The reference's stats, each on its own task, stopped with the listeners.
        let mut stats_tasks = Vec::new();
        if let Some((addr, path)) = &self.settings.stats.reference_prometheus {
            stats_tasks.push(tokio::spawn(stats::serve_reference_prometheus(
                listen::listen(*addr)?,
                path.clone(),
                Arc::clone(&self.limiter),
                Arc::clone(&limits),
                self.listener_stats.clone(),
                wait_for(stop_rx.clone()),
            )));
        }
        if let Some(statsd) = self.settings.stats.statsd.clone() {
            stats_tasks.push(tokio::spawn(stats::push_statsd(
                statsd,
                Arc::clone(&self.limiter),
                wait_for(stop_rx),
            )));
        }
        let mut grpc = tokio::spawn(grpc);
        let mut http = tokio::spawn(http);
        tracing::info!(
            grpc = %grpc_addr,
            http = %http_addr,
            grpc_tls = self.settings.tls.grpc.is_some(),
            http_tls = self.settings.tls.http.is_some(),
            backend = ?self.settings.backend,
            rules = %self.settings.rules.describe(),
            charge_rejected = self.settings.charge_rejected,
            "sluice listening"
        );

        tokio::select! {
            () = shutdown => {}
            r = &mut grpc => return Err(StartupError::Serve(format!("gRPC server stopped: {r:?}"))),
            r = &mut http => return Err(StartupError::Serve(format!("HTTP server stopped: {r:?}"))),
        }

        // Not ready at once; still accepting and answering for the drain window, so load
        // balancers polling readiness stop sending before the listeners close.
        ready.store(false, Ordering::Release);
        health::set(&health, tonic_health::ServingStatus::NotServing).await;
        let window = self.settings.drain_window;
        tracing::info!(
            drain_window = ?window,
            grace = ?self.settings.shutdown_grace,
            "shutting down: not ready; serving through the drain window, then draining in-flight calls"
        );
        if !window.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(window) => {}
                r = &mut grpc => return Err(StartupError::Serve(format!("gRPC server stopped: {r:?}"))),
                r = &mut http => return Err(StartupError::Serve(format!("HTTP server stopped: {r:?}"))),
            }
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(self.settings.shutdown_grace, async {
            let _ = (&mut grpc).await;
            let _ = (&mut http).await;
            // The statsd push sends the last interval's counts.
            for task in &mut stats_tasks {
                let _ = task.await;
            }
        })
        .await;
        match drained {
            Ok(()) => tracing::info!("shut down gracefully"),
            Err(_) => {
                grpc.abort();
                http.abort();
                stats_tasks.iter().for_each(tokio::task::JoinHandle::abort);
                tracing::warn!("grace period over: in-flight calls were cut off");
            }
        }
        Ok(())
    }
}

async fn wait_for(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
