//! A circuit breaker on consecutive transport failures (`clients/behaviour.md` §5): after
//! `threshold` calls in a row got no HTTP answer, calls fail at once for `open_for`, then one
//! trial call decides. Any HTTP answer, whatever its status, counts as the service being there.

use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The state's name, as the fixture and the other clients spell it.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Called with `(from, to)` on every change, for a UI or a log.
pub type OnChange = Box<dyn Fn(BreakerState, BreakerState) + Send + Sync>;

pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    on_change: Option<OnChange>,
    state: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    opened_at: Duration,
    trial_out: bool,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            on_change: None,
            state: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Duration::ZERO,
                trial_out: false,
            }),
        }
    }

    pub fn on_change(mut self, hook: OnChange) -> Self {
        self.on_change = Some(hook);
        self
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// Whether a call may go out now.
    pub fn allow(&self, now: Duration) -> bool {
        let mut s = self.lock();
        match s.state {
            BreakerState::Closed => true,
            BreakerState::Open if now >= s.opened_at + self.open_for => {
                s.trial_out = true;
                self.set(&mut s, BreakerState::HalfOpen);
                true
            }
            BreakerState::Open => false,
            BreakerState::HalfOpen => !s.trial_out,
        }
    }

    /// The call got an HTTP answer.
    pub fn success(&self, _now: Duration) {
        let mut s = self.lock();
        s.failures = 0;
        s.trial_out = false;
        if s.state != BreakerState::Closed {
            self.set(&mut s, BreakerState::Closed);
        }
    }

    /// The call got no HTTP answer.
    pub fn failure(&self, now: Duration) {
        let mut s = self.lock();
        match s.state {
            BreakerState::HalfOpen => {
                s.trial_out = false;
                s.opened_at = now;
                self.set(&mut s, BreakerState::Open);
            }
            BreakerState::Closed => {
                s.failures += 1;
                if s.failures >= self.threshold {
                    s.opened_at = now;
                    self.set(&mut s, BreakerState::Open);
                }
            }
            BreakerState::Open => {}
        }
    }

    fn set(&self, s: &mut Inner, to: BreakerState) {
        let from = std::mem::replace(&mut s.state, to);
        if let Some(hook) = &self.on_change {
            hook(from, to);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(5))
    }
}
