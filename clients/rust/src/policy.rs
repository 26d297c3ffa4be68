//! When to retry and how long to wait: capped exponential back-off with full jitter, never
//! earlier than the server asked, never for a spent quota.

use std::time::Duration;

use crate::problem::{Kind, Problem};

/// Retry settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The back-off before the first retry; it doubles with each retry...
    pub base: Duration,
    /// ...up to this.
    pub cap: Duration,
    /// The longest wait worth making. A server asking for longer (a daily quota's reset) gets an
    /// immediate answer instead of a caller stuck in a sleep.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// Why the client stopped retrying and handed back a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The problem document's `kind` is `quota` (or the status is 402): spent until its window
    /// resets, so retrying in a loop would only burn requests.
    Quota,
    /// A status retrying cannot change (400, 403, 404, …).
    NotRetryable,
    /// `max_attempts` reached.
    Attempts,
    /// The shared retry budget is spent.
    Budget,
    /// The server (or pacing) asked for a longer wait than `max_wait`.
    WaitTooLong(Duration),
    /// The circuit breaker is open: nothing was sent.
    CircuitOpen,
}

impl Stop {
    /// The reason's name, as the fixture, the telemetry and the Python and TypeScript clients
    /// spell it.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Quota => "quota",
            Stop::NotRetryable => "not_retryable",
            Stop::Attempts => "attempts",
            Stop::Budget => "budget",
            Stop::WaitTooLong(_) => "wait_too_long",
            Stop::CircuitOpen => "circuit_open",
        }
    }
}

/// What an answer means for the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Retry after at least this long (the server's `Retry-After`, if it gave one).
    Retry(Option<Duration>),
    Stop(Stop),
}

/// Reads an answer: 2xx and 3xx are done; 429 and 503 (and 502, 504: a proxy's view of an
/// overloaded service) are retried unless the problem document says `quota`; 402 never is.
pub fn verdict(status: u16, retry_after: Option<Duration>, problem: Option<&Problem>) -> Verdict {
    if status < 400 {
        return Verdict::Done;
    }
    if status == 402 || problem.and_then(|p| p.kind) == Some(Kind::Quota) {
        return Verdict::Stop(Stop::Quota);
    }
    if !matches!(status, 429 | 502 | 503 | 504) {
        return Verdict::Stop(Stop::NotRetryable);
    }
    let from_problem = problem.and_then(|p| p.retry_after).map(Duration::from_secs);
    Verdict::Retry(retry_after.max(from_problem))
}

impl RetryPolicy {
    /// The exponential back-off bound before retry number `retry` (1 for the first retry):
    /// `min(cap, base × 2^(retry-1))`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The wait before retry number `retry`, given the server's minimum and a jitter draw in
    /// `[0, backoff]` ("full jitter"). With a `Retry-After` the jitter comes on top of it, so no
    /// client is early and a crowd told the same second does not return in the same instant.
    pub fn wait(&self, retry: u32, server: Option<Duration>, jitter: Duration) -> Duration {
        let jitter = jitter.min(self.backoff(retry));
        match server {
            Some(at_least) => at_least + jitter,
            None => jitter,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(kind: Kind, retry_after: u64) -> Problem {
        Problem {
            status: Some(429),
            title: None,
            detail: None,
            rule: None,
            retry_after: Some(retry_after),
            kind: Some(kind),
        }
    }

    #[test]
    fn verdicts() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(verdict(200, None, None), Verdict::Done);
        assert_eq!(verdict(429, s(3), None), Verdict::Retry(s(3)));
        assert_eq!(verdict(503, None, None), Verdict::Retry(None));
        // The later of the header and the document wins.
        let throttle = problem(Kind::Throttle, 5);
        assert_eq!(verdict(429, s(3), Some(&throttle)), Verdict::Retry(s(5)));
        let quota = problem(Kind::Quota, 5);
        assert_eq!(verdict(429, s(5), Some(&quota)), Verdict::Stop(Stop::Quota));
        assert_eq!(verdict(402, None, None), Verdict::Stop(Stop::Quota));
        assert_eq!(verdict(404, None, None), Verdict::Stop(Stop::NotRetryable));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        let ms = |r| p.backoff(r).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(40)],
            [100, 200, 400, 500, 500]
        );
        let full = Duration::from_secs(9);
        assert_eq!(p.wait(2, None, full), Duration::from_millis(200));
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(2)), Duration::from_millis(30)),
            Duration::from_millis(2030)
        );
    }
}
