//! Cross-request batching: requests that arrive while Redis is busy go together as one `EVALSHA`.
//!
//! **No timer by default.** At most `max_in_flight` calls are on their way to Redis at once (the
//! pool size, so about one per connection). A request that finds a free place is sent at once,
//! alone: at low load nothing waits and latency is what one call costs. A request that finds every
//! place taken queues; when a call returns, the queue (up to [`MAX_REQUESTS`]) leaves as the next
//! call in its place. The busier Redis is, the more requests share a call, so the script's fixed
//! costs (`EVALSHA` itself, its `TIME`, the reply) are paid once per batch rather than once per
//! request: Redis CPU per decision falls as load rises by design.
//!
//! **An optional window** ([`Pipeline`], the reference's `REDIS_PIPELINE_WINDOW` and
//! `REDIS_PIPELINE_LIMIT`). Below saturation requests arrive one at a time, each finds a free
//! place and goes alone, and Redis pays a whole call (its wake-up, `EVALSHA`, `TIME`, the reply)
//! per decision: three to five times the busy figure. With a window, a request that finds a free
//! place opens a batch instead and waits up to the window for company; requests arriving
//! meanwhile join it, and it leaves when the window ends or `limit` requests wait, whichever
//! comes first. It trades up to the window in latency for Redis CPU. tokio's timer counts whole
//! milliseconds, so a window ends at the first millisecond tick after it is due (a 150 µs window
//! waits 0.15 to about 1 ms).
//!
//! **Same decisions.** The script decides a call's requests in arrival order, each on its own
//! exactly as if it were its own call: it reads its counters (seeing the earlier requests'
//! writes), judges itself all-or-nothing and writes before the next request is read. Every
//! request of a call is stepped at one Redis `TIME`, which sequential calls could also have read.
//!
//! **Failures.** A call that fails (a network error, a timeout, a script error) fails each of its
//! requests with that error, and only them; the failure policy then decides each one. Like a
//! script error today, writes the script made before the error stay. A request's wait, queued
//! and sent, is bounded by the store's timeout; a request whose caller stopped waiting before
//! its call left is not sent (it is not charged).
//!
//! On a Redis Cluster there is one batcher per primary node ([`super::nodes`]): a call carries
//! requests of every slot the node serves, its keys in `ARGV` (see [`super::scripts`]), sent to
//! that node by address. A request its node no longer serves (a reshard or failover in between)
//! comes back unwritten and goes again through the Cluster's own routing. A second, unbatched
//! batcher sends those, and any request while the slot map is unknown, at once and alone.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Arg, Cmd, Script, ToRedisArgs};
use tokio::sync::{Notify, oneshot};

use super::bounded;
use super::links::Links;
use crate::storage::StoreError;

/// Requests in one call at most: bounds the script's run (Redis serves nothing else meanwhile)
/// and the reply's size.
pub const MAX_REQUESTS: usize = 64;

/// How long a request that could be sent at once waits for others to share its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipeline {
    /// Zero: no waiting, every request that finds a free place goes at once.
    pub window: Duration,
    /// The batch leaves as soon as this many requests wait (1 to [`MAX_REQUESTS`]).
    pub limit: usize,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            limit: MAX_REQUESTS,
        }
    }
}

/// One request's share of a call: its keys, and its arguments (see [`super::scripts`]).
#[derive(Default)]
pub struct Part {
    keys: Cmd,
    args: Cmd,
}

impl Part {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.arg(key);
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.arg(arg);
        self
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        simple(&self.keys)
    }

    pub(super) fn args(&self) -> impl Iterator<Item = &[u8]> {
        simple(&self.args)
    }
}

fn simple(cmd: &Cmd) -> impl Iterator<Item = &[u8]> {
    cmd.args_iter().filter_map(|a| match a {
        Arg::Simple(a) => Some(a),
        _ => None,
    })
}

/// Script calls sent, and the requests they carried: their ratio is the batch depth.
#[derive(Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub requests: AtomicU64,
}

/// Where a batcher's calls go.
pub enum Target {
    /// `EVALSHA` over [`Links`] (a single Redis, or a Cluster routing by the declared keys).
    Links,
    /// One Cluster primary by address, with the node script.
    Node { host: String, port: u16 },
}

/// The script's reply to one request.
pub type Reply = Result<Vec<i64>, StoreError>;

struct Queued {
    part: Part,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    /// A window is open: its batch holds a place and waits; newcomers join its queue.
    gathering: bool,
    queue: VecDeque<Queued>,
}

/// Sends requests to one Redis (a single primary, the primary Sentinel names, or a Cluster node).
pub struct Batcher {
    links: Arc<Links>,
    script: Script,
    timeout: Duration,
    max_in_flight: usize,
    pipeline: Pipeline,
    state: Mutex<State>,
    /// Wakes an open window's batch when `pipeline.limit` requests wait.
    full: Notify,
    target: Target,
    pub stats: Arc<Stats>,
}

impl Batcher {
    /// `max_in_flight` calls at most on their way at once; `usize::MAX` never batches (and then
    /// `pipeline` must have no window).
    pub fn new(
        links: Arc<Links>,
        script: Script,
        timeout: Duration,
        (max_in_flight, pipeline): (usize, Pipeline),
        target: Target,
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        Arc::new(Self {
            links,
            script,
            timeout,
            max_in_flight: max_in_flight.max(1),
            pipeline: Pipeline {
                window: pipeline.window,
                limit: pipeline.limit.clamp(1, MAX_REQUESTS),
            },
            state: Mutex::default(),
            full: Notify::new(),
            target,
            stats,
        })
    }

