use proptest::prelude::*;

use super::calendar::CalendarUnit;
use super::*;

const SEC: u64 = MICROS_PER_SEC;
/// An instant well after the epoch, on a round minute.
const T0: Micros = 1_700_000_040 * SEC;

fn policy(algorithm: Algorithm, secs: u64, limit: u64, burst: u64) -> Policy {
    Policy {
        algorithm,
        period: Period::Seconds(secs),
        limit,
        burst,
    }
}

/// Runs hits `(at, cost)` in time order through one counter, charging the admitted ones (a
/// request of one hit under all-or-nothing). Returns the admitted hits and each reading.
fn run(p: &Policy, hits: &[(Micros, u64)]) -> (Vec<(Micros, u64)>, Vec<Reading>) {
    let mut state = State::Empty;
    let mut admitted = Vec::new();
    let mut readings = Vec::new();
    for &(at, cost) in hits {
        let s = step(p, &state, at, cost as i64);
        if !s.reading.over {
            state = s.next;
            admitted.push((at, cost));
        }
        readings.push(s.reading);
    }
    (admitted, readings)
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

/// Sorted arrival times within `horizon` of `T0`, each with a cost.
fn arrivals(horizon: Micros, max_cost: u64) -> impl Strategy<Value = Vec<(Micros, u64)>> {
    prop::collection::vec((0..horizon, 1..=max_cost), 1..120).prop_map(|mut v| {
        v.sort();
        v.into_iter().map(|(t, c)| (T0 + t, c)).collect()
    })
}

#[test]
fn fixed_window_counts_per_epoch_aligned_window() {
    let p = policy(Algorithm::FixedWindow, 60, 2, 2);
    let (admitted, readings) = run(&p, &[(T0, 1), (T0 + SEC, 1), (T0 + 2 * SEC, 1)]);
    assert_eq!(admitted.len(), 2);
    assert_eq!(readings[1].remaining(true), 0);
    assert!(readings[2].over);
    assert_eq!(readings[2].wait, 58 * SEC);
    // The next window starts from zero.
    let (admitted, _) = run(&p, &[(T0, 2), (T0 + 60 * SEC, 2)]);
    assert_eq!(admitted.len(), 2);
}

#[test]
fn fixed_window_edge_burst_is_what_sliding_prevents() {
    let fixed = policy(Algorithm::FixedWindow, 60, 10, 10);
    let sliding = policy(Algorithm::SlidingWindow, 60, 10, 10);
    // Ten at the end of one window, ten at the start of the next: one second apart.
    let hits: Vec<_> = (0..10)
        .map(|_| (T0 + 59 * SEC, 1))
        .chain((0..10).map(|_| (T0 + 60 * SEC, 1)))
        .collect();
    assert_eq!(run(&fixed, &hits).0.len(), 20);
    let (admitted, readings) = run(&sliding, &hits);
    assert_eq!(admitted.len(), 10);
    // The first rejected hit is told when the burst leaves the window: the sub-window holding
    // T0 + 59 s is [T0 + 57 s, T0 + 60 s), counted until one window after its end. A strict
    // window needs at least 59 s here; the sub-window granularity adds one second.
    assert_eq!(readings[10].wait, 60 * SEC);
}

#[test]
fn calendar_month_resets_at_the_first_of_the_month() {
    let start = calendar::days_from_civil(2026, 12, 1) as u64 * 86_400;
    let p = Policy {
        algorithm: Algorithm::FixedWindow,
        period: Period::Calendar(CalendarUnit::Month, 1),
        limit: 1000,
        burst: 1000,
    };
    let before = (start - 3600) * SEC;
    let s = step(&p, &State::Empty, before, 1000);
    assert!(!s.reading.over);
    assert_eq!(s.reading.reset, 3600 * SEC);
    let again = step(&p, &s.next, before + SEC, 1);
    assert!(again.reading.over);
    assert_eq!(again.reading.wait, 3599 * SEC);
    assert!(!step(&p, &s.next, start * SEC, 1000).reading.over);
}

#[test]
fn token_bucket_allows_a_burst_then_the_rate() {
    // 10 per second, bursts of 20.
    let p = policy(Algorithm::TokenBucket, 1, 10, 20);
    let burst: Vec<_> = (0..21).map(|_| (T0, 1)).collect();
    let (admitted, readings) = run(&p, &burst);
    assert_eq!(admitted.len(), 20);
    assert_eq!(readings[0].remaining(true), 19);
    assert_eq!(readings[19].remaining(true), 0);
    // One token comes back every 100 ms, to the microsecond.
    assert!(readings[20].over);
    assert_eq!(readings[20].wait, 100_000);
    assert_eq!(readings[19].reset, 2 * SEC);
}

#[test]
fn token_bucket_cost_and_refund() {
    let p = policy(Algorithm::TokenBucket, 60, 60, 60);
    let s = step(&p, &State::Empty, T0, 50);
    assert_eq!(s.reading.remaining(true), 10);
    // 20 more do not fit; 10 have to refill, at one per second.
    let over = step(&p, &s.next, T0, 20);
    assert!(over.reading.over);
    assert_eq!(over.reading.wait, 10 * SEC);
    assert_eq!(over.next, s.next, "a rejected hit takes nothing");
    // Refunding more than was taken leaves a full bucket, not a credit.
    let refund = step(&p, &s.next, T0, -500);
    assert_eq!(refund.next, State::Empty);
    assert_eq!(refund.reading.remaining(true), 60);
    // A refund never creates a counter.
    assert_eq!(step(&p, &State::Empty, T0, -5).next, State::Empty);
}

#[test]
fn zero_limits_admit_nothing() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let burst = if algorithm == Algorithm::TokenBucket {
            5
        } else {
            0
        };
        let p = policy(algorithm, 60, 0, burst);
        let s = step(&p, &State::Empty, T0, 1);
        assert!(s.reading.over, "{algorithm:?}");
        assert!(s.reading.wait > 0, "{algorithm:?}");
        assert!(
            !step(&p, &State::Empty, T0, 0).reading.over,
            "{algorithm:?}"
        );
    }
}

