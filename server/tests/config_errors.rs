//! Golden tests for rule-set errors: each `fixtures/config/invalid/NAME.yaml` must fail to load
//! with exactly the lines of `NAME.expected`. Set `SLUICE_BLESS=1` to rewrite the expected files
//! after a deliberate message change, then review the diff.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use sluice_server::config::{LoadOptions, load};

const FIXTURES: &str = "tests/fixtures/config";

fn check_golden(input: &Path, expected_file: &Path, opts: &LoadOptions) {
    let got = match load(input, opts) {
        Ok(_) => panic!("{} loaded, but it should fail", input.display()),
        Err(errors) => format!("{errors}\n"),
    };
    if std::env::var_os("SLUICE_BLESS").is_some() {
        fs::write(expected_file, &got).unwrap();
        return;
    }
    let want = fs::read_to_string(expected_file)
        .unwrap_or_else(|e| panic!("{}: {e}", expected_file.display()));
    assert_eq!(got, want, "errors of {}", input.display());
}

#[test]
fn invalid_fixtures_report_every_error_with_its_position() {
    let dir = Path::new(FIXTURES).join("invalid");
    let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5, "fixtures missing from {}", dir.display());
    for input in inputs {
        check_golden(
            &input,
            &input.with_extension("expected"),
            &LoadOptions::default(),
        );
    }
}

#[test]
fn duplicate_domain_across_files() {
    let dir = Path::new(FIXTURES).join("duplicate_domain");
    check_golden(
        &dir,
        &Path::new(FIXTURES).join("duplicate_domain.expected"),
        &LoadOptions::default(),
    );
    let merged = load(
        &dir,
        &LoadOptions {
            merge_domains: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(merged.lookup("shared", &[("a", "1")]).is_some());
    assert!(merged.lookup("shared", &[("b", "1")]).is_some());
}

#[test]
fn valid_directory_loads() {
    let rules = load(&Path::new(FIXTURES).join("valid"), &LoadOptions::default()).unwrap();
    assert_eq!(rules.sources.len(), 2);
    let login = rules.lookup("edge", &[("path", "/login")]).unwrap();
    assert!(login.shadow_mode);
    let api = rules.lookup("edge", &[("path", "/api/users")]).unwrap();
    assert_eq!(api.replaces, ["login"]);
    assert!(
        rules
            .lookup("edge", &[("tenant", "t1"), ("plan", "audited")])
            .is_none()
    );
    assert!(
        rules
            .lookup("edge", &[("tenant", "t1"), ("plan", "free")])
            .unwrap()
            .quota_mode
    );
    assert!(rules.lookup("batch", &[("job", "nightly")]).is_some());
    assert_eq!(
        rules.dump,
        fs::read_to_string(Path::new(FIXTURES).join("valid.dump")).unwrap()
    );
}
