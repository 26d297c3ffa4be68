//! Fair queues of pools in Redis ([`crate::algorithm::queue`]): one script call per operation,
//! and a pub/sub feed that tells waiters when another replica granted tickets.
//!
//! **Why a script.** An operation reads the pool (a concurrency pool's leases, a fair-share pool's
//! shares) and the queue, drops what expired, applies the operation and dispatches to queued
//! tickets what the pool admits: it must not interleave with a batch acquiring, releasing or
//! charging the same pool, nor with another replica's operation on the queue. Redis runs a script
//! whole, so `queue.lua` mirrors [`apply`](crate::algorithm::queue::apply) step for step, in one
//! round trip, on Redis `TIME` (every replica's tickets and leases age on one clock). Tests may
//! pin the time instead (`ARGV[1]`), as for the batch script ([`super::scripts`]), which also
//! skips expiry. The source is the batch script's `script.lua` (clock, windows) and `pools.lua`
//! (fair share) followed by `queue.lua`: a fair-share pool is read, stepped and written by the
//! very functions the batch script uses, never a copy of them.
//!
//! **KEYS**, all in the pool's hash slot (a script's keys must share one on a Cluster):
//! 1. `K`, the pool, as the batch script keeps it: a concurrency pool's sorted set of leases
//!    (member the lease id in hex, score its expiry in µs), where a granted ticket becomes a lease
//!    with the ticket's id, and which expires one TTL past its last lease; or a fair-share pool's
//!    hash (window start, units admitted, tenants), which a grant charges and a withdrawn grant
//!    refunds, and which expires at the end of the window after its own
//!    ([`crate::algorithm::expires_at`]).
//! 2. `K|q`, the tickets: member the ticket id in hex, score its virtual finish tag. Equal scores
//!    order by member, byte by byte, and lower-case hex keeps the ids' byte order: Redis's order
//!    is Rust's `(finish, id)`. Tags are integers, exact in a double below 2^53 (a fair-share
//!    ticket's tag is `cost × SCALE / weight` past its start, exact for costs below about 9·10^9
//!    units).
//! 3. `K|qd`, the deadlines: member the ticket id, score its deadline in µs.
//! 4. `K|qt`, a hash, tenant → finish tag, for tenants whose tag is ahead of the virtual time.
//! 5. `K|qv`, the virtual time (absent: 0).
//! 6. `K|qi` (fair share only), a hash, ticket id → `cost,weight,deadline,tenant`: what a ticket
//!    is charged and for whom, while it is queued or granted.
//! 7. `K|qg` (fair share only), the grants: member the ticket id, score its waiter's deadline in
//!    µs, when the grant is dropped (its units stay charged) unless withdrawn first (refunded).
//!
//! An empty queue (no ticket, no grant) is no state: its keys are deleted. Otherwise they expire
//! a little after the latest deadline, when every ticket and grant has left anyway: those of a
//! replica that died do not outlive their deadlines.
//!
//! **Cluster.** A pool key whose hash tag is not empty (`shard_by`) keeps its slot in `K|…`. A key
//! whose tag is empty (`{}`, each counter on its own) is hashed whole, so suffixed names would land
//! in other slots: there the queue keys carry a tag of their own, chosen to hash to the pool's
//! slot, as `q{<n>}` before the key's first brace (`sl:q{4120}{}1:d|…|l|q`). No counter key
//! starts that way (theirs start `sl:{`), so they collide with nothing, and they still match an
//! ACL key pattern `~PREFIX:sl:*`.
//!
//! **ARGV**: the time in µs (empty for Redis `TIME`); the pool's algorithm (`L` concurrency, `P`
//! fair share, as in the batch script); its `limit` (slots, or units per window); a concurrency
//! pool's lease TTL in µs ([`lease::ttl`]) or a fair-share pool's period (as the batch script
//! writes it, [`period_arg`]); the wake-up channel (empty for none); the operation (`E` enqueue,
//! `P` poll, `W` withdraw); the ticket id in hex; and for an enqueue the tenant's weight, how long
//! the ticket may wait in µs (its deadline is the script's `now` plus that, on the store's clock),
//! the queue's `max_depth`, the ticket's cost (read by fair-share pools only) and the tenant id
//! (bytes).
//!
//! **Reply**: the status ([`Status::as_str`]), the tickets ahead (while waiting), the depth, how
//! long until the queue can next move without a release (µs), the expired leases reclaimed, and
//! the granted ticket ids in grant order.
//!
//! **Wake-ups.** When an operation grants tickets other than its own caller's (who has the
//! answer already), the script publishes `K` on
//! `<prefix>sluice:queues` ([`CHANNEL`]), so a replica whose waiter was granted looks at once
//! instead of at its next poll (`PUBLISH` under `pcall`: a user not allowed the channel still
//! gets its answer). They reach [`crate::storage::Store::queue_changes`] from one subscription per
//! store, opened on the first call, so a deployment without queues subscribes to nothing: on the
//! single Redis, on the master Sentinel names (a demoted master keeps hearing what the new one
//! publishes, since replicas receive `PUBLISH`), or on any Cluster node (the cluster bus carries
//! a classic `PUBLISH` to every node). A broken subscription is reopened with back-off; what was
//! published meanwhile is lost, and so is what a receiver more than [`CAPACITY`] messages behind
//! misses: waiters also poll, so a lost wake-up only delays them.
//!
//! Beyond the batch script's commands, the ACL user needs `+zrem +zremrangebyscore +zscore +zrank
//! +zrange +hget +hdel +publish +subscribe` and the channel (`&PREFIX:sluice:queues`) for queues.

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use redis::Script;
use tokio::sync::{broadcast, oneshot};

