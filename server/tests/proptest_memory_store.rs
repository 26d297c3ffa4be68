//! Property tests of the memory store against a plain model: random requests over a few rules of
//! every algorithm, with time moved by a manual clock.
//!
//! - The store reports exactly the readings that [`algorithm::step`] over a plain map predicts,
//!   and charges exactly when the admission rule says so (repeated keys, refunds, looks, expiry,
//!   sweeps and window changes included).
//! - Under all-or-nothing admission, every enforced limit keeps its algorithm's bound: a fixed
//!   window never admits more than its limit in a window, a sliding window never more than its
//!   limit in any interval of one window length, a token bucket never more than its burst plus
//!   the refill over any interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sluice_server::algorithm::{self, Algorithm, MICROS_PER_SEC, Micros, Period, Policy, State};
use sluice_server::clock::{Clock, ManualClock};
use sluice_server::storage::backend::memory::MemoryStore;
use sluice_server::storage::keys::KeySchema;
use sluice_server::storage::{Admission, Batch, Hit, Role, rejects};

struct Rule {
    name: &'static str,
    policy: Policy,
    role: Role,
}

const fn policy(algorithm: Algorithm, secs: u64, limit: u64, burst: u64) -> Policy {
    Policy {
        algorithm,
        period: Period::Seconds(secs),
        limit,
        burst,
    }
}

const RULES: [Rule; 6] = [
    Rule {
        name: "per-second",
        policy: policy(Algorithm::FixedWindow, 1, 3, 3),
        role: Role::Enforce,
    },
    Rule {
        name: "sliding-ten",
        policy: policy(Algorithm::SlidingWindow, 10, 5, 5),
        role: Role::Enforce,
    },
    Rule {
        name: "bucket",
        policy: policy(Algorithm::TokenBucket, 10, 4, 2),
        role: Role::Enforce,
    },
    Rule {
        name: "quota-a",
        policy: policy(Algorithm::FixedWindow, 60, 4, 4),
        role: Role::Quota,
    },
    Rule {
        name: "quota-b",
        policy: policy(Algorithm::SlidingWindow, 10, 1, 1),
        role: Role::Quota,
    },
    Rule {
        name: "shadow",
        policy: policy(Algorithm::TokenBucket, 5, 2, 2),
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

fn step(charge_all: bool, refunds: bool) -> impl Strategy<Value = Step> {
    let admission = if charge_all {
        prop_oneof![Just(Admission::AllOrNothing), Just(Admission::ChargeAll)].boxed()
    } else {
        Just(Admission::AllOrNothing).boxed()
    };
    let delta = if refunds {
        prop_oneof![4 => 1i64..=3, 1 => -2i64..=0].boxed()
    } else {
        prop_oneof![4 => 1i64..=3, 1 => Just(0i64)].boxed()
    };
    prop_oneof![
        2 => (0u64..12_000).prop_map(|ms| Step::Advance(Duration::from_millis(ms))),
        1 => Just(Step::Sweep),
        8 => (admission, prop::collection::vec((0..RULES.len(), delta), 1..4))
            .prop_map(|(admission, hits)| Step::Request { admission, hits }),
    ]
}

fn key(rule: &Rule) -> Vec<u8> {
    KeySchema::default().counter_key("prop", [("rule", rule.name)], &rule.policy)
}

/// Runs `steps`, checking the store against the model after every request. Returns the units
/// admitted per rule, with their times, for all-or-nothing requests.
fn run(steps: Vec<Step>) -> Result<Vec<Vec<(Micros, u64)>>, TestCaseError> {
    let clock = Arc::new(ManualClock::new(Duration::from_secs(1_700_000_000)));
    let store = MemoryStore::new(10_000, clock.clone());
    let mut model: HashMap<Vec<u8>, State> = HashMap::new();
    let mut admitted: Vec<Vec<(Micros, u64)>> = vec![Vec::new(); RULES.len()];

    for step in steps {
        match step {
            Step::Advance(by) => clock.advance(by),
            Step::Sweep => store.sweep(),
            Step::Request { admission, hits } => {
                let now = clock.now().as_micros() as Micros;
                let batch = Batch {
                    admission,
                    hits: hits
                        .iter()
                        .map(|&(r, delta)| Hit {
                            key: key(&RULES[r]),
                            policy: RULES[r].policy,
                            delta,
                            role: RULES[r].role,
                            claim: Default::default(),
                        })
                        .collect(),
                };

                // The model: hits step in batch order, so a repeated counter sees earlier hits.
                let mut scratch = model.clone();
                let mut expected = Vec::with_capacity(hits.len());
                for hit in &batch.hits {
                    let state = scratch.entry(hit.key.clone()).or_default();
                    let s = algorithm::step(&hit.policy, state, now, hit.delta);
                    expected.push(s.reading);
                    *state = s.next;
                }
                let expect_charged =
                    admission == Admission::ChargeAll || !rejects(&batch.hits, &expected);

                let out = store.apply_now(&batch);
                prop_assert_eq!(&out.readings, &expected);
                prop_assert_eq!(out.charged, expect_charged);

                if out.charged {
                    model = scratch;
                    if admission == Admission::AllOrNothing {
                        for (&(r, delta), reading) in hits.iter().zip(&expected) {
                            if delta > 0 && !reading.over {
                                admitted[r].push((now, delta as u64));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(admitted)
}

/// The most units admitted in any half-open interval of length `span`.
fn densest(admitted: &[(Micros, u64)], span: Micros) -> u64 {
    admitted
        .iter()
        .map(|&(start, _)| {
            admitted
                .iter()
                .filter(|&&(t, _)| t >= start && t < start + span)
                .map(|&(_, c)| c)
                .sum()
        })
        .max()
        .unwrap_or(0)
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
    fn enforced_limits_keep_their_bounds(steps in prop::collection::vec(step(false, false), 1..80)) {
        let admitted = run(steps)?;
        for (rule, admitted) in RULES.iter().zip(&admitted) {
            if rule.role != Role::Enforce {
                continue;
            }
            let p = &rule.policy;
            let window = p.period.nominal_secs() * MICROS_PER_SEC;
            match p.algorithm {
                Algorithm::FixedWindow => {
                    let mut per_window: HashMap<u64, u64> = HashMap::new();
                    for &(t, c) in admitted {
                        *per_window.entry(t / window).or_default() += c;
                    }
                    prop_assert!(per_window.values().all(|&n| n <= p.limit), "{}", rule.name);
                }
                Algorithm::SlidingWindow => {
                    prop_assert!(densest(admitted, window) <= p.limit, "{}", rule.name);
                }
                Algorithm::TokenBucket => {
                    for span in [window / 4, window, 3 * window] {
                        let refill = (span * p.limit).div_ceil(window);
                        prop_assert!(densest(admitted, span) <= p.burst + refill, "{}", rule.name);
                    }
                }
                // Pools have their own tests (algorithm::lease, algorithm::share).
                Algorithm::Concurrency | Algorithm::FairShare => {
                    prop_assert!(false, "{} is not a counter", rule.name);
                }
            }
        }
    }

    #[test]
    fn matches_the_model_under_any_admission(steps in prop::collection::vec(step(true, true), 1..80)) {
        run(steps)?;
    }
}
