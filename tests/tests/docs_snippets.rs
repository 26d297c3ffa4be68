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
    for dir in ["docs", "examples", "examples/micro-apps", "examples/pools"] {
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
    for dir in [
        "examples/config",
        "examples/micro-apps/config",
        "examples/nginx/config",
        "examples/pools/config",
    ] {
        let path = repo_root().join(dir);
        let (status, stderr) = run_to_exit(
            &["check-config", path.to_str().expect("utf-8")],
            Duration::from_secs(20),
        );
        assert!(status.is_some_and(|s| s.success()), "{dir}: {stderr}");
    }
}

/// Every flag `sluice --help` lists (and its `SLUICE_*` variable) is in docs/settings.md, so the
/// settings reference cannot fall behind the binary.
#[test]
fn every_setting_is_documented() {
    let out = std::process::Command::new(sluice_tests::sluice::sluice_bin())
        .arg("--help")
        .output()
        .expect("sluice --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let settings =
        std::fs::read_to_string(repo_root().join("docs/settings.md")).expect("settings.md");
    let mut flags = 0;
    for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        let word = word.trim_end_matches(',');
        let is_flag =
            word.starts_with("--") && word.len() > 2 && !["--help", "--version"].contains(&word);
        let is_env = word.starts_with("SLUICE_") && word.ends_with('=');
        if is_flag {
            assert!(
                settings.contains(&format!("`{word}")),
                "docs/settings.md lacks {word}"
            );
            flags += 1;
        } else if is_env {
            let name = word.trim_end_matches('=');
            assert!(
                settings.contains(&format!("`{name}`")),
                "docs/settings.md lacks {name}"
            );
        }
    }
    assert!(flags >= 20, "found only {flags} flags in --help");
}

/// Every field name the rule-file parser accepts (the field lists of
/// server/src/config/fields.rs) has a row in docs/configuration.md.
#[test]
fn every_rule_field_is_documented() {
    let declared = std::fs::read_to_string(repo_root().join("server/src/config/fields.rs"))
        .expect("fields.rs");
    let reference = std::fs::read_to_string(repo_root().join("docs/configuration.md"))
        .expect("configuration.md");
    let mut names = Vec::new();
    let mut rest = declared.as_str();
    // Each mapping's list: `const TOP: &[&str] = &["domain", ...];`.
    while let Some(at) = rest.find(": &[&str] = &[") {
        let list = &rest[at..];
        let end = list.find("];").expect("end of a field list");
        names.extend(list[..end].split('"').skip(1).step_by(2));
        rest = &list[end..];
    }
    // The fields of `rate_limit`: `field("unit", ...)`.
    for line in declared.lines() {
        if let Some(call) = line.trim().strip_prefix("field(\"") {
            names.push(call.split('"').next().expect("a field name"));
        }
    }
    for field in &names {
        assert!(
            reference.contains(&format!("| `{field}` |")),
            "docs/configuration.md has no row for `{field}`"
        );
    }
    assert!(
        names.len() >= 30,
        "found only {} fields in fields.rs",
        names.len()
    );
}

/// The NGINX configuration the docs show is made of lines of the example configurations, which
/// the real nginx runs in tests/tests/nginx_e2e.rs: a snippet cannot drift into something untested.
#[test]
fn nginx_snippets_are_lines_of_the_tested_examples() {
    let mut tested = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(repo_root().join("examples/nginx")).expect("examples/nginx") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "conf") {
            let text = std::fs::read_to_string(&path).expect("read");
            tested.extend(text.lines().map(|l| l.trim().to_owned()));
        }
    }
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("read markdown");
        let mut inside = false;
        for line in text.lines() {
            let fence = line.trim_start().starts_with("```");
            if fence {
                inside = !inside && line.trim_start().starts_with("```nginx");
                continue;
            }
            let line = line.trim();
            if inside && !line.is_empty() && !line.starts_with('#') {
                assert!(
                    tested.contains(line),
                    "{}: `{line}` is in no example under examples/nginx",
                    file.display()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 30,
        "only {checked} NGINX lines found in the docs"
    );
}
