//! The Redis stream sink, for consumers that prefer pulling: each event becomes one entry
//! `XADD key MAXLEN ~ max_len * id <id> kind <kind> event <json>` on the counters' own Redis
//! (and connections: [`RedisStore::append_to_stream`]). Consumers read it with `XREAD` or a
//! consumer group; the stream keeps about the last `max_len` events.
//!
//! One task per stream, in order. A failed `XADD` is tried again ([`ATTEMPTS`] in all, with the
//! webhooks' back-off) while the failure looks transient; Redis being down long enough to open the
//! breaker loses the events of that time (the breaker's own events reach the webhooks).

use std::sync::Arc;

use tokio::sync::mpsc;

use super::dispatch::{Delivery, SinkCounters};
use super::webhook::backoff;
use crate::config::notifications::RedisStream;
use crate::storage::backend::redis::RedisStore;

/// Attempts per event, the first included.
pub const ATTEMPTS: u32 = 3;

/// Starts the sink's task; returns its queue.
pub(super) fn start(
    spec: RedisStream,
    redis: RedisStore,
    label: String,
    counters: SinkCounters,
) -> mpsc::Sender<Arc<Delivery>> {
    // Redis answers in well under a millisecond; this absorbs a burst or a short stall.
    let (tx, rx) = mpsc::channel(crate::config::notifications::DEFAULT_QUEUE_SIZE as usize);
    tokio::spawn(run(spec, redis, label, rx, counters));
    tx
}

async fn run(
    spec: RedisStream,
    redis: RedisStore,
    label: String,
    mut queue: mpsc::Receiver<Arc<Delivery>>,
    counters: SinkCounters,
) {
    let mut failing = false;
    while let Some(d) = queue.recv().await {
        let fields: [(&str, &[u8]); 3] = [
            ("id", d.id.as_bytes()),
            ("kind", d.kind.as_str().as_bytes()),
            ("event", &d.body),
        ];
        let mut attempt = 1;
        let result = loop {
            match redis
                .append_to_stream(&spec.key, spec.max_len, &fields)
                .await
            {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff(attempt, 0.5)).await;
                    attempt += 1;
                }
                result => break result,
            }
        };
        match result {
            Ok(_) => {
                counters.delivered.inc();
                if failing {
                    tracing::info!(sink = %label, "notification stream written again");
                    failing = false;
                }
            }
            Err(e) => {
                counters.failed.inc();
                if !failing {
                    tracing::warn!(sink = %label, event = %d.id, error = %e, "cannot add a notification to the Redis stream; the event is dropped");
                    failing = true;
                }
            }
        }
    }
}
