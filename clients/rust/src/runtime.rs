//! What the retry loop needs from the outside world, injected so tests decide time and chance:
//! a [`Sleeper`] to wait, a [`Clock`] for the retry budget, a [`Jitter`] source.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Waits.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, d: Duration) -> Sleep<'_>;
}

/// A monotonic clock: time since some fixed start.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;

    /// The wall clock, since the Unix epoch: for a `Retry-After` given as a date.
    fn epoch(&self) -> Duration {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// Chance: a uniformly drawn duration in `[0, upto]`.
pub trait Jitter: Send + Sync {
    fn uniform(&self, upto: Duration) -> Duration;
}

/// `tokio::time::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// `Instant::now()` since the clock was made.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// SplitMix64 seeded from the process's random hasher keys: good enough to decorrelate clients,
/// with no dependency.
#[derive(Debug)]
pub struct RandomJitter(AtomicU64);

impl Default for RandomJitter {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self(AtomicU64::new(h.finish()))
    }
}

impl RandomJitter {
    pub fn seeded(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Jitter for RandomJitter {
    fn uniform(&self, upto: Duration) -> Duration {
        // 53 random bits as a fraction in [0, 1].
        let fraction = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        upto.mul_f64(fraction)
    }
}

/// A clock that moves only when something sleeps on it (or [`ManualClock::advance`] moves it),
/// recording every sleep: time without waiting, for tests and simulations of the retry loop,
/// pacing and the breaker. Its wall clock ([`Clock::epoch`]) is its start plus the time moved.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<Duration>,
    epoch_start: Duration,
    slept: std::sync::Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// Starting at 0, its wall clock at `epoch_start` (since the Unix epoch).
    pub fn at_epoch(epoch_start: Duration) -> Self {
        Self {
            now: std::sync::Mutex::default(),
            epoch_start,
            slept: std::sync::Mutex::default(),
        }
    }

    /// Moves the clock without recording a sleep.
    pub fn advance(&self, d: Duration) {
        *lock(&self.now) += d;
    }

    /// Every sleep so far, in order.
    pub fn slept(&self) -> Vec<Duration> {
        lock(&self.slept).clone()
    }
}

impl Default for ManualClock {
    /// Its wall clock starts at the system's.
    fn default() -> Self {
        Self::at_epoch(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *lock(&self.now)
    }

    fn epoch(&self) -> Duration {
        self.epoch_start + self.now()
    }
}

impl Sleeper for ManualClock {
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        *lock(&self.now) += d;
        lock(&self.slept).push(d);
        Box::pin(std::future::ready(()))
    }
}

/// Jitter that always draws the same fraction of its bound (0.5: half of it), so waits are exact.
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn uniform(&self, upto: Duration) -> Duration {
        upto.mul_f64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let j = RandomJitter::seeded(7);
        let upto = Duration::from_millis(1000);
        let draws: Vec<Duration> = (0..1000).map(|_| j.uniform(upto)).collect();
        assert!(draws.iter().all(|d| *d <= upto));
        let low = draws.iter().filter(|d| **d < upto / 2).count();
        assert!((400..600).contains(&low), "{low} of 1000 below the middle");
    }
}