use super::links::{self, BACKOFF_MIN, next_backoff};
use super::nodes::{SLOTS, hash_tag, slot_of};
use super::scripts::{algorithm_arg, period_arg};
use super::target::{RedisTarget, RedisType};
use super::{RedisStore, with_nodelay};
use crate::algorithm::lease::{self, LeaseId};
use crate::algorithm::queue::{Op, Outcome, Status};
use crate::algorithm::{Algorithm, MAX_UNITS, Policy};
use crate::storage::StoreError;

/// The script: the batch script's clock and fair-share functions, then the queue operation (see
/// the module doc).
const SOURCE: &str = concat!(
    include_str!("clock.lua"),
    include_str!("script.lua"),
    include_str!("pools.lua"),
    include_str!("queue.lua")
);

/// The wake-up channel, after the deployment's key prefix.
pub const CHANNEL: &str = "sluice:queues";
/// Wake-ups a receiver may fall behind by before it misses some.
pub const CAPACITY: usize = 1024;
/// How often the subscription is pinged, so a connection that died silently is noticed.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// The queue script and the wake-up feed of one store (shared by its clones).
pub(super) struct Queues {
    script: Script,
    feed: Feed,
    /// Set once the subscription runs; dropping it (with the store) ends the subscription.
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

/// What the subscription needs.
#[derive(Clone)]
struct Feed {
    target: RedisTarget,
    channel: String,
    timeout: Duration,
    changes: broadcast::Sender<Vec<u8>>,
}

impl Queues {
    pub(super) fn new(target: RedisTarget, key_prefix: &str, timeout: Duration) -> Self {
        Self {
            script: Script::new(SOURCE),
            feed: Feed {
                target,
                channel: format!("{key_prefix}{CHANNEL}"),
                timeout,
                changes: broadcast::channel(CAPACITY).0,
            },
            stop: Mutex::new(None),
        }
    }

    /// A receiver of the pool keys whose queues granted tickets; the first call opens the
    /// subscription (inside a Tokio runtime; outside one, a later call does).
    pub(super) fn subscribe(&self) -> broadcast::Receiver<Vec<u8>> {
        let receiver = self.feed.changes.subscribe();
        let mut stop = self.stop.lock();
        if stop.is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (tx, rx) = oneshot::channel();
            runtime.spawn(follow(self.feed.clone(), rx));
            *stop = Some(tx);
        }
        receiver
    }
}

/// The six queue keys of the pool at `pool`, in KEYS order (see the module doc).
pub fn queue_keys(pool: &[u8], cluster: bool) -> [Vec<u8>; 6] {
    let base = if cluster && hash_tag(pool).is_none() {
        let tag = slot_tags()[slot_of(pool)].to_string();
        let at = pool.iter().position(|&b| b == b'{').unwrap_or(0);
        let mut base = Vec::with_capacity(pool.len() + tag.len() + 3);
        base.extend_from_slice(&pool[..at]);
        base.extend_from_slice(b"q{");
        base.extend_from_slice(tag.as_bytes());
        base.push(b'}');
        base.extend_from_slice(&pool[at..]);
        base
    } else {
        pool.to_vec()
    };
    [&b"|q"[..], b"|qd", b"|qt", b"|qv", b"|qi", b"|qg"].map(|suffix| [&base[..], suffix].concat())
}

/// Per Cluster slot, the smallest number whose decimal digits hash to it (computed once: about
/// 110 000 hashes of a few bytes).
fn slot_tags() -> &'static [u32] {
    static TAGS: OnceLock<Box<[u32]>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        let mut n = 0u32;
        while missing > 0 {
            let slot = slot_of(n.to_string().as_bytes());
            if tags[slot] == u32::MAX {
                tags[slot] = n;
                missing -= 1;
            }
            n += 1;
        }
        tags.into_boxed_slice()
    })
}

