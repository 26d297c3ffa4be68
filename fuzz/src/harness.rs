//! Running targets: one input with its checks, a corpus replay, and the bounded mutation run,
//! each on a thread with a spawned thread's default stack (where tokio workers and config
//! reloads run) and under a watchdog that reports an input taking too long instead of waiting
//! for it forever.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::alloc::peak_during;
use crate::mutate::{Mutator, dictionary};
use crate::targets::{Outcome, Target};

/// The stack a target runs on: a spawned thread's default, as tokio's workers have.
pub const STACK_BYTES: usize = 2 * 1024 * 1024;
/// The most memory one input may make a target hold at once. Inputs are at most
/// [`MAX_INPUT_BYTES`]; every bound in Sluice keeps its work within a small multiple of that.
pub const MAX_PEAK_BYTES: usize = 64 * 1024 * 1024;
/// The longest input the mutation run makes (AFL++ is given the same with `-G`).
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// How long one input may take before it counts as a hang. Unoptimised test builds are some ten
/// times slower than release ones, and CI shares two cores.
pub fn hang_after() -> Duration {
    if cfg!(debug_assertions) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(1)
    }
}

/// What went wrong with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Panic(String),
    Hang(Duration),
    Memory(usize),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Panic(msg) => write!(f, "panicked: {msg}"),
            Problem::Hang(t) => write!(f, "still running after {t:?}"),
            Problem::Memory(n) => write!(
                f,
                "held {} MiB at once (at most {} MiB)",
                n / (1 << 20),
                MAX_PEAK_BYTES / (1 << 20)
            ),
        }
    }
}

/// An input and its problem.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: &'static str,
    pub input: Vec<u8>,
    pub problem: Problem,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} on input {:?}",
            self.target,
            self.problem,
            String::from_utf8_lossy(&self.input[..self.input.len().min(512)])
        )
    }
}

/// Runs one input on the calling thread: its outcome, or the panic or memory problem it caused.
pub fn run_one(target: &Target, data: &[u8]) -> Result<Outcome, Problem> {
    let (result, peak) = peak_during(|| catch_unwind(AssertUnwindSafe(|| (target.run)(data))));
    let outcome = result.map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".into());
        Problem::Panic(msg)
    })?;
    if peak > MAX_PEAK_BYTES {
        return Err(Problem::Memory(peak));
    }
    Ok(outcome)
}

/// The committed corpus of `target`.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of a corpus directory, in name order.
pub fn read_corpus(dir: &Path) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(&p).map(|bytes| (p, bytes)))
        .collect()
}

/// The input the worker is running and since when, for the watchdog.
type Running = Mutex<Option<(Instant, Vec<u8>)>>;

/// Limits of a mutation run: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub iterations: u64,
    pub time: Duration,
    pub seed: u64,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Inputs run: the corpus, then mutations.
    pub executions: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Distinct outcomes seen (accepted, and each kind of refusal).
    pub outcomes: usize,
    /// Mutated inputs kept for further mutation because their outcome was new.
    pub kept: usize,
    pub elapsed: Duration,
    pub finding: Option<Finding>,
}

