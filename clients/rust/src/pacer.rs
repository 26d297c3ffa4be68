//! Pacing: the client spaces its own requests so that a well-behaved app rarely sees a 429
//! (`clients/behaviour.md` §3). It learns the limit and window from the rate-limit headers,
//! waits for a spent window's reset, holds every request after a refusal's `Retry-After`, slows
//! down (×`decrease`) on each refusal and speeds up again by `increase` per window that passes.

use std::sync::Mutex;
use std::time::Duration;

use crate::rate_headers::RateView;

/// Pacing settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacerSettings {
    /// The share of the advertised rate to use (0.9: a tenth below the limit).
    pub safety: f64,
    /// The slowest the client slows itself, as a share of the rate.
    pub min_factor: f64,
    /// The share kept after a refusal.
    pub decrease: f64,
    /// Added back per window that passes without a refusal.
    pub increase: f64,
}

impl Default for PacerSettings {
    fn default() -> Self {
        Self {
            safety: 0.9,
            min_factor: 0.1,
            decrease: 0.5,
            increase: 0.1,
        }
    }
}

/// A local token bucket of one token, refilled at the learned rate. Times are the client's
/// clock ([`crate::Clock`]). Shared by every request of a client (it locks).
#[derive(Debug, Default)]
pub struct Pacer {
    settings: PacerSettings,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct State {
    limit: Option<u64>,
    window_ms: Option<f64>,
    remaining: Option<i64>,
    reset_at: Option<f64>,
    hold_until: f64,
    next_at: f64,
    factor: f64,
    factor_since: f64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            limit: None,
            window_ms: None,
            remaining: None,
            reset_at: None,
            hold_until: 0.0,
            next_at: 0.0,
            factor: 1.0,
            factor_since: 0.0,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Pacer {
    pub fn new(settings: PacerSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
        }
    }

    /// Learns from an answer's rate-limit headers.
    pub fn observe(&self, view: &RateView, now: Duration) {
        let now = ms(now);
        let mut s = self.lock();
        if let Some(w) = view.window_s {
            s.window_ms = Some(w as f64 * 1000.0);
        } else if let Some(r) = view.reset_s.filter(|r| *r > 0) {
            s.window_ms = Some(s.window_ms.unwrap_or(0.0).max(r as f64 * 1000.0));
        }
        if view.limit.is_some() {
            s.limit = view.limit;
        }
        if let (Some(r), Some(t)) = (view.remaining, view.reset_s) {
            s.remaining = Some(i64::try_from(r).unwrap_or(i64::MAX));
            s.reset_at = Some(now + t as f64 * 1000.0);
        }
    }

    /// A throttling refusal: hold every request until `retry_after` has passed, and slow down.
    pub fn refused(&self, retry_after: Option<Duration>, now: Duration) {
        let now = ms(now);
        let mut s = self.lock();
        if let Some(wait) = retry_after {
            s.hold_until = s.hold_until.max(now + ms(wait));
        }
        s.factor = (s.factor * self.settings.decrease).max(self.settings.min_factor);
        s.factor_since = now;
    }

    /// Takes the next slot: how long to wait before sending.
    pub fn reserve(&self, now: Duration) -> Duration {
        let mut s = self.lock();
        let wait = self.schedule(&mut s, ms(now));
        Duration::from_secs_f64(wait / 1000.0)
    }

    /// The wait [`Pacer::reserve`] would give now, taking nothing.
    pub fn peek(&self, now: Duration) -> Duration {
        let mut s = *self.lock();
        Duration::from_secs_f64(self.schedule(&mut s, ms(now)) / 1000.0)
    }

    fn schedule(&self, s: &mut State, now: f64) -> f64 {
        let mut t = now.max(s.hold_until);
        if let (Some(remaining), Some(reset_at)) = (s.remaining, s.reset_at) {
            if reset_at <= t {
                (s.remaining, s.reset_at) = (None, None);
            } else if remaining <= 0 {
                t = reset_at;
                (s.remaining, s.reset_at) = (None, None);
            }
        }
        t = t.max(s.next_at);
        s.next_at = t + self.interval(s, now);
        if let Some(r) = &mut s.remaining {
            *r -= 1;
        }
        t - now
    }

    fn interval(&self, s: &mut State, now: f64) -> f64 {
        let (Some(limit), Some(window)) = (s.limit.filter(|l| *l > 0), s.window_ms) else {
            return 0.0;
        };
        if s.factor < 1.0 {
            let n = ((now - s.factor_since) / window).floor();
            if n > 0.0 {
                s.factor = (s.factor + self.settings.increase * n).min(1.0);
                s.factor_since += n * window;
            }
        }
        window / (limit as f64 * self.settings.safety * s.factor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
