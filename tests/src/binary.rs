//! The `sluice` binary the end-to-end tests run, and a check that it is not older than the
//! server's sources.

use std::path::{Path, PathBuf};

/// Path of the `sluice` binary built in this workspace's target directory (`cargo test
/// --workspace` builds it, because the server package has integration tests).
pub fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = profile_dir.join("sluice");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p sluice-server` (the README's test command does)",
        bin.display()
    );
    static FRESH: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    FRESH.get_or_init(|| assert_fresh(&bin));
    bin
}

/// Fails when a source of the server changed after `bin` was built: these tests run the binary
/// as it was last built, so one test run after an edit without `cargo build -p sluice-server`
/// would test the old code and could pass (or fail) for the wrong reason.
fn assert_fresh(bin: &Path) {
    /// The newest file at `path` (itself, or anything under it), kept in `found` if newer.
    fn newest(path: &Path, found: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                newest(&entry.path(), found);
            }
        } else if let Ok(modified) = meta.modified()
            && found.as_ref().is_none_or(|(t, _)| modified > *t)
        {
            *found = Some((modified, path.to_path_buf()));
        }
    }
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("../server");
    let mut found = None;
    newest(&server.join("src"), &mut found);
    newest(&server.join("Cargo.toml"), &mut found);
    let built = std::fs::metadata(bin)
        .and_then(|m| m.modified())
        .expect("the binary's modification time");
    if let Some((changed, path)) = found {
        assert!(
            changed <= built,
            "{} is older than {}: rebuild it with `cargo build -p sluice-server` (or set \
             SLUICE_BIN to the binary to test)",
            bin.display(),
            path.display()
        );
    }
}
