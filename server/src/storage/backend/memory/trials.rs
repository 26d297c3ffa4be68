//! When trial rules first saw each descriptor's values (`limiter::trial`), in process: a table
//! bounded by the store's `max_counters`. A full table first drops what expired; a key that still
//! finds no room is refused (an error), and the limiter enforces it: an adversary sending fresh
//! values cannot grow memory, nor buy a trial for each.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::MemoryStore;
use crate::algorithm::Micros;
use crate::storage::{FirstSeen, StoreError};

/// First-seen instants and expiries, by trial key.
#[derive(Default)]
pub(super) struct Trials(Mutex<HashMap<Vec<u8>, (Micros, Micros)>>);

impl MemoryStore {
    /// [`crate::storage::Store::first_seen`] without the future.
    pub fn first_seen_now(
        &self,
        key: &[u8],
        keep: Duration,
        create: bool,
    ) -> Result<FirstSeen, StoreError> {
        let now = self.now();
        let mut table = self.trials.0.lock();
        if let Some(&(first, expires)) = table.get(key)
            && expires > now
        {
            return Ok(FirstSeen {
                first,
                now,
                created: false,
            });
        }
        if !create {
            return Ok(FirstSeen {
                first: 0,
                now,
                created: false,
            });
        }
        let bound = self.shards.iter().map(|s| s.bound).sum::<usize>();
        if table.len() >= bound {
            table.retain(|_, &mut (_, expires)| expires > now);
            if table.len() >= bound {
                return Err(StoreError::Server(format!(
                    "the trial table holds {bound} values: no room for another"
                )));
            }
        }
        let expires = now.saturating_add(keep.as_micros() as Micros);
        table.insert(key.to_vec(), (now, expires));
        Ok(FirstSeen {
            first: now,
            now,
            created: true,
        })
    }
}
