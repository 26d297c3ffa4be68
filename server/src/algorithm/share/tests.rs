//! Fair share on a manual clock: the ratios, idle and new tenants, and the guarantee, by
//! simulating tenants against [`step`] exactly as a store applies single-hit requests.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::algorithm::{Algorithm, Period};

const SEC: Micros = MICROS_PER_SEC;
/// A round minute.
const T0: Micros = 1_700_000_040 * SEC;

fn pool(capacity: u64, secs: u64) -> Policy {
    Policy {
        algorithm: Algorithm::FairShare,
        period: Period::Seconds(secs),
        limit: capacity,
        burst: capacity,
    }
}

fn tenant(name: &str, weight: u32) -> Tenant {
    Tenant {
        id: name.as_bytes().to_vec(),
        weight,
    }
}

/// A pool driven one request at a time, charging admitted requests and recording refused ones as
/// arrivals, as a store does with a single-hit request.
struct Sim {
    policy: Policy,
    state: State,
    /// Admissions per (window index, tenant).
    admitted: BTreeMap<(u64, String), u64>,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        Self {
            policy,
            state: State::Empty,
            admitted: BTreeMap::new(),
        }
    }

    fn hit(&mut self, at: Micros, t: &Tenant) -> bool {
        let s = step(&self.policy, &self.state, at, 1, t);
        if s.reading.over {
            self.state = arrival(&self.policy, &self.state, at, 1, t);
        } else {
            self.state = s.next;
            let window = at / (self.policy.period.nominal_secs() * SEC);
            let name = String::from_utf8(t.id.clone()).unwrap_or_default();
            *self.admitted.entry((window, name)).or_default() += 1;
        }
        !s.reading.over
    }

    fn admitted(&self, at: Micros, name: &str) -> u64 {
        let window = at / (self.policy.period.nominal_secs() * SEC);
        self.admitted
            .get(&(window, name.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Every tenant in `rates` sends `rate` evenly spaced requests per window, interleaved, for
    /// `windows` windows from `from`.
    fn drive(&mut self, from: Micros, windows: u64, rates: &[(&Tenant, u64)]) {
        let window = self.policy.period.nominal_secs() * SEC;
        let mut arrivals: Vec<(Micros, usize)> = Vec::new();
        for (k, &(_, rate)) in rates.iter().enumerate() {
            let total = rate * windows;
            for n in 0..total {
                arrivals.push((from + n * (window * windows) / total, k));
            }
        }
        arrivals.sort();
        for (at, k) in arrivals {
            self.hit(at, rates[k].0);
        }
    }
}

#[test]
fn two_to_one_weights_both_saturating_get_two_to_one() {
    let (a, b) = (tenant("a", 2), tenant("b", 1));
    let mut sim = Sim::new(pool(300, 60));
    sim.drive(T0, 5, &[(&a, 1_000), (&b, 1_000)]);
    for w in 0..5 {
        let at = T0 + w * 60 * SEC;
        let (got_a, got_b) = (sim.admitted(at, "a"), sim.admitted(at, "b"));
        assert_eq!(got_a + got_b, 300, "window {w}: the pool is used fully");
        let ratio = got_a as f64 / got_b as f64;
        assert!(
            (ratio / 2.0 - 1.0).abs() <= 0.05,
            "window {w}: {got_a}:{got_b}"
        );
    }
}

#[test]
fn an_idle_tenants_share_goes_to_the_busy_one_within_one_window() {
    let (a, b) = (tenant("a", 1), tenant("b", 1));
    let mut sim = Sim::new(pool(100, 10));
    sim.drive(T0, 3, &[(&a, 500), (&b, 500)]);
    assert_eq!(sim.admitted(T0 + 20 * SEC, "a"), 50);
    // B stops. During the first quiet window its reserve fades; from the next one A has it all.
    sim.drive(T0 + 30 * SEC, 3, &[(&a, 500)]);
    assert!(sim.admitted(T0 + 30 * SEC, "a") > 50);
    assert_eq!(sim.admitted(T0 + 40 * SEC, "a"), 100);
    assert_eq!(sim.admitted(T0 + 50 * SEC, "a"), 100);
}

#[test]
fn a_new_tenant_gets_its_share_within_one_window() {
    let (a, b) = (tenant("a", 1), tenant("b", 3));
    let mut sim = Sim::new(pool(200, 10));
    sim.drive(T0, 2, &[(&a, 1_000)]);
    assert_eq!(
        sim.admitted(T0 + 10 * SEC, "a"),
        200,
        "alone, A borrows everything"
    );
    // B arrives with the window: it gets its share at once.
    sim.drive(T0 + 20 * SEC, 2, &[(&a, 1_000), (&b, 1_000)]);
    assert_eq!(sim.admitted(T0 + 20 * SEC, "b"), 150);
    assert_eq!(sim.admitted(T0 + 20 * SEC, "a"), 50);

    // A newcomer in the middle of a window A already used up waits for the next window, and
    // then gets its share.
    let c = tenant("c", 1);
    let mut sim = Sim::new(pool(200, 10));
    sim.drive(T0, 1, &[(&a, 1_000)]);
    for n in 0..100 {
        sim.hit(T0 + 5 * SEC + n * 10_000, &c);
    }
    assert_eq!(sim.admitted(T0, "c"), 0);
    sim.drive(T0 + 10 * SEC, 1, &[(&a, 1_000), (&c, 1_000)]);
    assert_eq!(sim.admitted(T0 + 10 * SEC, "c"), 100);
}

#[test]
fn weight_zero_only_borrows_and_untracked_tenants_too() {
    let (free, paid) = (tenant("free", 0), tenant("paid", 1));
    let mut sim = Sim::new(pool(100, 10));
    sim.drive(T0, 1, &[(&free, 1_000)]);
    assert_eq!(
        sim.admitted(T0, "free"),
        100,
        "idle capacity is lent to anyone"
    );
    sim.drive(T0 + 10 * SEC, 2, &[(&free, 1_000), (&paid, 1_000)]);
    assert_eq!(sim.admitted(T0 + 20 * SEC, "paid"), 100);
    assert_eq!(sim.admitted(T0 + 20 * SEC, "free"), 0);

    // A full tenant table: the newcomer is not tracked, so it has no guarantee.
    let mut state = State::Empty;
    let p = pool(10_000, 10);
    for n in 0..MAX_TENANTS {
        state = step(&p, &state, T0, 1, &tenant(&format!("t{n}"), 1)).next;
    }
    let late = step(&p, &state, T0, 1, &tenant("late", 1000));
    let State::Shares(s) = &late.next else {
        panic!("{:?}", late.next)
    };
    assert_eq!(s.tenants.len(), MAX_TENANTS);
    assert!(!s.tenants.iter().any(|t| t.id == b"late"));
    assert_eq!(
        s.total,
        MAX_TENANTS as u64 + 1,
        "it is admitted from idle capacity"
    );
}

#[test]
fn refunds_and_looks() {
    let p = pool(10, 60);
    let a = tenant("a", 1);
    let one = step(&p, &State::Empty, T0, 3, &a);
    assert_eq!(one.reading.remaining(true), 7);
    let look = step(&p, &one.next, T0, 0, &a);
    assert_eq!(look.next, one.next);
    assert_eq!(look.reading.remaining(false), 7);
    let back = step(&p, &one.next, T0, -5, &a);
    assert_eq!(back.reading.remaining(true), 10);
    let nobody = step(&p, &State::Empty, T0, -5, &a);
    assert_eq!(nobody.next, State::Empty, "a refund creates nothing");
    // A refused request still counts as demand.
    let full = step(&p, &State::Empty, T0, 10, &a).next;
    let refused = step(&p, &full, T0, 1, &a);
    assert!(refused.reading.over);
    assert_eq!(refused.reading.wait, 60 * SEC);
    let State::Shares(s) = arrival(&p, &full, T0, 1, &a) else {
        panic!()
    };
    assert_eq!((s.tenants[0].arrivals, s.tenants[0].used), (11, 10));
}

proptest! {
    // Each case simulates thousands of requests; fewer cases keep the suite quick.
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// A tenant whose demand covers its guarantee is never pushed below it by a borrower: a
    /// steady tenant asking for up to its share gets every request admitted once its demand is
    /// known (from its second window), however hard the other tenants borrow.
    #[test]
    fn a_borrower_never_pushes_a_tenant_below_its_guarantee(
        capacity in 10u64..200,
        weights in prop::collection::vec(0u32..5, 1..4),
        steady_weight in 1u32..5,
        fraction in 0.1f64..1.0,
    ) {
        let p = pool(capacity, 10);
        let steady = tenant("steady", steady_weight);
        let borrowers: Vec<Tenant> = weights
            .iter()
            .enumerate()
            .map(|(k, &w)| tenant(&format!("b{k}"), w))
            .collect();
        let active_weight: u32 = steady_weight + weights.iter().sum::<u32>();
        let share = capacity as f64 * f64::from(steady_weight) / f64::from(active_weight);
        let rate = (share * fraction).floor() as u64;
        let mut sim = Sim::new(p);
        let mut rates: Vec<(&Tenant, u64)> = borrowers.iter().map(|b| (b, capacity * 2)).collect();
        rates.push((&steady, rate));
        sim.drive(T0, 4, &rates);
        for w in 1..4 {
            prop_assert_eq!(sim.admitted(T0 + w * 10 * SEC, "steady"), rate, "window {}", w);
        }
    }

    /// `room` is exactly the largest cost that fits, so `remaining` never promises too much.
    #[test]
    fn remaining_is_what_fits(
        capacity in 1u64..200,
        hits in prop::collection::vec((0u8..4, 1u64..20, 0u64..30_000_000), 1..40),
    ) {
        let p = pool(capacity, 10);
        let mut state = State::Empty;
        let mut at = T0;
        for (who, cost, advance) in hits {
            at += advance;
            let t = tenant(&format!("t{who}"), u32::from(who));
            let look = step(&p, &state, at, 0, &t);
            let room = look.reading.remaining(false);
            prop_assert!(!step(&p, &state, at, room as i64, &t).reading.over || room == 0);
            prop_assert!(step(&p, &state, at, room as i64 + 1, &t).reading.over);
            let s = step(&p, &state, at, cost as i64, &t);
            state = if s.reading.over { arrival(&p, &state, at, cost as i64, &t) } else { s.next };
        }
    }
}

#[test]
fn a_hit_past_the_tenants_guarantee_is_borrowing() {
    let (a, b) = (tenant("a", 1), tenant("b", 1));
    let policy = pool(4, 60);
    let mut state = State::Empty;
    // Alone, `a` is guaranteed all 4: within it, then borrowing past it.
    for n in 0..5 {
        let s = step(&policy, &state, T0, 1, &a);
        assert_eq!(s.reading.borrowing, n >= 4, "hit {n}");
        assert_eq!(s.reading.over, n >= 4, "hit {n}");
        state = s.next;
    }
    // `b` arrives with the pool spent: refused, but within its guarantee of 2 (not borrowing).
    let s = step(&policy, &state, T0 + SEC, 1, &b);
    assert!(s.reading.over && !s.reading.borrowing);
    // A look or a refund borrows nothing.
    assert!(!step(&policy, &state, T0, 0, &a).reading.borrowing);
    assert!(!step(&policy, &state, T0, -1, &a).reading.borrowing);
}
