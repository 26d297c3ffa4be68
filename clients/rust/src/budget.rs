//! A retry budget: retries may be at most a fraction of the requests made, plus a small floor per
//! second. Backing off spreads one client's retries in time; the budget bounds how many a whole
//! fleet makes when the service says "later" to everyone at once, so retries never multiply the
//! load that caused the refusals.

use std::sync::Mutex;
use std::time::Duration;

/// Shared by every client of one process (hand out clones of an `Arc`).
#[derive(Debug)]
pub struct RetryBudget {
    /// Retry tokens earned per request, in thousandths of a retry (integers, so that ten
    /// requests at 0.1 earn exactly one retry).
    per_request: u64,
    /// Thousandths earned per second whatever the traffic, so a quiet client can still retry.
    per_second: u64,
    /// Most thousandths kept, so a long quiet spell does not save up a storm.
    max: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    milli: u64,
    /// Clock reading of the last refill.
    at: Duration,
}

const ONE: u64 = 1000;

fn milli(x: f64) -> u64 {
    (x.max(0.0) * ONE as f64).round() as u64
}

impl RetryBudget {
    /// `ratio` of requests may be retried (0.1 = one retry per ten requests), plus `per_second`
    /// retries a second; at most `max` saved up. Starts full. Resolution: a thousandth.
    pub fn new(ratio: f64, per_second: f64, max: f64) -> Self {
        let max = milli(max);
        Self {
            per_request: milli(ratio),
            per_second: milli(per_second),
            max,
            state: Mutex::new(State {
                milli: max,
                at: Duration::ZERO,
            }),
        }
    }

    /// A new request was made at `now`.
    pub fn deposit(&self, now: Duration) {
        let mut s = self.lock();
        self.refill(&mut s, now);
        s.milli = (s.milli + self.per_request).min(self.max);
    }

    /// Takes one retry from the budget at `now`; false when it is spent.
    pub fn withdraw(&self, now: Duration) -> bool {
        let mut s = self.lock();
        self.refill(&mut s, now);
        if s.milli >= ONE {
            s.milli -= ONE;
            true
        } else {
            false
        }
    }

    fn refill(&self, s: &mut State, now: Duration) {
        if now <= s.at {
            return;
        }
        if self.per_second == 0 {
            s.at = now;
            return;
        }
        let rate = u128::from(self.per_second);
        let earned = (now - s.at).as_micros() * rate / 1_000_000;
        s.milli = (s.milli + u64::try_from(earned).unwrap_or(u64::MAX)).min(self.max);
        // Time that has not earned a whole thousandth yet stays owed.
        let used = earned * 1_000_000 / rate;
        s.at += Duration::from_micros(u64::try_from(used).unwrap_or(u64::MAX));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for RetryBudget {
    /// One retry per five requests, one a second, at most ten saved up.
    fn default() -> Self {
        Self::new(0.2, 1.0, 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_by_requests_and_time() {
        let b = RetryBudget::new(0.25, 0.0, 2.0);
        let t = Duration::ZERO;
        assert!(b.withdraw(t) && b.withdraw(t), "starts full");
        assert!(!b.withdraw(t));
        for _ in 0..3 {
            b.deposit(t);
        }
        assert!(!b.withdraw(t), "0.75 of a retry");
        b.deposit(t);
        assert!(b.withdraw(t));

        let b = RetryBudget::new(0.0, 2.0, 3.0);
        assert!(b.withdraw(t) && b.withdraw(t) && b.withdraw(t));
        assert!(!b.withdraw(Duration::from_millis(400)), "0.8 earned");
        assert!(b.withdraw(Duration::from_millis(500)));
        // A long quiet spell saves up at most `max`.
        let later = Duration::from_secs(3600);
        assert!((0..3).all(|_| b.withdraw(later)));
        assert!(!b.withdraw(later));
    }
}
