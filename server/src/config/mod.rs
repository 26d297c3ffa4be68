//! Rule sets: YAML files → validated, immutable rule tree.
//!
//! The format is envoyproxy/ratelimit's, so its files load unchanged:
//!
//! ```yaml
//! domain: edge
//! descriptors:
//!   - key: remote_address
//!     rate_limit: { unit: second, requests_per_unit: 10 }
//!   - key: path
//!     value: "/api/*"          # `*` matches any run of characters, anywhere in the value
//!     share_threshold: true    # every matching path shares one counter
//!     rate_limit: { unit: minute, requests_per_unit: 600, name: api, replaces: [{ name: x }] }
//!   - key: team_id                   # Sluice's additions, all optional
//!     rate_limits:                   # several limits, all must pass
//!       - { unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 20 }
//!       - { unit: day, requests_per_unit: 10000, kind: quota, over_limit_status: 402 }
//!   - key: app_id
//!     rate_limit: { unit: minute, unit_multiplier: 5, requests_per_unit: 100, algorithm: sliding_window }
//!   - key: storage_bytes
//!     rate_limit: { unit: month, calendar: true, requests_per_unit: 10737418240 }
//!   - key: upload_id                 # at most 10 held at once, each lease lasting 5 minutes
//!     rate_limit: { concurrency: 10, lease_ttl: 300 }
//!   - key: tenant                    # 1000 per second shared by every tenant, by weight
//!     rate_limit: { unit: second, capacity: 1000, weights: { acme: 4 }, weight: 1 }
//!   - key: team_id
//!     rate_limit: { unit: minute, requests_per_unit: 1000 }
//!     descriptors:
//!       - key: app_id                # over its own 100, an app uses its team's unused budget
//!         rate_limit: { unit: minute, requests_per_unit: 100, overflow: parent }
//! ```
//!
//! A file without Sluice's additions decides exactly as the reference does (`config/limit.rs` reads
//! them; `config/pool.rs` the concurrency, fair-share and overflow fields).
//!
//! Loading is stricter than the reference in one way: each mapping has its own field list, so a
//! field in the wrong place (`requests_per_unit` on a descriptor, `shadow_mode` inside
//! `rate_limit`) is an error with its position instead of being ignored. Every error of a load is
//! reported at once, as `path:line:column: reason`.
//!
//! [`load`] reads a file or a directory; [`watch()`] reloads on change.
//!
//! Boundary: owns the rule tree and matching a descriptor against it; it never imports the limiter,
//! overrides or a store backend.

pub mod adaptive;
mod build;
mod domain;
mod dump;
mod error;
mod fields;
mod http_descriptors;
mod limit;
pub mod matcher;
mod model;
mod notification_block;
pub mod notifications;
mod parse;
mod pool;
mod scalar;
pub mod standing;
pub mod trial;
pub mod walk;
mod watch;
mod yaml;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors, Position};
pub use model::*;
pub use notifications::{EventKind, EventSet, Notifications};
pub use watch::{WatchHandle, watch};

/// How a load treats several files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Files naming the same domain are combined (the reference's `MERGE_DOMAIN_CONFIG`) instead
    /// of being an error. Their top-level descriptors are put side by side; one named in two files
    /// is still a duplicate.
    pub merge_domains: bool,
    /// The counters are kept in memory: a `notifications` block's `redis_stream` has no Redis to
    /// write to and is refused. Off (not checked) unless the caller knows the store.
    pub memory_store: bool,
}

/// Loads the rule set at `path`: one YAML file, or every `*.yaml` / `*.yml` file directly in a
/// directory, in name order.
///
/// In a directory, names starting with `.` are skipped: that covers editor swap files and the
/// `..data` / `..2024_…` entries of a Kubernetes ConfigMap mount, whose visible files are
/// symlinks into them (symlinks are followed). Subdirectories are not read. A directory with no
/// rule file loads an empty rule set, as the reference starts with no domains; every request is
/// then allowed.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<RuleSet, ConfigErrors> {
    let files = rule_files(path)?;
    let mut builder = build::Builder::new(opts);
    for file in files {
        match read_rule_file(&file) {
            Ok(text) => builder.add_text(&file, &text),
            Err(source) => builder.error(ConfigError::Io { path: file, source }),
        }
    }
    builder.finish().map_err(ConfigErrors::capped)
}

/// The largest rule file read. A Kubernetes ConfigMap holds at most 1 MiB; a file past this is a
/// mistake (or an attack on every replica that mounts it), refused before it is read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One rule file's text, refused past [`MAX_FILE_BYTES`] (counted while reading too, since a file
/// can grow between `stat` and `read`).
fn read_rule_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} MiB; a rule file is far smaller",
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        )
    };
    let file = std::fs::File::open(path)?;
    if file.metadata()?.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// Parses one file's text; `name` is used as its path in errors.
pub fn parse_str(name: &str, text: &str) -> Result<RuleSet, ConfigErrors> {
    parse_many(&[(Path::new(name), text)], &LoadOptions::default())
}

/// Parses several files' texts as one load, in the order given.
pub fn parse_many<P: AsRef<Path>>(
    files: &[(P, &str)],
    opts: &LoadOptions,
) -> Result<RuleSet, ConfigErrors> {
    let mut builder = build::Builder::new(opts);
    for (path, text) in files {
        builder.add_text(path.as_ref(), text);
    }
    builder.finish().map_err(ConfigErrors::capped)
}

/// Loads the file of `--notifications`: a `notifications:` block alone, the sinks every domain's
/// events (and the breaker's) go to. Errors as a rule file's, `path:line:column: reason`.
pub fn load_notifications(path: &Path, opts: &LoadOptions) -> Result<Notifications, ConfigErrors> {
    let text = read_rule_file(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_notifications(path, &text, opts)
}

/// [`load_notifications`] of `text`, read from `path`.
pub fn parse_notifications(
    path: &Path,
    text: &str,
    opts: &LoadOptions,
) -> Result<Notifications, ConfigErrors> {
    let (raw, problems) = parse::read_with(
        text,
        "the file is empty: a notifications file holds a `notifications` block",
        |reader, root| reader.notifications_file(root),
    );
    let mut errors = build::errors_at(path, problems);
    let resolved =
        raw.and_then(|raw| notification_block::resolve(path, raw, opts.memory_store, &mut errors));
    match resolved {
        Some(n) if errors.is_empty() => Ok(n),
        _ => Err(ConfigErrors::capped(errors)),
    }
}

/// The files a load of `path` reads, in load order.
pub fn rule_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !is_rule_file_name(name) {
            continue;
        }
        let file = entry.path();
        // `metadata` follows symlinks; a dangling one (mid-swap of a ConfigMap) is skipped.
        if std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

fn is_rule_file_name(name: &str) -> bool {
    if name.starts_with('.') {
        return false;
    }
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_bounds;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests_notifications;
