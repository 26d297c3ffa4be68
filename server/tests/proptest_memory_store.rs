//! Property tests of the memory store against a plain model: random requests over a few rules,
//! with time moved by a manual clock.
//!
//! - The store reports exactly the counts the model expects and charges exactly when the
//!   admission rule says so (duplicate keys, refunds, looks and window changes included).
//! - Under all-or-nothing admission, an enforced counter never admits more than its limit in any
//!   window, net of refunds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_server::clock::{Clock, ManualClock};
use sluice_server::storage::keys::counter_key;
use sluice_server::storage::memory::MemoryStore;
use sluice_server::storage::{Admission, Batch, Hit, Role, rejects};

struct Rule {
    name: &'static str,
    window_secs: u64,
    limit: u64,
    role: Role,
}

const RULES: [Rule; 5] = [
    Rule {
        name: "per-second",
        window_secs: 1,
        limit: 3,
        role: Role::Enforce,
    },
    Rule {
        name: "per-ten",
        window_secs: 10,
        limit: 5,
        role: Role::Enforce,
    },
    Rule {
        name: "quota-a",
        window_secs: 60,
        limit: 4,
        role: Role::Quota,
    },
    Rule {
        name: "quota-b",
        window_secs: 10,
        limit: 1,
        role: Role::Quota,
    },
    Rule {
        name: "shadow",
        window_secs: 5,
        limit: 2,
        role: Role::Shadow,
    },
];

#[derive(Debug, Clone)]
enum Step {
    Advance(Duration),
    Sweep,
    Request {
        admission: Admission,
        /// `(rule index, delta)`; a rule may appear twice.
        hits: Vec<(usize, i64)>,
    },
}

fn step(charge_all: bool) -> impl Strategy<Value = Step> {
    let admission = if charge_all {
        prop_oneof![Just(Admission::AllOrNothing), Just(Admission::ChargeAll)].boxed()
    } else {
        Just(Admission::AllOrNothing).boxed()
    };
    prop_oneof![
        2 => (0u64..12_000).prop_map(|ms| Step::Advance(Duration::from_millis(ms))),
        1 => Just(Step::Sweep),
        8 => (
            admission,
            prop::collection::vec((0..RULES.len(), prop_oneof![4 => 1i64..=3, 1 => -2i64..=0]), 1..4),
        )
            .prop_map(|(admission, hits)| Step::Request { admission, hits }),
    ]
}

/// Runs `steps`, checking the store against the model after every request.
fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
    let store = MemoryStore::new(10_000, clock.clone());
    // (rule, window start) -> count; old windows are simply never read again.
    let mut model: HashMap<(usize, u64), u64> = HashMap::new();
    // Net admitted per enforced window, counted only for all-or-nothing requests.
    let mut net_admitted: HashMap<(usize, u64), i128> = HashMap::new();
    let mut all_or_nothing_only = true;

    for step in steps {
        match step {
            Step::Advance(by) => clock.advance(by),
            Step::Sweep => store.sweep(),
            Step::Request { admission, hits } => {
                all_or_nothing_only &= admission == Admission::AllOrNothing;
                let now = clock.now().as_secs();
                let windows: Vec<(usize, u64)> = hits
                    .iter()
                    .map(|&(r, _)| (r, now - now % RULES[r].window_secs))
                    .collect();
                let batch = Batch {
                    admission,
                    hits: hits
                        .iter()
                        .zip(&windows)
                        .map(|(&(r, delta), &(_, start))| {
                            let rule = &RULES[r];
                            Hit {
                                key: counter_key(
                                    b"",
                                    "prop",
                                    [("rule", rule.name)],
                                    rule.window_secs,
                                    start,
                                ),
                                ttl_secs: start + rule.window_secs - now,
                                limit: rule.limit,
                                delta,
                                role: rule.role,
                            }
                        })
                        .collect(),
                };

                // The model: hits apply in batch order, so a repeated counter sees earlier hits.
                let mut scratch = model.clone();
                let mut expected = Vec::with_capacity(hits.len());
                for (hit, window) in batch.hits.iter().zip(&windows) {
                    let count = scratch.entry(*window).or_insert(0);
                    expected.push(*count);
                    *count = hit.after(*count);
                }
                let expect_charged =
                    admission == Admission::ChargeAll || !rejects(&batch.hits, &expected);

                let out = store.apply_now(&batch);
                prop_assert_eq!(&out.before, &expected);
                prop_assert_eq!(out.charged, expect_charged);

                if out.charged {
                    for ((hit, window), &before) in batch.hits.iter().zip(&windows).zip(&expected) {
                        *net_admitted.entry(*window).or_insert(0) +=
                            i128::from(hit.after(before)) - i128::from(before);
                    }
                    model = scratch;
                }
                if all_or_nothing_only {
                    for (&(r, start), &net) in &net_admitted {
                        if RULES[r].role == Role::Enforce {
                            prop_assert!(
                                net <= i128::from(RULES[r].limit),
                                "{} admitted {net} in the window starting at {start}",
                                RULES[r].name
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    // Failures are kept under `server/proptest-regressions/` (tests run from the package root)
    // and committed, so every later run replays them first.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_memory_store.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn never_admits_more_than_the_limit(steps in prop::collection::vec(step(false), 1..80)) {
        run(steps)?;
    }

    #[test]
    fn matches_the_model_under_any_admission(steps in prop::collection::vec(step(true), 1..80)) {
        run(steps)?;
    }
}
