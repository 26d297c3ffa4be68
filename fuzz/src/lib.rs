//! Fuzz targets for Sluice: the rule-file reader, every request path of the server (gRPC,
//! `/json`, `/auth`, `/leases`, the admin API) and the proxy-wasm filter's readers of its
//! configuration, of Sluice's answers and of the requests it sees. `docs/fuzzing.md` says how to
//! run them and what the last long run found.
//!
//! - [`targets`]: the targets, plain functions of the input's bytes, and their dictionaries.
//! - [`harness`]: one input with its checks (no panic, bounded time and memory), corpus replay,
//!   the bounded mutation run CI does (`tests/corpus.rs`), and minimising a finding.
//! - [`mutate`]: the deterministic mutator of that run.
//! - [`alloc`]: the counting allocator that bounds memory per input.
//! - [`seeds`]: the corpus inputs taken from the repository's examples and docs.
//!
//! The binaries: `sluice-fuzz` (list, seed, replay, a mutation run of any length, minimise) and,
//! with
//! the `afl` feature under `cargo afl`, `sluice-fuzz-afl`, the AFL++ harness for coverage-guided
//! runs.

pub mod alloc;
pub mod harness;
pub mod mutate;
pub mod seeds;
pub mod targets;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
