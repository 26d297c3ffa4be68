//! `sluice-fuzz`: the targets without a coverage-guided fuzzer.
//!
//! ```text
//! sluice-fuzz list
//! sluice-fuzz seed                               rewrites the corpora's seed-* files
//! sluice-fuzz replay TARGET FILE|DIR...          each input's outcome; fails on a finding
//! sluice-fuzz run TARGET [SECONDS] [SEED]        the corpus, then mutations for SECONDS (60)
//! sluice-fuzz minimise TARGET FILE               writes FILE.min, failing the same way
//! ```
//!
//! A finding of `run` is written to `fuzz/artifacts/TARGET/`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use sluice_fuzz::harness::{self, Budget};
use sluice_fuzz::targets::{self, Target};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["list"] => {
            for t in targets::TARGETS {
                println!("{:<16} {}", t.name, t.about);
            }
            Ok(())
        }
        ["seed"] => seed(),
        ["replay", name, ref paths @ ..] if !paths.is_empty() => {
            target(name).and_then(|t| replay(t, paths))
        }
        ["run", name, ref rest @ ..] if rest.len() <= 2 => target(name).and_then(|t| {
            let seconds = rest
                .first()
                .map_or(Ok(60), |s| s.parse().map_err(|_| usage()))?;
            let seed = rest
                .get(1)
                .map_or(Ok(1), |s| s.parse().map_err(|_| usage()))?;
            run(t, seconds, seed)
        }),
        ["minimise", name, file] => target(name).and_then(|t| minimise(t, Path::new(file))),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    "usage: sluice-fuzz list | seed | replay TARGET PATH... | run TARGET [SECONDS] [SEED] | minimise TARGET FILE"
        .into()
}

fn target(name: &str) -> Result<&'static Target, String> {
    targets::target(name)
        .ok_or_else(|| format!("no target '{name}'; `sluice-fuzz list` names them"))
}

fn inputs(paths: &[&str]) -> Result<Vec<(PathBuf, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if path.is_dir() {
            out.extend(harness::read_corpus(path).map_err(|e| format!("{p}: {e}"))?);
        } else {
            out.push((
                path.to_owned(),
                std::fs::read(path).map_err(|e| format!("{p}: {e}"))?,
            ));
        }
    }
    Ok(out)
}

/// Writes the generated inputs, replacing the previous ones.
fn seed() -> Result<(), String> {
    let seeds = sluice_fuzz::seeds::generate();
    for t in targets::TARGETS {
        let dir = harness::corpus_dir(t.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (path, _) in harness::read_corpus(&dir).map_err(|e| e.to_string())? {
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
            {
                std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
    }
    for s in &seeds {
        let path = harness::corpus_dir(s.target).join(&s.name);
        std::fs::write(&path, &s.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    for t in targets::TARGETS {
        let n = seeds.iter().filter(|s| s.target == t.name).count();
        println!("{:<16} {n} generated", t.name);
    }
    Ok(())
}

fn replay(target: &'static Target, paths: &[&str]) -> Result<(), String> {
    let mut failed = 0;
    for (path, input) in inputs(paths)? {
        match harness::run_one(target, &input) {
            Ok(Ok(())) => println!("{}: accepted", path.display()),
            Ok(Err(reason)) => println!("{}: refused: {reason}", path.display()),
            Err(problem) => {
                failed += 1;
                println!("{}: {problem}", path.display());
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} input(s) failed"));
    }
    Ok(())
}

fn run(target: &'static Target, seconds: u64, seed: u64) -> Result<(), String> {
    let seeds = harness::read_corpus(&harness::corpus_dir(target.name))
        .map_err(|e| format!("corpus of {}: {e}", target.name))?
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    let report = harness::fuzz(
        target,
        seeds,
        Budget {
            iterations: u64::MAX,
            time: Duration::from_secs(seconds),
            seed,
        },
    );
    println!(
        "{}: {} executions in {:.1?} ({:.0}/s), {} accepted, {} refused, {} kinds of outcome, {} inputs kept",
        target.name,
        report.executions,
        report.elapsed,
        report.executions as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.accepted,
        report.refused,
        report.outcomes,
        report.kept,
    );
    let Some(finding) = report.finding else {
        return Ok(());
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("artifacts")
        .join(target.name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join(format!("finding-seed{seed}-{}", report.executions));
    std::fs::write(&file, &finding.input).map_err(|e| e.to_string())?;
    Err(format!("{finding}\nwritten to {}", file.display()))
}

fn minimise(target: &'static Target, file: &Path) -> Result<(), String> {
    let input = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let problem = match harness::run_one(target, &input) {
        Err(problem) => problem,
        Ok(_) => {
            return Err(format!("{}: no problem to minimise", file.display()));
        }
    };
    let smallest = harness::minimise(target, &input, &problem);
    let out = file.with_extension("min");
    std::fs::write(&out, &smallest).map_err(|e| e.to_string())?;
    println!(
        "{problem}\n{} bytes → {} bytes: {}",
        input.len(),
        smallest.len(),
        out.display()
    );
    Ok(())
}
