//! Watching files for changes the way they change in production: through their directories.
//!
//! A file's own watch ends when an editor or `kubectl` replaces it by rename, and a Kubernetes
//! ConfigMap or Secret mount changes by swapping its `..data` symlink to a new `..<timestamp>`
//! directory, so the directories are watched and every `..`-prefixed entry counts as a change.
//! Events are only a hint: the callback reads everything again, once a burst of events settles.
//!
//! Two users: the rule files ([`crate::config::watch()`]) and the listeners' TLS certificates
//! ([`crate::listener::tls`]).
//!
//! Boundary: knows paths and time only.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

/// How long the files must stay quiet before the callback runs: a `kubectl apply` or an editor's
/// save is several events in a few milliseconds, and reading halfway through would see a torn
/// file.
pub const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// Keeps a watch alive; dropping it stops watching, and the watch thread ends after the callback
/// in progress, if any.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

/// What to watch, and how the callback's thread is made.
pub struct Spec<'a> {
    /// Directories to watch (not recursively); duplicates are watched once.
    pub dirs: Vec<PathBuf>,
    /// Names the thread (shown in `top -H` and panics).
    pub thread: &'a str,
    /// The callback's stack size.
    pub stack: usize,
}

/// Calls `on_change` on its own thread after each burst of events on paths that `relevant`
/// accepts (and on every `..`-prefixed entry), once [`QUIET_PERIOD`] passes without another.
pub fn watch(
    spec: Spec<'_>,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<WatchHandle, notify::Error> {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                let counts = event.paths.iter().any(|p| is_swap(p) || relevant(p));
                if !matches!(event.kind, EventKind::Access(_)) && counts {
                    // The receiver is gone only once the handle is dropped.
                    let _ = tx.send(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "file watch error"),
        }
    })?;
    let mut dirs = spec.dirs;
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    thread::Builder::new()
        .name(spec.thread.into())
        .stack_size(spec.stack)
        .spawn(move || {
            // Each turn: wait for a first event, then until QUIET_PERIOD passes without one.
            while rx.recv().is_ok() {
                loop {
                    match rx.recv_timeout(QUIET_PERIOD) {
                        Ok(()) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(WatchHandle { _watcher: watcher })
}

/// The directory a file is watched through.
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A ConfigMap or Secret mount's `..data` symlink or `..<timestamp>` directory.
fn is_swap(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".."))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn swaps_count_and_plain_names_do_not() {
        assert!(is_swap(Path::new("/x/..data")));
        assert!(is_swap(Path::new("/x/..2026_01_01")));
        assert!(!is_swap(Path::new("/x/tls.crt")));
        assert_eq!(dir_of(Path::new("tls.crt")), PathBuf::from("."));
        assert_eq!(dir_of(Path::new("/a/tls.crt")), PathBuf::from("/a"));
    }
}
