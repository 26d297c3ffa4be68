//! CI's fuzzing: every committed corpus input of every target is replayed, then mutated for a
//! bounded time (fixed seed, so a failure replays), checking that the target neither panics nor
//! hangs nor holds too much memory on any of them.
//!
//! `SLUICE_FUZZ_SECONDS` (default 4) and `SLUICE_FUZZ_ITERATIONS` (default 20000) bound the
//! mutations per target, whichever is reached first; `SLUICE_FUZZ_SEED` changes the seed.

use std::time::Duration;

use sluice_fuzz::harness::{self, Budget};
use sluice_fuzz::targets;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str) {
    let target = targets::target(name).unwrap_or_else(|| panic!("no target {name}"));
    let dir = harness::corpus_dir(name);
    let corpus = harness::read_corpus(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(!corpus.is_empty(), "{}: no corpus", dir.display());
    let budget = Budget {
        iterations: env_or("SLUICE_FUZZ_ITERATIONS", 20_000),
        time: Duration::from_secs(env_or("SLUICE_FUZZ_SECONDS", 4)),
        seed: env_or("SLUICE_FUZZ_SEED", 1),
    };
    let report = harness::fuzz(
        target,
        corpus.into_iter().map(|(_, bytes)| bytes).collect(),
        budget,
    );
    eprintln!(
        "{name}: {} executions in {:.1?}, {} accepted, {} refused, {} kinds of outcome",
        report.executions, report.elapsed, report.accepted, report.refused, report.outcomes
    );
    if let Some(finding) = report.finding {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join(format!("{name}-{}", report.executions));
        let _ = std::fs::write(&file, &finding.input);
        panic!(
            "{finding}\nthe input is in {}; `cargo run -p sluice-fuzz -- minimise {name} FILE` \
             shrinks it",
            file.display()
        );
    }
}

#[test]
fn every_target_is_listed_here() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        [
            "config",
            "grpc",
            "json",
            "auth",
            "leases",
            "admin",
            "filter_config",
            "filter_json",
            "filter_proto",
            "filter_request"
        ]
    );
}

#[test]
fn config() {
    fuzz("config");
}

#[test]
fn grpc() {
    fuzz("grpc");
}

#[test]
fn json() {
    fuzz("json");
}

#[test]
fn auth() {
    fuzz("auth");
}

#[test]
fn leases() {
    fuzz("leases");
}

#[test]
fn admin() {
    fuzz("admin");
}

#[test]
fn filter_config() {
    fuzz("filter_config");
}

#[test]
fn filter_json() {
    fuzz("filter_json");
}

#[test]
fn filter_proto() {
    fuzz("filter_proto");
}

#[test]
fn filter_request() {
    fuzz("filter_request");
}
