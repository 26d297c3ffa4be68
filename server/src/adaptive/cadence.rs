//! When the adaptive controller and standing act, per rule: intervals aligned to the epoch
//! (interval `k` is `[k·I, (k+1)·I)` in wall-clock milliseconds, so replicas agree on them without
//! talking); at the first tick past a boundary, the interval that ended is handed to the fleet;
//! a settling delay later ([`settle`]), it is decided. Each happens once per interval on a
//! replica, whatever the ticks' timing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock::Clock;

/// How often the controllers look at the clock.
pub const TICK: Duration = Duration::from_millis(50);

/// How long after a boundary the interval is decided: a tenth of the interval, within 200 ms..2 s.
pub fn settle(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

#[derive(Clone, Copy)]
struct Progress {
    /// The interval last handed to the fleet.
    flushed: u64,
    /// The last interval decided (or passed to another replica).
    decided: u64,
}

/// What is due for one rule at a tick.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The interval that just ended: hand this replica's part of it to the fleet.
    pub flush: Option<u64>,
    /// The interval to decide now.
    pub decide: Option<u64>,
}

/// Each rule's progress on this replica (a rule first seen starts at the current interval).
#[derive(Default)]
pub struct Cadence {
    progress: Mutex<HashMap<Arc<str>, Progress>>,
}

impl Cadence {
    /// What is due at `now_ms` for `rule`, whose intervals last `interval`; each interval comes
    /// out once as `flush` and once as `decide`.
    pub fn due(&self, rule: &Arc<str>, interval: Duration, now_ms: u64) -> Due {
        let every = (interval.as_millis() as u64).max(1);
        let k = now_ms / every;
        let mut progress = self.progress.lock();
        let p = progress.entry(Arc::clone(rule)).or_insert(Progress {
            flushed: k,
            decided: k,
        });
        let mut due = Due::default();
        if k > p.flushed {
            p.flushed = k;
            due.flush = Some(k - 1);
        }
        if k > p.decided && now_ms >= k * every + settle(interval).as_millis() as u64 {
            p.decided = k;
            due.decide = Some(k - 1);
        }
        due
    }
}

/// Runs `tick` with the time of `clock` (ms since the epoch) every [`TICK`] until the task is
/// dropped; a tick that runs long delays the next rather than bunching them.
pub fn every_tick<F, Fut>(clock: Arc<dyn Clock>, mut tick: F) -> tokio::task::JoinHandle<()>
where
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            tick(clock.now().as_millis() as u64).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_interval_is_flushed_at_its_end_and_decided_after_the_settling_delay() {
        let c = Cadence::default();
        let rule: Arc<str> = Arc::from("d.r");
        let s = Duration::from_secs(1);
        assert_eq!(c.due(&rule, s, 10_050), Due::default());
        assert_eq!(c.due(&rule, s, 10_900), Due::default());
        assert_eq!(
            c.due(&rule, s, 11_010),
            Due {
                flush: Some(10),
                decide: None
            }
        );
        assert_eq!(c.due(&rule, s, 11_100), Due::default());
        assert_eq!(
            c.due(&rule, s, 11_200),
            Due {
                flush: None,
                decide: Some(10)
            }
        );
        assert_eq!(c.due(&rule, s, 11_300), Due::default());
        // A tick late past both: flushed and decided at once.
        assert_eq!(
            c.due(&rule, s, 12_500),
            Due {
                flush: Some(11),
                decide: Some(11)
            }
        );
    }
}
