//! A bounded work queue that releases items at the paced rate, for batch jobs
//! (`clients/behaviour.md` §4): `push` refuses when full, an item whose deadline would pass
//! before its release is dropped and reported, and the rest come out oldest first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::pacer::Pacer;
use crate::runtime::{Clock, Sleeper};

/// `push` found the queue full; the item is handed back.
#[derive(Debug, thiserror::Error)]
#[error("the work queue is full")]
pub struct QueueFull<T>(pub T);

/// What [`WorkQueue::take`] gives.
#[derive(Debug, PartialEq)]
pub struct Taken<T> {
    /// The next item and how long to wait before working on it, if any item is left.
    pub item: Option<(T, Duration)>,
    /// Items dropped because their deadline would pass before their turn.
    pub expired: Vec<T>,
}

pub struct WorkQueue<T> {
    pacer: Arc<Pacer>,
    max_depth: usize,
    items: Mutex<VecDeque<(T, Option<Duration>)>>,
    pushed: tokio::sync::Notify,
}

impl<T> WorkQueue<T> {
    pub fn new(pacer: Arc<Pacer>, max_depth: usize) -> Self {
        Self {
            pacer,
            max_depth,
            items: Mutex::new(VecDeque::new()),
            pushed: tokio::sync::Notify::new(),
        }
    }

    /// Queues an item, to be worked on by `deadline_at` (on the client's clock) if given.
    pub fn push(&self, item: T, deadline_at: Option<Duration>) -> Result<(), QueueFull<T>> {
        let mut items = self.lock();
        if items.len() >= self.max_depth {
            return Err(QueueFull(item));
        }
        items.push_back((item, deadline_at));
        drop(items);
        self.pushed.notify_one();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next item at `now` and its wait, taking its pacing slot; drops late items.
    pub fn take(&self, now: Duration) -> Taken<T> {
        let mut items = self.lock();
        let mut expired = Vec::new();
        while let Some((_, deadline)) = items.front() {
            let release = now + self.pacer.peek(now);
            if deadline.is_some_and(|d| d < release) {
                if let Some((late, _)) = items.pop_front() {
                    expired.push(late);
                }
                continue;
            }
            let wait = self.pacer.reserve(now);
            let item = items.pop_front().map(|(item, _)| (item, wait));
            return Taken { item, expired };
        }
        Taken {
            item: None,
            expired,
        }
    }

    /// Waits for an item and for its turn, then returns it; late items go to `on_expired`.
    pub async fn pop(
        &self,
        clock: &dyn Clock,
        sleeper: &dyn Sleeper,
        mut on_expired: impl FnMut(T),
    ) -> T {
        loop {
            let notified = self.pushed.notified();
            let taken = self.take(clock.now());
            taken.expired.into_iter().for_each(&mut on_expired);
            if let Some((item, wait)) = taken.item {
                if !wait.is_zero() {
                    sleeper.sleep(wait).await;
                }
                return item;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(T, Option<Duration>)>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}