/// The script's reply: status, ahead, depth, moves in, leases reclaimed, granted ids.
type Reply = (String, u64, u64, u64, u64, Vec<String>);

impl RedisStore {
    /// [`crate::storage::Store::queue`]: one script call, routed as a single-key call is (on a
    /// Cluster, to the node serving the pool's slot).
    pub(super) async fn run_queue(
        &self,
        key: &[u8],
        policy: &Policy,
        op: &Op,
    ) -> Result<Outcome, StoreError> {
        let mut call = self.queues.script.prepare_invoke();
        call.key(key);
        for k in queue_keys(key, self.cluster) {
            call.key(k);
        }
        // A fair-share pool's window, or a concurrency pool's lease TTL.
        let (algorithm, span) = match policy.algorithm {
            Algorithm::FairShare => (Algorithm::FairShare, period_arg(policy.period)),
            _ => (
                Algorithm::Concurrency,
                lease::ttl(policy).min(MAX_UNITS).to_string(),
            ),
        };
        call.arg(self.time_arg())
            .arg(algorithm_arg(algorithm))
            .arg(policy.limit.min(MAX_UNITS))
            .arg(span)
            .arg(&self.queues.feed.channel);
        match op {
            Op::Enqueue { waiter, max_depth } => call
                .arg("E")
                .arg(waiter.id.to_string())
                .arg(waiter.weight)
                .arg(waiter.wait.min(MAX_UNITS))
                .arg((*max_depth).min(MAX_UNITS))
                // One past the largest capacity at most: still exact in a double, and still more
                // than any pool holds (oversized).
                .arg(waiter.cost.clamp(1, MAX_UNITS + 1))
                .arg(&waiter.tenant[..]),
            Op::Poll(id) => call.arg("P").arg(id.to_string()),
            Op::Withdraw(id) => call.arg("W").arg(id.to_string()),
        };
        let mut conn = self.links.get()?;
        let reply = bounded_call(self, call.invoke_async::<Reply>(&mut conn)).await;
        let (outcome, reclaimed) = decode(reply?)?;
        self.leases_reclaimed
            .fetch_add(reclaimed, std::sync::atomic::Ordering::Relaxed);
        Ok(outcome)
    }
}

/// A call under the store's timeout; a transient failure makes a Sentinel follower look again.
async fn bounded_call<T>(
    store: &RedisStore,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    let reply = super::bounded(store.timeout, call).await;
    if reply.as_ref().is_err_and(StoreError::is_transient) {
        store.links.report_failure();
    }
    reply
}

