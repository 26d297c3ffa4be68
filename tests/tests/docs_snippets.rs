//! Every rule file shown in the docs and examples passes `sluice check-config`, so a reader who
//! copies one gets a working config.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::sluice::run_to_exit;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The fenced ```yaml blocks of a Markdown file that are rule files (they name a `domain`).
fn rule_snippets(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```yaml") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                if block.lines().any(|l| l.starts_with("domain:")) {
                    out.push(std::mem::take(block));
                }
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![root.join("README.md")];
    for dir in ["docs", "examples", "examples/micro-apps"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn every_rule_snippet_in_the_docs_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read markdown");
        for (i, snippet) in rule_snippets(&text).into_iter().enumerate() {
            let path = dir.path().join(format!("snippet-{checked}.yaml"));
            std::fs::write(&path, &snippet).expect("write snippet");
            let (status, stderr) = run_to_exit(
                &["check-config", path.to_str().expect("utf-8")],
                Duration::from_secs(20),
            );
            assert!(
                status.is_some_and(|s| s.success()),
                "snippet {i} of {} is not a valid rule file:\n{snippet}\n{stderr}",
                file.display()
            );
            checked += 1;
        }
    }
    // docs/quotas.md alone shows one; finding none would mean the extraction broke.
    assert!(checked >= 1, "found no rule snippets");
}

#[test]
fn every_example_config_is_valid() {
    for dir in ["examples/config", "examples/micro-apps/config"] {
        let path = repo_root().join(dir);
        let (status, stderr) = run_to_exit(
            &["check-config", path.to_str().expect("utf-8")],
            Duration::from_secs(20),
        );
        assert!(status.is_some_and(|s| s.success()), "{dir}: {stderr}");
    }
}
