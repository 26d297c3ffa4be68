//! Measures weighted fair share with the real `algorithm::share` on a simulated clock, request by
//! request as a store applies single-descriptor checks (admitted requests charged, refused ones
//! recorded as arrivals), and prints each tenant's admissions per window:
//!
//! 1. weights 2:1, both saturating (the ratio, per window);
//! 2. one of two equal tenants goes idle (how soon the other gets everything);
//! 3. a weight-3 tenant joins a weight-1 tenant that used the whole pool, with the window and in
//!    the middle of a spent window;
//! 4. a steady tenant below its guarantee beside a greedy borrower.
//!
//! Run: `cargo run --release -p sluice-server --example fair_share`. Deterministic.

use std::collections::BTreeMap;

use sluice_server::algorithm::share::{self, Tenant};
use sluice_server::algorithm::{Algorithm, MICROS_PER_SEC, Micros, Period, Policy, State};

const T0: Micros = 1_700_000_040 * MICROS_PER_SEC;

struct Pool {
    policy: Policy,
    state: State,
    admitted: BTreeMap<(u64, String), u64>,
}

impl Pool {
    fn new(capacity: u64, secs: u64) -> Self {
        Self {
            policy: Policy {
                algorithm: Algorithm::FairShare,
                period: Period::Seconds(secs),
                limit: capacity,
                burst: capacity,
            },
            state: State::Empty,
            admitted: BTreeMap::new(),
        }
    }

    fn window(&self, at: Micros) -> u64 {
        (at - T0) / (self.policy.period.nominal_secs() * MICROS_PER_SEC)
    }

    fn hit(&mut self, at: Micros, name: &str, weight: u32) {
        let t = Tenant {
            id: name.as_bytes().to_vec(),
            weight,
        };
        let s = share::step(&self.policy, &self.state, at, 1, &t);
        if s.reading.over {
            self.state = share::arrival(&self.policy, &self.state, at, 1, &t);
        } else {
            self.state = s.next;
            let w = self.window(at);
            *self.admitted.entry((w, name.to_owned())).or_default() += 1;
        }
    }

    /// Tenants `(name, weight, requests per window)` send evenly spaced, interleaved requests for
    /// `windows` windows starting at window `from`.
    fn drive(&mut self, from: u64, windows: u64, tenants: &[(&str, u32, u64)]) {
        let len = self.policy.period.nominal_secs() * MICROS_PER_SEC;
        let start = T0 + from * len;
        let mut arrivals: Vec<(Micros, usize)> = Vec::new();
        for (k, &(_, _, rate)) in tenants.iter().enumerate() {
            let total = rate * windows;
            arrivals.extend((0..total).map(|n| (start + n * len * windows / total, k)));
        }
        arrivals.sort();
        for (at, k) in arrivals {
            let (name, weight, _) = tenants[k];
            self.hit(at, name, weight);
        }
    }

    fn report(&self, title: &str, windows: std::ops::Range<u64>, names: &[&str]) {
        println!("{title}");
        for w in windows {
            let got: Vec<String> = names
                .iter()
                .map(|n| {
                    let a = self
                        .admitted
                        .get(&(w, (*n).to_owned()))
                        .copied()
                        .unwrap_or(0);
                    format!("{n} {a:>4}")
                })
                .collect();
            println!("  window {w}: {}", got.join("   "));
        }
    }
}

fn main() {
    let mut p = Pool::new(600, 60);
    p.drive(0, 5, &[("gold", 2, 5_000), ("basic", 1, 5_000)]);
    p.report(
        "1. capacity 600/min, weights 2:1, both asking 5000/min",
        0..5,
        &["gold", "basic"],
    );
    let (g, b) = (
        p.admitted
            .get(&(4, "gold".to_owned()))
            .copied()
            .unwrap_or(0),
        p.admitted
            .get(&(4, "basic".to_owned()))
            .copied()
            .unwrap_or(0),
    );
    println!("   ratio {:.3} (target 2)", g as f64 / b.max(1) as f64);

    let mut p = Pool::new(100, 10);
    p.drive(0, 2, &[("a", 1, 500), ("b", 1, 500)]);
    p.drive(2, 3, &[("a", 1, 500)]);
    p.report(
        "2. capacity 100/10 s, equal weights; b stops after window 1",
        0..5,
        &["a", "b"],
    );

    let mut p = Pool::new(200, 10);
    p.drive(0, 2, &[("a", 1, 1_000)]);
    p.drive(2, 2, &[("a", 1, 1_000), ("c", 3, 1_000)]);
    p.report(
        "3a. capacity 200/10 s; c (weight 3) joins a (weight 1) with window 2",
        0..4,
        &["a", "c"],
    );
    let mut p = Pool::new(200, 10);
    p.drive(0, 1, &[("a", 1, 1_000)]);
    for n in 0..100 {
        p.hit(T0 + 5 * MICROS_PER_SEC + n * 10_000, "c", 3);
    }
    p.drive(1, 2, &[("a", 1, 1_000), ("c", 3, 1_000)]);
    p.report(
        "3b. the same, c arriving mid-window 0 after a spent the pool",
        0..3,
        &["a", "c"],
    );

    let mut p = Pool::new(200, 10);
    p.drive(0, 4, &[("greedy", 1, 1_000), ("steady", 1, 60)]);
    p.report(
        "4. capacity 200/10 s, equal weights; steady asks 60 of its 100",
        0..4,
        &["greedy", "steady"],
    );
}
