//! The AFL++ harness: `sluice-fuzz-afl TARGET`, built and run with `cargo afl`
//! (docs/fuzzing.md). The target runs with the same checks as the bounded run; a broken one
//! aborts, which AFL++ records as a crash. Hangs are AFL++'s `-t`.

use sluice_fuzz::harness::{self, Problem};
use sluice_fuzz::targets;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = targets::target(&name) else {
        eprintln!("usage: sluice-fuzz-afl TARGET; targets:");
        for t in targets::TARGETS {
            eprintln!("  {}", t.name);
        }
        std::process::exit(2);
    };
    // Run the committed corpus once before the fork server starts: the shared state (rule set,
    // filter configurations) and whatever initialises itself on first use are then built in the
    // parent, instead of in every child's first run, where AFL++ would read them as instability.
    let corpus = harness::read_corpus(&harness::corpus_dir(target.name)).unwrap_or_default();
    for (_, input) in &corpus {
        let _ = harness::run_one(target, input);
    }
    let _ = harness::run_one(target, b"");
    // On a thread with a spawned thread's stack, as the bounded run and tokio's workers: a
    // recursion that fits the main thread's 8 MiB but not 2 MiB is a crash here too. The fork
    // server starts inside `afl::fuzz`, so the forked children run on this thread.
    let fuzzer = std::thread::Builder::new()
        .stack_size(harness::STACK_BYTES)
        .spawn(move || {
            afl::fuzz(true, |data| match harness::run_one(target, data) {
                Ok(_) => {}
                Err(Problem::Panic(_)) => std::process::abort(),
                Err(problem) => panic!("{problem}"),
            });
            std::process::exit(0);
        });
    match fuzzer.map(std::thread::JoinHandle::join) {
        Ok(Ok(())) => {}
        _ => std::process::abort(),
    }
}
