//! Hot reload: watch the rule files and reload the whole set after a burst of changes settles.
//!
//! The directory is watched, never the file itself: editors and `kubectl` replace files by
//! rename, which ends a watch on the old inode. A Kubernetes ConfigMap mount changes by swapping
//! its `..data` symlink to a new `..<timestamp>` directory, so changes to `..`-prefixed entries
//! count too. Events are only a hint to reload; the reload reads everything again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use super::{ConfigErrors, LoadOptions, RuleSet, load};

/// How long the files must stay quiet before a reload: a `kubectl apply` or an editor's save is
/// several events in a few milliseconds, and reloading halfway through would report a torn file.
const QUIET_PERIOD: Duration = Duration::from_millis(200);

/// The reload thread's stack: the main thread's on Linux, where start-up loads the rules, so a
/// rule set that loads at start-up also reloads (a spawned thread gets 2 MiB by default). The
/// loader's recursion is bounded by the nesting limits either way; this keeps the two equal.
const RELOAD_STACK: usize = 8 * 1024 * 1024;

/// Keeps the watch alive; dropping it stops watching, and the reload thread ends after any
/// reload in progress.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchHandle")
    }
}

/// Watches `path` (a rule file or directory, as for [`load`]) and calls `on_load` with the result
/// of a full reload after each burst of relevant changes. The caller decides what to do with an
/// error; the reference keeps serving the old rule set.
///
/// For a file, its parent directory is watched and events are filtered to that file's name; for a
/// directory, the directory itself (not recursively) and events for `*.yaml` / `*.yml` names.
pub fn watch(
    path: PathBuf,
    opts: LoadOptions,
    on_load: impl Fn(Result<RuleSet, ConfigErrors>) + Send + 'static,
) -> Result<WatchHandle, notify::Error> {
    let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
    let (dir, file_name) = if is_dir {
        (path.clone(), None)
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, path.file_name().map(OsStr::to_os_string))
    };

    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        match event {
            Ok(event) => {
                if !matches!(event.kind, EventKind::Access(_))
                    && event
                        .paths
                        .iter()
                        .any(|p| is_relevant(p, file_name.as_deref()))
                {
                    // The receiver is gone only once the handle is dropped.
                    let _ = tx.send(());
                }
            }
            Err(e) => tracing::warn!(error = %e, "rule file watch error"),
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    thread::Builder::new()
        .name("sluice-config-watch".into())
        .stack_size(RELOAD_STACK)
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
                on_load(load(&path, &opts));
            }
        })
        .map_err(notify::Error::io)?;

    Ok(WatchHandle { _watcher: watcher })
}

fn is_relevant(path: &Path, file_name: Option<&OsStr>) -> bool {
    let Some(name) = path.file_name() else {
        return false;
    };
    let name_str = name.to_string_lossy();
    if name_str.starts_with("..") {
        return true;
    }
    match file_name {
        Some(target) => name == target,
        None => {
            !name_str.starts_with('.')
                && name_str.rsplit_once('.').is_some_and(|(_, ext)| {
                    ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml")
                })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc::Receiver;
    use std::time::Instant;

    const VALID: &str = "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
    const CHANGED: &str = "domain: d\ndescriptors:\n  - key: k2\n    rate_limit: {unit: second, requests_per_unit: 2}\n";

    /// Waits (bounded) for a reload result satisfying `pred`, skipping earlier intermediate ones.
    fn wait_for(
        rx: &Receiver<Result<RuleSet, ConfigErrors>>,
        pred: impl Fn(&Result<RuleSet, ConfigErrors>) -> bool,
    ) -> Result<RuleSet, ConfigErrors> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = rx.recv_timeout(left).expect("no reload within 10 s");
            if pred(&got) {
                return got;
            }
        }
    }

    fn has_key(r: &Result<RuleSet, ConfigErrors>, key: &str) -> bool {
        r.as_ref()
            .is_ok_and(|rules| rules.lookup("d", &[(key, "x")]).is_some())
    }

    #[test]
    fn reloads_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), VALID).unwrap();
        let (tx, rx) = mpsc::channel();
        let _handle = watch(dir.path().to_path_buf(), LoadOptions::default(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();

        std::fs::write(dir.path().join("a.yaml"), CHANGED).unwrap();
        let rules = wait_for(&rx, |r| has_key(r, "k2")).unwrap();
        assert!(rules.lookup("d", &[("k", "x")]).is_none());

        std::fs::write(dir.path().join("a.yaml"), "domain: d\ndescriptors: [oops\n").unwrap();
        let errors = wait_for(&rx, Result::is_err).unwrap_err();
        assert!(errors.to_string().contains("a.yaml:"), "{errors}");

        // An atomic replace by rename, as editors and kubectl do.
        let tmp = dir.path().join(".a.yaml.tmp");
        std::fs::write(&tmp, VALID).unwrap();
        std::fs::rename(&tmp, dir.path().join("a.yaml")).unwrap();
        wait_for(&rx, |r| has_key(r, "k")).unwrap();
    }

    #[test]
    fn reloads_a_single_file_and_ignores_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, VALID).unwrap();
        let (tx, rx) = mpsc::channel();
        let _handle = watch(file.clone(), LoadOptions::default(), move |r| {
            let _ = tx.send(r);
        })
        .unwrap();

        // A broken neighbour is neither loaded nor a reason to reload.
        std::fs::write(dir.path().join("other.yaml"), "not: [valid").unwrap();
        std::fs::write(&file, CHANGED).unwrap();
        let rules = wait_for(&rx, |r| has_key(r, "k2")).unwrap();
        assert_eq!(rules.sources, [file]);
    }

    #[test]
    fn relevance_filter() {
        let target = Some(OsStr::new("rules.yaml"));
        assert!(is_relevant(Path::new("/x/rules.yaml"), target));
        assert!(is_relevant(Path::new("/x/..data"), target));
        assert!(!is_relevant(Path::new("/x/other.yaml"), target));
        assert!(is_relevant(Path::new("/x/b.yml"), None));
        assert!(is_relevant(Path::new("/x/..2026_01_01"), None));
        assert!(!is_relevant(Path::new("/x/.b.yaml.swp"), None));
        assert!(!is_relevant(Path::new("/x/notes.txt"), None));
    }
}
