//! The rules at start-up and after: loaded from files and reloaded when they change, or pushed by
//! an xDS server and applied as they arrive. Either way a rule set that does not load never
//! replaces the one being served.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::StartupError;
use crate::config::{self, LoadOptions, RuleSet, WatchHandle};
use crate::limiter::RateLimiter;
use crate::metrics::Metrics;
use crate::settings::{RuleSource, Settings};
use crate::storage::AnyStore;
use crate::xds::XdsSettings;
use crate::xds::client::{self, Update};

type Target = Arc<OnceLock<Arc<RateLimiter<AnyStore>>>>;

/// What keeps the rules current once the limiter exists.
pub(super) enum Follow {
    Files {
        target: Target,
        watch: Option<WatchHandle>,
    },
    Xds {
        updates: mpsc::Receiver<Update>,
    },
}

/// Keeps a rule-file watch alive; dropping it stops the watch.
pub(super) struct Following {
    _watch: Option<WatchHandle>,
}

/// The first rule set, and what keeps it current. With xDS, waits for the server's first rule set
/// that loads (unless `FORCE_START_WITHOUT_INITIAL_CONFIG`, which starts with none).
pub(super) async fn first(
    settings: &Settings,
    metrics: &Metrics,
) -> Result<(RuleSet, Follow), StartupError> {
    let opts = LoadOptions {
        merge_domains: settings.merge_domains,
        memory_store: settings.backend == crate::settings::Backend::Memory,
    };
    match &settings.rules {
        RuleSource::Files(path) => {
            // Armed before the first load, so a change landing between the two is not missed;
            // reloads that fire before the limiter exists are superseded by that first load.
            let target: Target = Arc::new(OnceLock::new());
            let watch = if settings.watch {
                Some(watch_files(path, opts, Arc::clone(&target))?)
            } else {
                None
            };
            let rules = config::load(path, &opts).map_err(|errors| StartupError::Config {
                path: path.clone(),
                errors,
            })?;
            metrics.config_loaded(true);
            Ok((rules, Follow::Files { target, watch }))
        }
        RuleSource::Xds(xds) => {
            // One rule set at a time: the stream waits for each to be taken before it ACKs.
            let (tx, mut updates) = mpsc::channel(1);
            tokio::spawn(client::run(XdsSettings::clone(xds), opts, tx));
            if xds.force_start {
                tracing::warn!(server = %xds.server, "starting without rules until the xDS server sends some");
                return Ok((RuleSet::default(), Follow::Xds { updates }));
            }
            let mut reminder = tokio::time::interval(Duration::from_secs(10));
            loop {
                tokio::select! {
                    update = updates.recv() => {
                        let Some(update) = update else {
                            return Err(StartupError::Serve("the xDS client stopped".into()));
                        };
                        if let Some(rules) = report(metrics, update) {
                            return Ok((rules, Follow::Xds { updates }));
                        }
                    }
                    _ = reminder.tick() => tracing::info!(
                        server = %xds.server,
                        "waiting for the first rule set from the xDS server"
                    ),
                }
            }
        }
    }
}

impl Follow {
    /// Hands later rule sets to `limiter`.
    pub(super) fn start(self, limiter: &Arc<RateLimiter<AnyStore>>) -> Following {
        match self {
            Follow::Files { target, watch } => {
                let _ = target.set(Arc::clone(limiter));
                Following { _watch: watch }
            }
            Follow::Xds { mut updates } => {
                let limiter = Arc::clone(limiter);
                tokio::spawn(async move {
                    while let Some(update) = updates.recv().await {
                        if let Some(rules) = report(limiter.metrics(), update) {
                            limiter.replace_rules(rules);
                        }
                    }
                });
                Following { _watch: None }
            }
        }
    }
}

/// Counts and logs an xDS update; the rules to serve, if it carried some.
fn report(metrics: &Metrics, update: Update) -> Option<RuleSet> {
    match update {
        Ok(pushed) => {
            metrics.config_loaded(true);
            tracing::info!(version = %pushed.version, "rule set from xDS applied");
            Some(pushed.rules)
        }
        Err(reason) => {
            metrics.config_loaded(false);
            tracing::error!(%reason, "rule set from xDS refused (NACK); the previous rules keep serving");
            None
        }
    }
}

fn watch_files(
    path: &std::path::Path,
    opts: LoadOptions,
    target: Target,
) -> Result<WatchHandle, StartupError> {
    config::watch(path.to_path_buf(), opts, move |result| {
        let Some(limiter) = target.get() else {
            return;
        };
        match result {
            Ok(rules) => {
                limiter.metrics().config_loaded(true);
                tracing::info!(sources = rules.sources.len(), "rule set reloaded");
                limiter.replace_rules(rules);
            }
            Err(errors) => {
                limiter.metrics().config_loaded(false);
                tracing::error!(%errors, "rule set change rejected; the previous rules keep serving");
            }
        }
    })
    .map_err(|source| StartupError::Watch {
        path: path.to_path_buf(),
        source,
    })
}