#[test]
fn a_state_of_another_shape_reads_as_empty() {
    let p = policy(Algorithm::SlidingWindow, 60, 5, 5);
    let s = step(&p, &State::Tat(T0 + 10 * SEC), T0, 1);
    assert_eq!(s.reading.used_before, 0);
    assert_eq!(s.next, State::Buckets(vec![(T0 / (3 * SEC), 1)]));
}

#[test]
fn sliding_refund_takes_from_the_newest_sub_window_first() {
    let p = policy(Algorithm::SlidingWindow, 20, 100, 100);
    let a = step(&p, &State::Empty, T0, 5).next;
    let b = step(&p, &a, T0 + 2 * SEC, 3).next;
    let r = step(&p, &b, T0 + 2 * SEC, -4);
    assert_eq!(r.next, State::Buckets(vec![(T0 / SEC, 4)]));
    assert_eq!(r.reading.used_after, 4);
}

#[test]
fn a_refund_at_an_earlier_instant_takes_from_that_sub_window_first() {
    let p = policy(Algorithm::SlidingWindow, 20, 100, 100);
    let a = step(&p, &State::Empty, T0, 5).next;
    let b = step(&p, &a, T0 + 2 * SEC, 3).next;
    // Stepped at T0 (an undo of the first charge): its own sub-window goes first.
    let r = step(&p, &b, T0, -5);
    assert_eq!(r.next, State::Buckets(vec![(T0 / SEC + 2, 3)]));
    // More than it holds: the rest comes from the later sub-window.
    let r = step(&p, &b, T0, -6);
    assert_eq!(r.next, State::Buckets(vec![(T0 / SEC + 2, 2)]));
}

#[test]
fn forcing_charges_a_token_bucket_beyond_its_burst() {
    let p = policy(Algorithm::TokenBucket, 10, 10, 10);
    let full = step(&p, &State::Empty, T0, 10).next;
    assert!(step(&p, &full, T0, 3).reading.over);
    assert_eq!(step(&p, &full, T0, 3).next, full);
    let forced = force(&p, &full, T0, 3, &Claim::None);
    assert!(forced.reading.over, "the reading still says it did not fit");
    // 13 units of debt: empty for 3 more seconds than a full drain takes.
    assert_eq!(forced.next, State::Tat(T0 + 13 * SEC));
    assert!(step(&p, &forced.next, T0 + 3 * SEC, 1).reading.over);
    assert!(!step(&p, &forced.next, T0 + 4 * SEC, 1).reading.over);
    // Windows count over-limit hits anyway: forcing changes nothing there.
    let w = policy(Algorithm::FixedWindow, 60, 2, 2);
    assert_eq!(
        force(&w, &State::Empty, T0, 5, &Claim::None),
        step(&w, &State::Empty, T0, 5)
    );
}