    /// Runs `part`: at once if a place is free (after the window, if there is one), else with the
    /// next call that leaves.
    pub async fn call(self: &Arc<Self>, part: Part) -> Reply {
        let (queued, opened) = {
            let mut state = self.state.lock();
            if !state.gathering && state.in_flight < self.max_in_flight {
                state.in_flight += 1;
                if self.pipeline.window.is_zero() {
                    (Err(part), false)
                } else {
                    state.gathering = true;
                    (Ok(self.enqueue(&mut state, part)), true)
                }
            } else {
                (Ok(self.enqueue(&mut state, part)), false)
            }
        };
        if opened {
            tokio::spawn(Arc::clone(self).gather());
        }
        match queued {
            Err(part) => {
                // Whether this call finishes or its caller drops it, the place passes on.
                let _place = Place(Arc::clone(self));
                let mut replies = self.send(&[&part]).await?;
                match (replies.pop(), replies.is_empty()) {
                    (Some(reply), true) => Ok(reply),
                    _ => Err(short_reply()),
                }
            }
            Ok(wait) => match tokio::time::timeout(self.timeout, wait).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(StoreError::Unreachable(
                    "the batched call was dropped".into(),
                )),
                Err(_) => Err(StoreError::Timeout(self.timeout)),
            },
        }
    }

    fn enqueue(&self, state: &mut State, part: Part) -> oneshot::Receiver<Reply> {
        let (reply, wait) = oneshot::channel();
        state.queue.push_back(Queued { part, reply });
        if state.gathering && state.queue.len() >= self.pipeline.limit {
            self.full.notify_one();
        }
        wait
    }

    /// An open window's batch: waits out the window (or until `limit` requests wait), then
    /// leaves in the place it holds. A wake-up left over from an earlier window only makes it
    /// look at the queue again.
    async fn gather(self: Arc<Self>) {
        let deadline = tokio::time::Instant::now() + self.pipeline.window;
        while tokio::time::timeout_at(deadline, self.full.notified())
            .await
            .is_ok()
        {
            if self.state.lock().queue.len() >= self.pipeline.limit {
                break;
            }
        }
        let batch = {
            let mut state = self.state.lock();
            state.gathering = false;
            Self::take_batch(&mut state)
        };
        if let Some(batch) = batch {
            self.drive(batch).await;
        }
    }

    /// The next batch to send in a place that just came free, or `None` (and the place is given
    /// up) when nothing waits. Requests whose callers stopped waiting are dropped unsent.
    fn next_batch(&self) -> Option<Vec<Queued>> {
        Self::take_batch(&mut self.state.lock())
    }

    fn take_batch(state: &mut State) -> Option<Vec<Queued>> {
        let mut batch = Vec::new();
        while batch.len() < MAX_REQUESTS {
            let Some(q) = state.queue.pop_front() else {
                break;
            };
            if !q.reply.is_closed() {
                batch.push(q);
            }
        }
        if batch.is_empty() {
            state.in_flight -= 1;
            return None;
        }
        Some(batch)
    }

    /// A place came free: a task sends what queued meanwhile, then whatever queues during that
    /// call, until nothing waits.
    fn release(self: &Arc<Self>) {
        let Some(batch) = self.next_batch() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(Arc::clone(self).drive(batch));
            }
            // No runtime (shutting down): the waiters see their call dropped.
            Err(_) => self.state.lock().in_flight -= 1,
        }
    }

    async fn drive(self: Arc<Self>, mut batch: Vec<Queued>) {
        loop {
            let parts: Vec<&Part> = batch.iter().map(|q| &q.part).collect();
            let result = self.send(&parts).await;
            drop(parts);
            match result {
                Ok(replies) if replies.len() == batch.len() => {
                    for (q, reply) in batch.into_iter().zip(replies) {
                        let _ = q.reply.send(Ok(reply));
                    }
                }
                Ok(_) => {
                    for q in batch {
                        let _ = q.reply.send(Err(short_reply()));
                    }
                }
                Err(e) => {
                    for q in batch {
                        let _ = q.reply.send(Err(e.clone()));
                    }
                }
            }
            match self.next_batch() {
                Some(next) => batch = next,
                None => return,
            }
        }
    }

    /// One `EVALSHA` for `parts`, in order; one reply per part.
    async fn send(&self, parts: &[&Part]) -> Result<Vec<Vec<i64>>, StoreError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        self.stats
            .requests
            .fetch_add(parts.len() as u64, Ordering::Relaxed);
        if let Target::Node { host, port } = &self.target {
            let node = super::nodes::Node { host, port: *port };
            return node
                .send(&self.links, &self.script, self.timeout, parts)
                .await;
        }
        let mut call = self.script.prepare_invoke();
        for part in parts {
            for key in part.keys() {
                call.key(key);
            }
            for arg in part.args() {
                call.arg(arg);
            }
        }
        let mut conn = self.links.get()?;
        let reply = bounded(self.timeout, call.invoke_async(&mut conn)).await;
        if reply.as_ref().is_err_and(StoreError::is_transient) {
            self.links.report_failure();
        }
        reply
    }
}

fn short_reply() -> StoreError {
    StoreError::Protocol("the script did not reply once per request".into())
}

/// A place for one call in flight, passed on when dropped.
struct Place(Arc<Batcher>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.release();
    }
}
