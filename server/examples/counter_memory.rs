//! Measures the memory store's bytes per live counter: the process's resident set before and
//! after creating `N` counters, over `N`.
//!
//! The counters are what `bench/` loads the server with: fixed windows of one minute, keyed by
//! one descriptor entry (`key0=v<i>` in domain `bench`, keys built by the server's own key
//! schema), so each is one counter as the server would hold it. The allocator is the server's
//! (mimalloc), and the store is bounded at twice `N`, so nothing is evicted.
//!
//! Run: `cargo run --release -p sluice-server --example counter_memory [-- N [ALGORITHM]]`,
//! `N` defaulting to 1 000 000 and `ALGORITHM` to `fixed_window` (also `sliding_window`,
//! `token_bucket`). Prints one JSON line. Linux only (reads `/proc/self/statm`).

use std::sync::Arc;
use std::time::Duration;

use sluice_server::algorithm::{Algorithm, Period, Policy};
use sluice_server::clock::ManualClock;
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::keys::KeySchema;
use sluice_server::storage::{Admission, Batch, Hit, Role};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Resident bytes of this process.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // The page size of every Linux target this runs on.
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let algorithm = match args.next().as_deref() {
        None | Some("fixed_window") => Algorithm::FixedWindow,
        Some("sliding_window") => Algorithm::SlidingWindow,
        Some("token_bucket") => Algorithm::TokenBucket,
        Some(other) => {
            eprintln!("counter_memory: unknown algorithm {other}");
            std::process::exit(2);
        }
    };
    let policy = Policy {
        algorithm,
        period: Period::Seconds(60),
        limit: 1_000_000_000,
        burst: 1_000_000_000,
    };
    let keys = KeySchema::default();
    // A minute boundary, so every window starts now and no counter expires during the run.
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_040)));
    let store = MemoryStore::new(2 * n, clock);
    let before = rss();
    for i in 0..n {
        let value = format!("v{i}");
        let key = keys.counter_key("bench", [("key0", value.as_str())], &policy);
        let outcome = store.apply_now(&Batch {
            hits: vec![Hit {
                key,
                policy,
                delta: 1,
                role: Role::Enforce,
                claim: Default::default(),
            }],
            admission: Admission::AllOrNothing,
        });
        assert!(outcome.charged);
    }
    let after = rss();
    assert_eq!(store.len(), n);
    let delta = after.saturating_sub(before);
    println!(
        "{{\"counters\": {n}, \"algorithm\": \"{}\", \"rss_delta_bytes\": {delta}, \"bytes_per_counter\": {:.1}}}",
        algorithm.as_str(),
        delta as f64 / n as f64
    );
}