#[test]
fn expiry_follows_the_state() {
    let p = policy(Algorithm::FixedWindow, 60, 5, 5);
    let s = step(&p, &State::Empty, T0 + 10 * SEC, 1).next;
    assert_eq!(expires_at(&p, &s), Some(T0 + 60 * SEC));
    let p = policy(Algorithm::TokenBucket, 1, 10, 10);
    let s = step(&p, &State::Empty, T0, 3).next;
    assert_eq!(expires_at(&p, &s), Some(T0 + 300_000));
    assert_eq!(expires_at(&p, &State::Empty), None);
}

proptest! {
    #[test]
    fn fixed_window_never_exceeds_the_limit_in_a_window(
        limit in 1u64..12,
        hits in arrivals(300 * SEC, 4),
    ) {
        let p = policy(Algorithm::FixedWindow, 60, limit, limit);
        let (admitted, _) = run(&p, &hits);
        for w in 0..6 {
            let start = T0 + w * 60 * SEC;
            let used: u64 = admitted
                .iter()
                .filter(|&&(t, _)| t >= start && t < start + 60 * SEC)
                .map(|&(_, c)| c)
                .sum();
            prop_assert!(used <= limit);
        }
    }

    /// Bursts on both sides of every boundary included: any interval of one window length holds
    /// at most `limit` admitted units.
    #[test]
    fn sliding_window_is_strict_in_any_interval(
        limit in 1u64..15,
        secs in prop_oneof![Just(1u64), Just(10), Just(60)],
        random in arrivals(200 * SEC, 3),
        edges in prop::collection::vec((0u64..200, -3i64..=3, 1u64..4, 1u64..6), 0..12),
    ) {
        let p = policy(Algorithm::SlidingWindow, secs, limit, limit);
        let window = secs * SEC;
        // Bursts placed on both sides of window boundaries, mixed with random arrivals.
        let mut hits = random;
        for (edge, side, cost, count) in edges {
            let at = (T0 + edge * window).saturating_add_signed(side * (window as i64 / 40 + 1));
            hits.extend((0..count).map(|_| (at, cost)));
        }
        hits.sort();
        let (admitted, _) = run(&p, &hits);
        prop_assert!(densest(&admitted, window) <= limit);
    }

    /// Evenly spaced traffic at 90 % of the limit is never rejected, whatever the limit, window
    /// and phase.
    #[test]
    fn sliding_window_admits_steady_traffic_at_ninety_percent(
        limit in 1u64..400,
        secs in prop_oneof![Just(1u64), Just(60), Just(3600)],
        phase in 0u64..1_000_000_000,
    ) {
        let p = policy(Algorithm::SlidingWindow, secs, limit, limit);
        let window = secs * SEC;
        // 90 % of the limit per window: a gap of window / (0.9 × limit).
        let gap = window * 10 / (9 * limit);
        let start = T0 + phase % window;
        let hits: Vec<_> = (0..(3 * limit + 5)).map(|i| (start + i * gap, 1)).collect();
        let (_, readings) = run(&p, &hits);
        prop_assert!(readings.iter().all(|r| !r.over));
    }

    /// At most `burst` at once and then `limit` per window: any interval of length d holds at most
    /// `burst + ceil(d × limit / window)` units.
    #[test]
    fn token_bucket_bound(
        limit in 1u64..30,
        burst in 1u64..30,
        secs in prop_oneof![Just(1u64), Just(7), Just(60)],
        hits in arrivals(120 * SEC, 4),
        span_tenths in 1u64..30,
    ) {
        let p = policy(Algorithm::TokenBucket, secs, limit, burst);
        let (admitted, _) = run(&p, &hits);
        let span = secs * SEC * span_tenths / 10;
        let bound = burst + (span as u128 * limit as u128).div_ceil(secs as u128 * SEC as u128) as u64;
        prop_assert!(densest(&admitted, span) <= bound);
    }

    /// An over-limit answer's wait is exact: one microsecond earlier the same hit is still over,
    /// at the wait it fits.
    #[test]
    fn waits_are_exact(
        algorithm in prop_oneof![Just(Algorithm::TokenBucket), Just(Algorithm::SlidingWindow)],
        limit in 1u64..20,
        extra in 0u64..10,
        secs in prop_oneof![Just(1u64), Just(3), Just(60)],
        hits in arrivals(30 * SEC, 3),
        cost in 1u64..4,
    ) {
        let burst = limit + extra;
        let p = policy(algorithm, secs, limit, burst);
        prop_assume!(cost <= p.capacity());
        let mut state = State::Empty;
        for &(at, c) in &hits {
            let s = step(&p, &state, at, c as i64);
            if !s.reading.over {
                state = s.next;
            }
        }
        let now = hits.last().map_or(T0, |&(t, _)| t);
        let probe = step(&p, &state, now, cost as i64);
        if probe.reading.over {
            let w = probe.reading.wait;
            prop_assert!(w > 0);
            prop_assert!(step(&p, &state, now + w - 1, cost as i64).reading.over);
            prop_assert!(!step(&p, &state, now + w, cost as i64).reading.over);
        }
    }

    /// Refunds never reject, never create a counter and never leave more than was there.
    #[test]
    fn refunds_are_safe(
        algorithm in prop_oneof![
            Just(Algorithm::FixedWindow),
            Just(Algorithm::SlidingWindow),
            Just(Algorithm::TokenBucket),
        ],
        limit in 1u64..20,
        hits in arrivals(30 * SEC, 3),
        refund in 1i64..40,
    ) {
        let p = policy(algorithm, 10, limit, limit);
        prop_assert_eq!(step(&p, &State::Empty, T0, -refund).next, State::Empty);
        let mut state = State::Empty;
        for &(at, c) in &hits {
            let s = step(&p, &state, at, c as i64);
            if !s.reading.over {
                state = s.next;
            }
        }
        let now = hits.last().map_or(T0, |&(t, _)| t);
        let r = step(&p, &state, now, -refund);
        prop_assert!(!r.reading.over);
        prop_assert!(r.reading.used_after <= r.reading.used_before);
    }
}

