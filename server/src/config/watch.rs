//! Hot reload: watch the rule files and reload the whole set after a burst of changes settles
//! (through their directory, as [`crate::file_watch`] explains).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{ConfigErrors, LoadOptions, RuleSet, load};
pub use crate::file_watch::WatchHandle;
use crate::file_watch::{self, Spec};

/// The reload thread's stack: the main thread's on Linux, where start-up loads the rules, so a
/// rule set that loads at start-up also reloads (a spawned thread gets 2 MiB by default). The
/// loader's recursion is bounded by the nesting limits either way; this keeps the two equal.
const RELOAD_STACK: usize = 8 * 1024 * 1024;

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
        (
            file_watch::dir_of(&path),
            path.file_name().map(OsStr::to_os_string),
        )
    };
    let spec = Spec {
        dirs: vec![dir],
        thread: "sluice-config-watch",
        stack: RELOAD_STACK,
    };
    file_watch::watch(
        spec,
        move |p| is_relevant(p, file_name.as_deref()),
        move || on_load(load(&path, &opts)),
    )
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
    use std::sync::mpsc::{self, Receiver};
    use std::time::{Duration, Instant};

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
