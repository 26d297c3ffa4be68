//! A circuit breaker for the shared store, so a store that hangs costs one time budget, not one
//! per request.
//!
//! ```text
//!            consecutive failures ≥ N, or ≥ 50 % of ≥ 20 calls in the last 10 s failed
//!   Closed ─────────────────────────────────────────────────────────────────────────▶ Open
//!     ▲                                                                                │
//!     │ `probes` trial calls in a row succeeded                    after `open_for`     │
//!     └──────────────────────────── HalfOpen ◀─────────────────────────────────────────┘
//!                                      │  a trial call failed: Open again, for twice as
//!                                      └─ long (up to `max_open_for`)
//! ```
//!
//! **Closed**: every call goes to the store; the hot path is a few relaxed atomics, no lock.
//! **Open**: no call goes to the store; the failure policy answers at memory speed.
//! **HalfOpen**: one trial call at a time goes to the store, and checks are answered by the failure
//! policy meanwhile. The trials are the store's own health probes, not checks
//! (`failover::recovery`): so the breaker closes whether or not traffic arrives (a replica taken
//! out of its Service for failing readiness gets none), and nothing is decided against the
//! store's counts before the hits admitted during the outage are handed over.
//!
//! Time is passed in by the caller (`Instant`), so tests drive the breaker without sleeping.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// When to open and how long to stay open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// The share of failed calls in [`RATE_WINDOW`] that opens it, once there were at least
    /// [`RATE_MIN_CALLS`] calls.
    pub failure_rate: f64,
    /// How long the first opening lasts before a trial call.
    pub open_for: Duration,
    /// The longest an opening lasts (each failed trial doubles it up to this).
    pub max_open_for: Duration,
    /// Trial calls that must succeed in a row to close again.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            open_for: Duration::from_millis(100),
            // Well under the 2 s in which decisions must be normal again once the store is back.
            max_open_for: Duration::from_millis(800),
            probes: 3,
        }
    }
}

/// The failure-rate window: ten one-second buckets.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);
/// Calls the failure-rate rule needs before it judges.
pub const RATE_MIN_CALLS: u64 = 20;
const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead; report the result with [`Breaker::record`].
    Call,
    /// Go ahead as the half-open trial call; report the result with [`Breaker::record`].
    Trial,
    /// Do not call the store.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransitionLabels {
    to: &'static str,
}

pub struct Breaker {
    config: BreakerConfig,
    state: AtomicU8,
    consecutive: AtomicU32,
    /// Per one-second bucket: `second << 40 | calls << 20 | failures`, reset when the second
    /// moves on, so the window needs no lock.
    buckets: [AtomicU64; BUCKETS],
    epoch: Instant,
    transitions: Mutex<Transitions>,
    state_gauge: Gauge,
    transition_count: Family<TransitionLabels, Counter>,
}

struct Transitions {
    /// When the current opening ends.
    open_until: Instant,
    open_for: Duration,
    trial_in_flight: bool,
    /// When the trial in flight started: a trial whose caller went away (a cancelled request)
    /// never reports, so after `max_open_for` another one may start.
    trial_started: Instant,
    trial_successes: u32,
    /// Called on every change of state, under this lock: keep them cheap.
    listeners: Vec<Box<dyn Fn(BreakerState) + Send + Sync>>,
}