proptest! {
    /// What `Admission::Undo` relies on: a charge of `d` at `t`, then other charged hits, then a
    /// refund of `d` stepped at `t` leaves a window counter exactly as if the charge never
    /// happened, and a token bucket within the refill time of the refund window.
    #[test]
    fn a_refund_at_the_charge_instant_undoes_the_charge(
        alg in 0usize..3,
        limit in 1u64..400,
        history in arrivals(120 * SEC, 3),
        d in 1u64..4,
        others in prop::collection::vec((0u64..3 * SEC, 1u64..3), 0..6),
    ) {
        let algorithm = [Algorithm::FixedWindow, Algorithm::SlidingWindow, Algorithm::TokenBucket][alg];
        let p = policy(algorithm, 60, limit, limit);
        let mut state = State::Empty;
        for &(at, cost) in &history {
            let s = step(&p, &state, at, cost as i64);
            if !s.reading.over {
                state = s.next;
            }
        }
        let t = history.last().map_or(T0, |&(at, _)| at);
        let charged = step(&p, &state, t, d as i64);
        prop_assume!(!charged.reading.over);
        let (mut with, mut without) = (charged.next, state);
        let mut later = t;
        for &(gap, cost) in &others {
            later += gap;
            let a = step(&p, &with, later, cost as i64);
            let b = step(&p, &without, later, cost as i64);
            // Only histories where the charge changed no other decision are comparable.
            prop_assume!(!a.reading.over && !b.reading.over);
            with = a.next;
            without = b.next;
        }
        let undone = step(&p, &with, t, -(d as i64)).next;
        let look = |s: &State| step(&p, s, later, 0).reading;
        if algorithm == Algorithm::TokenBucket {
            // The debt left at `later`. A bucket that would have sat full for a while between the
            // charge and the undo refilled the charge meanwhile instead of idling: the undo can
            // leave up to that much time of refill extra (bounded by `later - t`, the refund
            // window), never less than the truth beyond rounding (1 µs per step).
            let debt = |s: &State| match s {
                State::Tat(at) => at.saturating_sub(later),
                _ => 0,
            };
            let rounding = 1 + others.len() as u64;
            prop_assert!(debt(&undone) <= debt(&without) + rounding);
            prop_assert!(debt(&undone) + (later - t) + rounding >= debt(&without));
        } else {
            prop_assert_eq!(look(&undone).used_before, look(&without).used_before);
        }
    }
}
