//! Warnings a client can trigger at will (a refused connection, a refused admin token, a failed
//! `accept`), logged at most once per interval with a count of what was left out: a flood of
//! them must not become a flood of log lines, which costs CPU, disk and the operator's attention.
//!
//! Boundary: imports nothing else of Sluice's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// One kind of warning's throttle. Cheap to check from any thread.
#[derive(Debug)]
pub struct LogThrottle {
    interval_ms: u64,
    epoch: Instant,
    /// When the last line was let through, in ms since `epoch`, plus one (0: never).
    last: AtomicU64,
    /// Occurrences left out since then.
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            epoch: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this occurrence should be logged, `n` being how many were left out since
    /// the last line; `None` when it should be left out (and is counted).
    pub fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A warning through a [`LogThrottle`]: `warn_throttled!(throttle, field = value, "message")`
/// logs with `suppressed` = the occurrences left out since the last line.
#[macro_export]
macro_rules! warn_throttled {
    ($throttle:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $throttle.allow() {
            tracing::warn!(suppressed, $($rest)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_of_the_rest() {
        let t = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(t.allow(), Some(0));
        for _ in 0..500 {
            assert_eq!(t.allow(), None);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(t.allow(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.allow(), Some(501));
        assert_eq!(t.allow(), None);
    }
}
