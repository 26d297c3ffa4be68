//! Measures the sliding window's precision with the real `algorithm::step` on a simulated clock:
//!
//! - **steady traffic**: evenly spaced hits at a fraction of the limit, for many windows and
//!   phases; reports the share admitted and the lowest share admitted in any one window length;
//! - **worst case bound**: adversarial bursts on both sides of window boundaries; reports the most
//!   units admitted in any interval of one window length (must never exceed the limit).
//!
//! Run: `cargo run --release -p sluice-server --example sliding_precision`. Deterministic: the same
//! numbers every run.

use sluice_server::algorithm::{self, Algorithm, MICROS_PER_SEC, Micros, Period, Policy, State};

const T0: Micros = 1_700_000_040 * MICROS_PER_SEC;

fn policy(limit: u64, secs: u64) -> Policy {
    Policy {
        algorithm: Algorithm::SlidingWindow,
        period: Period::Seconds(secs),
        limit,
        burst: limit,
    }
}

/// Admits `hits` (times, in order) one at a time; returns the admitted times.
fn run(p: &Policy, hits: impl IntoIterator<Item = Micros>) -> Vec<Micros> {
    let mut state = State::Empty;
    let mut admitted = Vec::new();
    for at in hits {
        let s = algorithm::step(p, &state, at, 1);
        if !s.reading.over {
            state = s.next;
            admitted.push(at);
        }
    }
    admitted
}

/// Most admitted in any half-open interval `[t, t + span)` starting at an admitted hit.
fn densest(admitted: &[Micros], span: Micros) -> usize {
    let mut best = 0;
    let mut j = 0;
    for i in 0..admitted.len() {
        while j < admitted.len() && admitted[j] < admitted[i] + span {
            j += 1;
        }
        best = best.max(j - i);
    }
    best
}

/// Fewest admitted in any window-length interval `[t, t + span)`, sampled at every arrival after
/// the first window (so the start-up transient is not counted).
fn sparsest(arrivals: &[Micros], admitted: &[Micros], span: Micros) -> usize {
    let start = arrivals[0] + span;
    arrivals
        .iter()
        .filter(|&&t| t >= start && t + span <= *arrivals.last().unwrap_or(&0))
        .map(|&t| {
            let lo = admitted.partition_point(|&a| a < t);
            let hi = admitted.partition_point(|&a| a < t + span);
            hi - lo
        })
        .min()
        .unwrap_or(0)
}

fn main() {
    println!("steady traffic (20 windows, 7 phases each):");
    println!("| limit | window | offered | admitted | fewest admitted in one window |");
    println!("|---|---|---|---|---|");
    for (limit, secs) in [(10u64, 1u64), (100, 60), (1000, 60), (20, 3600)] {
        let window = secs * MICROS_PER_SEC;
        for percent in [90u64, 95, 100, 120, 200] {
            let (mut offered, mut admitted, mut fewest) = (0usize, 0usize, usize::MAX);
            for phase in 0..7u64 {
                let gap = window * 100 / (percent * limit);
                let start = T0 + phase * window / 7;
                let n = (20 * limit * percent / 100) as usize;
                let arrivals: Vec<Micros> = (0..n as u64).map(|i| start + i * gap).collect();
                let got = run(&policy(limit, secs), arrivals.iter().copied());
                offered += arrivals.len();
                admitted += got.len();
                fewest = fewest.min(sparsest(&arrivals, &got, window));
            }
            println!(
                "| {limit} | {secs} s | {percent} % | {:.1} % of offered | {fewest} ({:.1} % of the limit) |",
                100.0 * admitted as f64 / offered as f64,
                100.0 * fewest as f64 / limit as f64
            );
        }
    }

    println!();
    println!("worst case: bursts at both sides of every window boundary, 200 windows:");
    println!("| limit | window | most admitted in any window length | bound |");
    println!("|---|---|---|---|");
    for (limit, secs) in [(10u64, 1u64), (100, 60), (1000, 3600)] {
        let window = secs * MICROS_PER_SEC;
        let sub = window / 20;
        let mut arrivals = Vec::new();
        for w in 0..200u64 {
            let edge = T0 + w * window;
            // A full limit's worth just before the edge, and again just after it, and a trickle
            // in the sub-window that straddles `edge - window`.
            arrivals.extend(std::iter::repeat_n(edge - 1, limit as usize));
            arrivals.extend(std::iter::repeat_n(edge, limit as usize));
            arrivals.extend((1..20).map(|k| edge + k * sub / 2));
        }
        arrivals.sort_unstable();
        let got = run(&policy(limit, secs), arrivals);
        println!(
            "| {limit} | {secs} s | {} | {limit} |",
            densest(&got, window)
        );
    }
}
