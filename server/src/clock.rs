//! Time as the limiter sees it: seconds since the Unix epoch, behind a trait so tests drive windows
//! with a manual clock instead of sleeping.
//!
//! Boundary: imports nothing else of Sluice's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Time since the Unix epoch. Windows are aligned to the epoch, like the reference service's.
    fn now(&self) -> Duration;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    pub fn new(since_epoch: Duration) -> Self {
        Self {
            nanos: AtomicU64::new(since_epoch.as_nanos() as u64),
        }
    }

    pub fn set(&self, since_epoch: Duration) {
        self.nanos
            .store(since_epoch.as_nanos() as u64, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl<C: Clock> Clock for std::sync::Arc<C> {
    fn now(&self) -> Duration {
        (**self).now()
    }
}
