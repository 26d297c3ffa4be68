//! Waking this replica's waiters: one [`Notify`] per pool key with waiters here, woken by
//! grants made here and by the store's feed of queues changed elsewhere (Redis pub/sub).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::storage::Store;

/// Waiters on this replica, by pool key, and what wakes them.
#[derive(Default)]
pub(in crate::limiter) struct Waiting {
    pools: Arc<Pools>,
    /// Set once the store's change feed is followed.
    following: OnceLock<()>,
}

impl Waiting {
    /// The waker of `key`'s waiters, for as long as the registration lives.
    pub(super) fn register(&self, key: &[u8]) -> Registration {
        let mut pools = self.pools.lock();
        let entry = pools
            .entry(key.to_vec())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Registration {
            notify: Arc::clone(&entry.0),
            pools: Arc::downgrade(&self.pools),
            key: key.to_vec(),
        }
    }

    /// Wakes the waiters of `key` on this replica, to poll their tickets.
    pub(in crate::limiter) fn wake(&self, key: &[u8]) {
        wake(&self.pools, key);
    }

    /// Follows the store's feed of queues changed by other replicas, once.
    pub(super) fn follow<S: Store>(&self, store: &S) {
        self.following.get_or_init(|| {
            let Some(mut changes) = store.queue_changes() else {
                return;
            };
            let pools = Arc::downgrade(&self.pools);
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    let key = changes.recv().await;
                    let Some(pools) = pools.upgrade() else {
                        return;
                    };
                    match key {
                        Ok(key) => wake(&pools, &key),
                        // Messages were lost: every waiter looks again.
                        Err(RecvError::Lagged(_)) => {
                            for (notify, _) in pools.lock().values() {
                                notify.notify_waiters();
                            }
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            });
        });
    }
}

/// Per pool key with waiters here: their waker and how many they are.
type Pools = Mutex<HashMap<Vec<u8>, (Arc<Notify>, usize)>>;

fn wake(pools: &Pools, key: &[u8]) {
    if let Some((notify, _)) = pools.lock().get(key) {
        notify.notify_waiters();
    }
}

pub(super) struct Registration {
    pub(super) notify: Arc<Notify>,
    pools: Weak<Pools>,
    key: Vec<u8>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let Some(pools) = self.pools.upgrade() else {
            return;
        };
        let mut pools = pools.lock();
        if let Some(entry) = pools.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                pools.remove(&self.key);
            }
        }
    }
}