const FIELD: u64 = (1 << 20) - 1;

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        let epoch = Instant::now();
        Self {
            config,
            state: AtomicU8::new(0),
            consecutive: AtomicU32::new(0),
            buckets: Default::default(),
            epoch,
            transitions: Mutex::new(Transitions {
                open_until: epoch,
                open_for: config.open_for,
                trial_in_flight: false,
                trial_started: epoch,
                trial_successes: 0,
                listeners: Vec::new(),
            }),
            state_gauge: Gauge::default(),
            transition_count: Family::default(),
        }
    }

    /// Registers `breaker_state` and `breaker_transitions`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "breaker_state",
            "State of the shared store's circuit breaker: 0 closed, 1 open, 2 half-open",
            self.state_gauge.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Changes of the shared store's circuit breaker, by the state entered",
            self.transition_count.clone(),
        );
    }

    /// Adds `listener`, called with the new state on every change (the reconciler waits for
    /// `Closed`; notifications tell operators). It runs under the breaker's lock, so it must not
    /// block: hand the state on, nothing more.
    pub fn on_change(&self, listener: impl Fn(BreakerState) + Send + Sync + 'static) {
        self.transitions.lock().listeners.push(Box::new(listener));
    }

    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Whether a check may call the store: only while closed. Trials are the probes' business.
    pub fn permit_call(&self) -> Permit {
        if self.state() == BreakerState::Closed {
            Permit::Call
        } else {
            Permit::Refused
        }
    }

    /// Whether one more successful trial closes the breaker.
    pub fn trial_would_close(&self) -> bool {
        self.state() == BreakerState::HalfOpen
            && self.transitions.lock().trial_successes + 1 >= self.config.probes
    }

    /// Whether a trial may go to the store now (the probe loop asks).
    pub fn permit(&self, now: Instant) -> Permit {
        if self.state() == BreakerState::Closed {
            return Permit::Call;
        }
        let mut t = self.transitions.lock();
        match self.state() {
            BreakerState::Closed => Permit::Call,
            BreakerState::Open if now < t.open_until => Permit::Refused,
            BreakerState::Open => {
                t.trial_in_flight = true;
                t.trial_started = now;
                t.trial_successes = 0;
                self.enter(&t, BreakerState::HalfOpen);
                Permit::Trial
            }
            BreakerState::HalfOpen
                if t.trial_in_flight && now < t.trial_started + self.config.max_open_for =>
            {
                Permit::Refused
            }
            BreakerState::HalfOpen => {
                t.trial_in_flight = true;
                t.trial_started = now;
                Permit::Trial
            }
        }
    }

    /// The store answered a health probe while the breaker is open: allow a trial now instead
    /// of waiting out the opening.
    pub fn probe_succeeded(&self, now: Instant) {
        if self.state() != BreakerState::Open {
            return;
        }
        let mut t = self.transitions.lock();
        if self.state() == BreakerState::Open && t.open_until > now {
            t.open_until = now;
        }
    }

    /// Reports how a permitted call went.
    pub fn record(&self, now: Instant, permit: Permit, ok: bool) {
        match permit {
            Permit::Refused => {}
            Permit::Call => self.record_call(now, ok),
            Permit::Trial => {
                let mut t = self.transitions.lock();
                t.trial_in_flight = false;
                if self.state() != BreakerState::HalfOpen {
                    return;
                }
                if ok {
                    t.trial_successes += 1;
                    if t.trial_successes >= self.config.probes {
                        t.open_for = self.config.open_for;
                        self.consecutive.store(0, Ordering::Relaxed);
                        for b in &self.buckets {
                            b.store(0, Ordering::Relaxed);
                        }
                        self.enter(&t, BreakerState::Closed);
                    }
                } else {
                    t.open_for = (t.open_for * 2).min(self.config.max_open_for);
                    t.open_until = now + t.open_for;
                    self.enter(&t, BreakerState::Open);
                }
            }
        }
    }

    fn record_call(&self, now: Instant, ok: bool) {
        let second = now.saturating_duration_since(self.epoch).as_secs();
        let bucket = &self.buckets[(second % BUCKETS as u64) as usize];
        let add = 1 << 20 | u64::from(!ok);
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let next = if current >> 40 == second {
                current + add
            } else {
                second << 40 | add
            };
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(seen) => current = seen,
            }
        }
        if ok {
            // Only write when there is something to reset: the common case reads one line.
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            return;
        }
        let in_a_row = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if in_a_row >= self.config.consecutive_failures || self.rate_exceeded(second) {
            let mut t = self.transitions.lock();
            if self.state() == BreakerState::Closed {
                t.open_for = self.config.open_for;
                t.open_until = now + t.open_for;
                self.enter(&t, BreakerState::Open);
            }
        }
    }

    fn rate_exceeded(&self, second: u64) -> bool {
        let (mut calls, mut failures) = (0u64, 0u64);
        for b in &self.buckets {
            let v = b.load(Ordering::Relaxed);
            if second.saturating_sub(v >> 40) < BUCKETS as u64 {
                calls += (v >> 20) & FIELD;
                failures += v & FIELD;
            }
        }
        calls >= RATE_MIN_CALLS && failures as f64 >= self.config.failure_rate * calls as f64
    }

    fn enter(&self, t: &Transitions, state: BreakerState) {
        self.state.store(state as u8, Ordering::Release);
        self.state_gauge.set(i64::from(state as u8));
        self.transition_count
            .get_or_create(&TransitionLabels { to: state.as_str() })
            .inc();
        match state {
            BreakerState::Open => tracing::warn!(
                open_for = ?t.open_for,
                "counter store failing: circuit breaker open, the failure policy decides"
            ),
            BreakerState::HalfOpen => tracing::debug!("circuit breaker half-open: trial call"),
            BreakerState::Closed => {
                tracing::info!("counter store answering: circuit breaker closed")
            }
        }
        for listener in &t.listeners {
            listener(state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_and_closes() {
        let b = Breaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.permit(t0), Permit::Call);
            b.record(t0, Permit::Call, false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(t0, Permit::Call, true);
        for _ in 0..5 {
            b.record(t0, Permit::Call, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.permit(t0 + ms(50)), Permit::Refused);
        // After `open_for`, one trial at a time.
        let at = t0 + ms(100);
        assert_eq!(b.permit(at), Permit::Trial);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.permit(at), Permit::Refused);
        b.record(at, Permit::Trial, true);
        for _ in 0..2 {
            assert_eq!(b.permit(at), Permit::Trial);
            b.record(at, Permit::Trial, true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.permit(at), Permit::Call);
    }

    #[test]
    fn a_successful_probe_ends_the_opening() {
        let b = Breaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            b.record(t0, Permit::Call, false);
        }
        assert_eq!(b.permit(t0 + ms(10)), Permit::Refused);
        b.probe_succeeded(t0 + ms(20));
        assert_eq!(b.permit(t0 + ms(20)), Permit::Trial);
    }

    #[test]
    fn a_trial_that_never_reports_does_not_wedge_the_breaker() {
        let b = Breaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..5 {
            b.record(t0, Permit::Call, false);
        }
        assert_eq!(b.permit(t0 + ms(100)), Permit::Trial);
        // Its caller went away.
        assert_eq!(b.permit(t0 + ms(500)), Permit::Refused);
        assert_eq!(b.permit(t0 + ms(900)), Permit::Trial);
    }

    #[test]
    fn a_failed_trial_reopens_for_longer_up_to_the_maximum() {
        let b = Breaker::new(BreakerConfig::default());
        let mut now = Instant::now();
        for _ in 0..5 {
            b.record(now, Permit::Call, false);
        }
        let mut waits = Vec::new();
        for _ in 0..6 {
            let mut waited = ms(0);
            while b.permit(now) == Permit::Refused {
                now += ms(10);
                waited += ms(10);
            }
            waits.push(waited.as_millis());
            b.record(now, Permit::Trial, false);
        }
        assert_eq!(waits, [100, 200, 400, 800, 800, 800]);
    }

    #[test]
    fn opens_on_failure_rate_without_a_run_of_failures() {
        let b = Breaker::new(BreakerConfig::default());
        let now = Instant::now();
        // Alternating: never 5 in a row, but half of the calls fail.
        for i in 0..RATE_MIN_CALLS {
            assert_eq!(b.state(), BreakerState::Closed, "call {i}");
            b.record(now, Permit::Call, i % 2 == 0);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn old_failures_leave_the_rate_window() {
        let b = Breaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for i in 0..RATE_MIN_CALLS - 1 {
            b.record(t0, Permit::Call, i % 2 == 0);
        }
        // Eleven seconds later the old calls no longer count: one more failure is not a rate.
        b.record(t0 + Duration::from_secs(11), Permit::Call, true);
        b.record(t0 + Duration::from_secs(11), Permit::Call, false);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn listeners_and_metrics_see_every_transition() {
        let b = Breaker::new(BreakerConfig {
            probes: 1,
            ..Default::default()
        });
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        b.on_change(move |s| log.lock().push(s));
        let now = Instant::now();
        for _ in 0..5 {
            b.record(now, Permit::Call, false);
        }
        let later = now + ms(100);
        assert_eq!(b.permit(later), Permit::Trial);
        b.record(later, Permit::Trial, true);
        assert_eq!(
            *seen.lock(),
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
        let mut registry = Registry::default();
        b.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("breaker_state 0"), "{text}");
        assert!(
            text.contains("breaker_transitions_total{to=\"open\"} 1"),
            "{text}"
        );
    }
}
