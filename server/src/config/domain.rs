//! A domain's own settings, from the top level of its rule file: `failure_mode` (how its checks are
//! answered while the shared store cannot answer), `shard_by` (the descriptor key that places
//! a tenant's counters in one Redis Cluster hash slot) and `notifications` (where its events are
//! pushed, [`super::notifications`]). Files merged into one domain must agree, and only one of
//! them may give `notifications`; `shard_by` must name a key the domain's descriptors use.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use super::error::{ConfigError, Position};
use super::model::DomainOptions;
use super::parse::RawFile;
use super::yaml::Mark;

/// A domain's settings while its files are read, with where each was given.
#[derive(Debug, Default)]
pub(super) struct Settings {
    pub options: DomainOptions,
    failure_mode_at: Option<Position>,
    shard_by_at: Option<Position>,
    notifications_at: Option<Position>,
}

fn position(path: &Path, at: Mark) -> Position {
    Position {
        path: path.to_path_buf(),
        line: at.line,
        column: at.column,
    }
}

impl Settings {
    /// Takes one file's settings for domain `name`; `memory_store`: the counters are in memory
    /// (no Redis for a `redis_stream`).
    pub fn take(
        &mut self,
        path: &Path,
        name: &str,
        file: &mut RawFile,
        memory_store: bool,
        errors: &mut Vec<ConfigError>,
    ) {
        if let Some(mode) = &file.failure_mode {
            let at = position(path, mode.at);
            match (&self.options.failure_mode, &self.failure_mode_at) {
                (Some(old), Some(first)) if *old != mode.value => {
                    errors.push(ConfigError::Invalid {
                        at,
                        reason: format!(
                            "failure_mode '{}' conflicts with '{}' given for domain '{name}' at \
                             {first}",
                            mode.value.as_str(),
                            old.as_str(),
                        ),
                    })
                }
                _ => {
                    self.options.failure_mode = Some(mode.value);
                    self.failure_mode_at = Some(at);
                }
            }
        }
        if let Some(key) = &file.shard_by {
            let at = position(path, key.at);
            match (&self.options.shard_by, &self.shard_by_at) {
                (Some(old), Some(first)) if **old != *key.value => {
                    errors.push(ConfigError::Invalid {
                        at,
                        reason: format!(
                            "shard_by '{}' conflicts with '{old}' given for domain '{name}' at \
                             {first}",
                            key.value
                        ),
                    })
                }
                _ => {
                    self.options.shard_by = Some(key.value.as_str().into());
                    self.shard_by_at = Some(at);
                }
            }
        }
        if let Some(block) = file.notifications.take() {
            let at = position(path, block.at);
            match &self.notifications_at {
                Some(first) => errors.push(ConfigError::Invalid {
                    at,
                    reason: format!(
                        "`notifications` for domain '{name}' are already given at {first}: give \
                         them in one file of the domain"
                    ),
                }),
                None => {
                    let resolved =
                        super::notification_block::resolve(path, block.value, memory_store, errors);
                    self.options.notifications = resolved.map(Arc::new);
                    self.notifications_at = Some(at);
                }
            }
        }
    }

    /// Once every file is read: `shard_by` names a key `uses` knows.
    pub fn check(&self, name: &str, uses: impl Fn(&str) -> bool, errors: &mut Vec<ConfigError>) {
        if let (Some(key), Some(at)) = (&self.options.shard_by, &self.shard_by_at)
            && !uses(key)
        {
            errors.push(ConfigError::Invalid {
                at: at.clone(),
                reason: format!("`shard_by: {key}` names no descriptor key of domain '{name}'"),
            });
        }
    }
}

/// The settings of every domain that has any.
pub(super) fn options<'a>(
    domains: impl Iterator<Item = (&'a String, &'a Settings)>,
) -> super::Map<String, DomainOptions> {
    domains
        .filter(|(_, s)| s.options != DomainOptions::default())
        .map(|(name, s)| (name.clone(), s.options.clone()))
        .collect()
}

/// `/rlconfig` lines: `domain NAME: failure_mode=… shard_by=…`, by name.
pub(super) fn dump(out: &mut String, options: &super::Map<String, DomainOptions>) {
    let mut names: Vec<&String> = options.keys().collect();
    names.sort();
    for name in names {
        let o = &options[name];
        let _ = write!(out, "domain {name}:");
        if let Some(mode) = o.failure_mode {
            let _ = write!(out, " failure_mode={}", mode.as_str());
        }
        if let Some(key) = &o.shard_by {
            let _ = write!(out, " shard_by={key}");
        }
        if let Some(n) = &o.notifications {
            // Never the URLs: a webhook's path often carries a secret token, and `/rlconfig`
            // answers anyone.
            let events: Vec<&str> = n.events.iter().map(|k| k.as_str()).collect();
            let _ = write!(
                out,
                " notifications=[webhooks={} redis_stream={} events={}]",
                n.webhooks.len(),
                n.redis_stream.as_ref().map_or("none", |s| s.key.as_str()),
                events.join(",")
            );
        }
        out.push('\n');
    }
}