/// The outcome and the leases reclaimed.
fn decode(reply: Reply) -> Result<(Outcome, u64), StoreError> {
    let (status, ahead, depth, moves_in, reclaimed, granted) = reply;
    let status = [
        Status::Granted,
        Status::Waiting { ahead },
        Status::Full,
        Status::Unweighted,
        Status::Oversized,
        Status::Gone,
    ]
    .into_iter()
    .find(|s| s.as_str() == status)
    .ok_or_else(|| StoreError::Protocol(format!("queue status {status:?}")))?;
    let granted = granted
        .iter()
        .map(|g| LeaseId::parse(g).ok_or_else(|| StoreError::Protocol(format!("ticket id {g:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let outcome = Outcome {
        status,
        granted,
        depth,
        moves_in,
    };
    Ok((outcome, reclaimed))
}

/// Keeps the subscription open until `stop` fires or its sender is dropped, reopening it with
/// back-off (reset by every subscription that succeeded).
async fn follow(feed: Feed, mut stop: oneshot::Receiver<()>) {
    let mut backoff = BACKOFF_MIN;
    let mut attempt = 0usize;
    let mut quiet = false;
    loop {
        let mut subscribed = false;
        let error = tokio::select! {
            _ = &mut stop => return,
            error = feed.listen(attempt, &mut subscribed) => error,
        };
        if subscribed {
            backoff = BACKOFF_MIN;
            quiet = false;
        }
        // One warning per outage: a Redis that stays away is retried quietly.
        if quiet {
            tracing::debug!(%error, "the queue wake-up subscription is still down");
        } else {
            tracing::warn!(%error, "the queue wake-up subscription failed; reopening it");
            quiet = true;
        }
        attempt = attempt.wrapping_add(1);
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = next_backoff(backoff);
    }
}

impl Feed {
    /// Subscribes (through the `attempt`-th candidate node) and passes every message on, until
    /// the connection fails; returns why. Sets `subscribed` once the subscription is in place.
    async fn listen(&self, attempt: usize, subscribed: &mut bool) -> String {
        let open = async {
            let client = self.client(attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok(pubsub)
        };
        let (mut sink, mut messages) = match links::bounded(self.timeout, open).await {
            Ok(pubsub) => pubsub.split(),
            Err(e) => return e.to_string(),
        };
        *subscribed = true;
        let start = tokio::time::Instant::now() + KEEPALIVE;
        let mut keepalive = tokio::time::interval_at(start, KEEPALIVE);
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    // No receiver at the moment is not an error: later ones hear what follows.
                    Some(m) => drop(self.changes.send(m.get_payload_bytes().to_vec())),
                    None => return "the connection closed".into(),
                },
                _ = keepalive.tick() => {
                    let pong = links::bounded(self.timeout, sink.ping::<redis::Value>()).await;
                    if let Err(e) = pong {
                        return e.to_string();
                    }
                }
            }
        }
    }

    /// A client for the node to subscribe on: the single Redis, the master Sentinel names now,
    /// or the Cluster's seeds in turn (any node hears every `PUBLISH`).
    async fn client(&self, attempt: usize) -> redis::RedisResult<redis::Client> {
        let t = &self.target;
        let info = match t.kind {
            RedisType::Sentinel => {
                let master = t.sentinel_client()?.async_get_client().await?;
                master.get_connection_info().clone()
            }
            RedisType::Single | RedisType::Cluster => t.nodes[attempt % t.nodes.len()].clone(),
        };
        t.client(with_nodelay(info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_the_pool_slot() {
        // Standalone: plain suffixes.
        assert_eq!(
            queue_keys(b"rl:sl:{}1:d|l", false),
            [
                b"rl:sl:{}1:d|l|q".to_vec(),
                b"rl:sl:{}1:d|l|qd".to_vec(),
                b"rl:sl:{}1:d|l|qt".to_vec(),
                b"rl:sl:{}1:d|l|qv".to_vec(),
                b"rl:sl:{}1:d|l|qi".to_vec(),
                b"rl:sl:{}1:d|l|qg".to_vec(),
            ]
        );
        // A Cluster key with a tag keeps it.
        assert_eq!(queue_keys(b"sl:{acme}1:d|l", true)[0], b"sl:{acme}1:d|l|q");
        // One hashed whole (empty tag, or none) gets a tag of the same slot.
        for n in 0..2000 {
            for pool in [
                format!("rl:sl:{{}}1:d|1:k|{}:{n}|l", n.to_string().len()),
                format!("plain-{n}"),
            ] {
                let keys = queue_keys(pool.as_bytes(), true);
                for k in &keys {
                    assert_eq!(slot_of(k), slot_of(pool.as_bytes()), "{pool}");
                    assert!(hash_tag(k).is_some());
                }
                assert!(keys[0].starts_with(b"rl:sl:q{") || keys[0].starts_with(b"q{"));
            }
        }
        assert!(slot_tags().iter().all(|&t| t != u32::MAX));
    }

    #[test]
    fn replies_decode_to_outcomes() {
        let id = LeaseId([0xab; 16]);
        let (outcome, reclaimed) =
            decode(("waiting".into(), 3, 4, 17, 2, vec![id.to_string()])).unwrap();
        assert_eq!(outcome.status, Status::Waiting { ahead: 3 });
        assert_eq!((outcome.depth, outcome.moves_in), (4, 17));
        assert_eq!((outcome.granted, reclaimed), (vec![id], 2));
        assert!(decode(("late".into(), 0, 0, 0, 0, vec![])).is_err());
        assert!(decode(("gone".into(), 0, 0, 0, 0, vec!["xyz".into()])).is_err());
    }

    #[test]
    fn the_script_speaks_the_status_names() {
        let source = include_str!("queue.lua");
        for s in [
            Status::Granted,
            Status::Waiting { ahead: 0 },
            Status::Full,
            Status::Unweighted,
            Status::Oversized,
            Status::Gone,
        ] {
            assert!(source.contains(&format!("'{}'", s.as_str())), "{s:?}");
        }
        assert_eq!(crate::algorithm::queue::SCALE, 1_000_000);
        assert!(source.contains("local SCALE = 1000000"));
        // The pool's algorithm as the batch script codes it.
        assert_eq!(algorithm_arg(Algorithm::FairShare), "P");
        assert!(source.contains("ARGV[2] == 'P'"));
        // The fair-share functions come from the batch script's sources, ahead of the queue's.
        assert!(SOURCE.contains("local function share(h, st, delta)"));
        assert!(SOURCE.ends_with(source));
    }
}