/// The kind of an outcome, for keeping inputs that reach a new one: a refusal's reason without
/// its numbers and without the input it quotes (an HTTP answer's JSON wrapping left out).
fn kind_of(outcome: &Outcome) -> String {
    match outcome {
        Ok(()) => "ok".into(),
        Err(reason) => reason
            .replacen(r#"{"error":""#, "", 1)
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take_while(|c| !matches!(c, '`' | '\'' | '"' | '{'))
            .take(80)
            .collect(),
    }
}

/// Replays `seeds` and then mutates them within `budget`, on a thread of its own under a
/// watchdog. Stops at the first finding.
pub fn fuzz(target: &'static Target, seeds: Vec<Vec<u8>>, budget: Budget) -> Report {
    // What the worker is running now, and since when: what the watchdog reports on a hang.
    let current: Arc<Running> = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    let worker_current = Arc::clone(&current);
    let worker = std::thread::Builder::new()
        .name(format!("fuzz-{}", target.name))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let report = mutate_loop(target, seeds, budget, &worker_current);
            let _ = done_tx.send(report);
        });
    if let Err(e) = worker {
        panic!("cannot start the fuzz thread: {e}");
    }
    let limit = hang_after();
    loop {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(report) => return report,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The worker died without a report: only a panic outside the target does that.
                let input = lock(&current).take().map(|(_, i)| i).unwrap_or_default();
                return Report {
                    finding: Some(Finding {
                        target: target.name,
                        input,
                        problem: Problem::Panic("the fuzz thread died".into()),
                    }),
                    ..Report::default()
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let slow = lock(&current)
                    .as_ref()
                    .filter(|(since, _)| since.elapsed() > limit)
                    .map(|(since, input)| (since.elapsed(), input.clone()));
                if let Some((took, input)) = slow {
                    // The worker is left running: it cannot be stopped, and the process ends soon.
                    return Report {
                        finding: Some(Finding {
                            target: target.name,
                            input,
                            problem: Problem::Hang(took),
                        }),
                        ..Report::default()
                    };
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn mutate_loop(
    target: &'static Target,
    seeds: Vec<Vec<u8>>,
    budget: Budget,
    current: &Running,
) -> Report {
    let started = Instant::now();
    let mut report = Report::default();
    let mut seen = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let run = |input: &[u8], report: &mut Report| -> Option<String> {
        *lock(current) = Some((Instant::now(), input.to_vec()));
        let result = run_one(target, input);
        *lock(current) = None;
        report.executions += 1;
        match result {
            Ok(outcome) => {
                match &outcome {
                    Ok(()) => report.accepted += 1,
                    Err(_) => report.refused += 1,
                }
                Some(kind_of(&outcome))
            }
            Err(problem) => {
                report.finding = Some(Finding {
                    target: target.name,
                    input: input.to_vec(),
                    problem,
                });
                None
            }
        }
    };
    for seed in &seeds {
        match run(seed, &mut report) {
            Some(kind) => {
                seen.insert(kind);
            }
            None => {
                report.elapsed = started.elapsed();
                report.outcomes = seen.len();
                return report;
            }
        }
        pool.push(seed.clone());
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let seed_count = pool.len();
    let mut mutator = Mutator::new(
        budget.seed ^ name_hash(target.name),
        dictionary(target.dict),
        MAX_INPUT_BYTES,
    );
    let mut i = 0u64;
    while i < budget.iterations && started.elapsed() < budget.time {
        i += 1;
        let mut input = pool[mutator.rng.below(pool.len())].clone();
        mutator.mutate(&mut input, &pool);
        if let Some(fixup) = target.fixup
            && !mutator.rng.chance(4)
        {
            fixup(&mut input);
        }
        match run(&input, &mut report) {
            // A new kind of outcome: worth mutating further (at most 1000 kept).
            Some(kind) => {
                if seen.insert(kind) && pool.len() < seed_count + 1000 {
                    pool.push(input);
                }
            }
            None => break,
        }
    }
    report.kept = pool.len() - seed_count;
    report.outcomes = seen.len();
    report.elapsed = started.elapsed();
    report
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Deletes what it can from a failing input while it fails the same way (same kind of problem;
/// for a panic, the same message up to its first digit or quote): the input to commit as a
/// regression.
pub fn minimise(target: &'static Target, input: &[u8], problem: &Problem) -> Vec<u8> {
    let same = |candidate: &[u8]| -> bool {
        let found = fuzz(
            target,
            vec![candidate.to_vec()],
            Budget {
                iterations: 0,
                time: Duration::ZERO,
                seed: 0,
            },
        )
        .finding;
        match (found.map(|f| f.problem), problem) {
            (Some(Problem::Panic(a)), Problem::Panic(b)) => {
                kind_of(&Err(a.clone())) == kind_of(&Err(b.clone()))
            }
            (Some(Problem::Hang(_)), Problem::Hang(_)) => true,
            (Some(Problem::Memory(_)), Problem::Memory(_)) => true,
            _ => false,
        }
    };
    let mut best = input.to_vec();
    let mut chunk = best.len().next_power_of_two().max(1);
    while chunk >= 1 {
        let mut at = 0;
        while at < best.len() {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            if same(&candidate) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}
