//! The shared store: counters in Redis, so every Sluice instance enforces the same limits.
//!
//! Each request is decided by the script in [`scripts`] in one round trip, atomically: alone, or
//! with the requests that arrived while Redis was busy in one `EVALSHA` ([`batcher`]), over the
//! connections of [`links`]: a single primary, a primary followed through Sentinel, or a Redis
//! Cluster ([`target`] reads the address and TLS settings). On a Cluster, requests are batched per
//! primary node ([`nodes`]), and a request whose counters live in several hash slots runs one
//! script per slot concurrently and stays all-or-nothing by undoing the slots that charged when
//! another rejected ([`cluster`]). The fair queues of pools (concurrency and fair share) have a
//! script of their own, one call per operation, and a pub/sub feed of wake-ups ([`queue`]).
//!
//! Opening the store never waits for Redis beyond [`RedisOptions::timeout`]: an unreachable Redis
//! is connected in the background, and calls fail at once meanwhile (the failure policy of
//! [`crate::storage::layer::failover`] answers them). Every call is bounded by the same timeout.
//!
//! Credentials come from the URL (`redis://user:password@host:port/db`, or `redis://:password@…`
//! for `requirepass`) or from `--redis-auth`.

pub mod batcher;
pub mod cluster;
pub mod lazy;
pub mod links;
mod metrics;
pub mod nodes;
pub mod queue;
pub mod scripts;
mod stream;
pub mod target;
pub use metrics::RedisStoreMetrics;
mod trial;

use std::sync::Arc;
use std::time::Duration;

use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, ErrorKind, RedisError, Script, ServerErrorKind};

use crate::algorithm::Micros;
use crate::algorithm::lease::{Lease, LeaseId};
use crate::clock::Clock;
use crate::storage::{Batch, Hit, Outcome, QueueOp, QueueOutcome, Store, StoreError};
pub use batcher::Pipeline;
use links::Links;
pub use target::{Auth, RedisTarget, RedisType, TargetOptions, TlsFiles};

/// How to talk to Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Bound on connecting and on every call. The time budget of a check is set apart
    /// ([`crate::storage::layer::failover`]); this only keeps a call from hanging forever.
    pub timeout: Duration,
    /// Multiplexed connections used in turn (at least one), per node.
    pub pool_size: usize,
    /// Whose time decides windows and buckets.
    pub clock: RedisClock,
    /// The deployment's key prefix (`--key-prefix`): queue wake-ups go on
    /// `<prefix>sluice:queues` ([`queue`]), so deployments sharing a Redis keep theirs apart.
    pub key_prefix: String,
    /// How long a call that could leave at once waits for company ([`batcher`]).
    pub pipeline: Pipeline,
}

/// The clock the script decides with (see [`scripts`] for why Redis's own is the default).
#[derive(Clone, Default)]
pub enum RedisClock {
    /// Redis `TIME`: one clock for every replica.
    #[default]
    Redis,
    /// A caller's clock, for tests that move time by hand. Keys then get no expiry.
    Pinned(std::sync::Arc<dyn Clock>),
}

impl std::fmt::Debug for RedisClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisClock::Redis => "Redis",
            RedisClock::Pinned(_) => "Pinned",
        })
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            pool_size: 4,
            clock: RedisClock::Redis,
            key_prefix: String::new(),
            pipeline: Pipeline::default(),
        }
    }
}

/// Counters in Redis. Cloning shares the connections.
#[derive(Clone)]
pub struct RedisStore {
    links: Arc<Links>,
    timeout: Duration,
    batcher: Arc<batcher::Batcher>,
    /// A Cluster's per-node batchers (`batcher` then sends unbatched, by the declared keys).
    nodes: Option<Arc<nodes::Nodes>>,
    stats: Arc<batcher::Stats>,
    holders: Script,
    clock: RedisClock,
    /// Expired leases the script reclaimed (reported with each reply).
    leases_reclaimed: Arc<std::sync::atomic::AtomicU64>,
    cluster: bool,
    /// The queue script and the wake-up feed ([`queue`]).
    queues: Arc<queue::Queues>,
}

impl RedisStore {
    /// Opens the store at `target` and waits up to `opts.timeout` for a first connection. Fails
    /// only on what waiting cannot cure (a bad address, refused credentials, missing permissions);
    /// an unreachable Redis is connected in the background.
    pub async fn open(target: RedisTarget, opts: RedisOptions) -> Result<Self, StoreError> {
        if target.tls {
            // The process-wide TLS provider; a second install (another store) is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let cluster = target.kind == RedisType::Cluster;
        let queues = queue::Queues::new(target.clone(), &opts.key_prefix, opts.timeout);
        let links = Links::start(target, opts.pool_size, opts.timeout);
        links.wait_connected(opts.timeout).await?;
        // About one call in flight per connection (on a Cluster, about as many shared by the
        // primaries' batchers of [`nodes`]; the declared-keys batcher then only sends what they
        // cannot, at once and alone).
        let in_flight = if cluster {
            (usize::MAX, Pipeline::default())
        } else {
            (opts.pool_size, opts.pipeline)
        };
        let stats = Arc::new(batcher::Stats::default());
        let batcher = batcher::Batcher::new(
            Arc::clone(&links),
            scripts::apply_script(),
            opts.timeout,
            in_flight,
            batcher::Target::Links,
            Arc::clone(&stats),
        );
        let nodes = cluster.then(|| {
            nodes::Nodes::start(
                Arc::clone(&links),
                opts.timeout,
                (opts.pool_size, opts.pipeline),
                Arc::clone(&stats),
            )
        });
        Ok(Self {
            links,
            timeout: opts.timeout,
            batcher,
            nodes,
            stats,
            holders: scripts::holders_script(),
            clock: opts.clock,
            leases_reclaimed: Default::default(),
            cluster,
            queues: Arc::new(queues),
        })
    }

    /// A single Redis at `url`, which must answer within `opts.timeout` (tests and tools).
    pub async fn connect(url: &str, opts: RedisOptions) -> Result<Self, StoreError> {
        let target = RedisTarget::parse(RedisType::Single, url, TargetOptions::default())
            .map_err(StoreError::Server)?;
        let store = Self::open(target, opts).await?;
        store.ping().await?;
        Ok(store)
    }

    /// The time a caller pinned the scripts to, or `None` for Redis `TIME`.
    fn pinned_time(&self) -> Option<Micros> {
        match &self.clock {
            RedisClock::Redis => None,
            RedisClock::Pinned(clock) => Some(clock.now().as_micros() as u64),
        }
    }

    /// The time argument of the holders and queue scripts: the pinned time, or empty for Redis
    /// `TIME`.
    fn time_arg(&self) -> String {
        self.pinned_time()
            .map_or_else(String::new, |t| t.to_string())
    }

    /// Runs the script for `hits` under `admission` (alone, or batched with concurrent requests):
    /// the outcome and the time the hits were stepped at.
    async fn run(
        &self,
        hits: &[Hit],
        admission: crate::storage::Admission,
    ) -> Result<(Outcome, Micros), StoreError> {
        let time = self.pinned_time();
        let encode = || {
            let mut part = batcher::Part::default();
            scripts::encode(&mut part, hits, admission, time);
            part
        };
        // On a Cluster, the batcher of the node serving the hits' slot (they share one).
        let node = self
            .nodes
            .as_ref()
            .zip(hits.first())
            .and_then(|(nodes, hit)| Some((nodes, nodes.batcher(&hit.key)?)));
        let reply = match node {
            Some((nodes, node)) => {
                let reply = node.call(encode()).await;
                match reply.as_deref() {
                    Ok([nodes::UNSERVED]) => {
                        nodes.refresh();
                        self.batcher.call(encode()).await
                    }
                    Ok([nodes::UNSUPPORTED]) => {
                        nodes.turn_off();
                        self.batcher.call(encode()).await
                    }
                    Ok([nodes::HALF_WRITTEN]) => {
                        nodes.refresh();
                        Err(StoreError::Server(
                            "a Cluster node stopped serving a slot while the script wrote it"
                                .into(),
                        ))
                    }
                    Ok(_) => reply,
                    Err(_) => {
                        nodes.refresh();
                        reply
                    }
                }
            }
            None => self.batcher.call(encode()).await,
        };
        let (outcome, reclaimed, at) = scripts::parse_reply(hits, admission, &reply?)?;
        self.leases_reclaimed
            .fetch_add(reclaimed, std::sync::atomic::Ordering::Relaxed);
        Ok((outcome, at))
    }
}

/// Keys in one slot: the script runs there whole.
fn one_slot(hits: &[Hit]) -> bool {
    let mut slots = hits
        .iter()
        .map(|h| redis::cluster_routing::Slot::for_key(&h.key));
    match slots.next() {
        Some(first) => slots.all(|s| s == first),
        None => true,
    }
}

/// Connections to Redis skip Nagle's algorithm.
pub(crate) fn with_nodelay(info: ConnectionInfo) -> ConnectionInfo {
    // Without TCP_NODELAY a small EVALSHA can wait for a delayed ACK: ~40 ms stalls in the tail,
    // twice Envoy's whole default budget.
    info.set_tcp_settings(TcpSettings::default().set_nodelay(true))
}

impl Store for RedisStore {
    async fn apply(&self, batch: &Batch) -> Result<Outcome, StoreError> {
        let hits = &batch.hits;
        if hits.is_empty() {
            return Ok(Outcome {
                readings: Vec::new(),
                charged: true,
            });
        }
        if self.cluster && !one_slot(hits) {
            return cluster::apply_across_slots(self, batch).await;
        }
        self.run(hits, batch.admission)
            .await
            .map(|(outcome, _)| outcome)
    }

    /// Pings every connection: a connection that broke reconnects on its next call, so this also
    /// revives them all after an outage, before checks need them.
    async fn ping(&self) -> Result<(), StoreError> {
        let pings = self.links.all()?.into_iter().map(|mut conn| async move {
            bounded(
                self.timeout,
                redis::cmd("PING").query_async::<()>(&mut conn),
            )
            .await
        });
        let result = futures::future::try_join_all(pings).await.map(|_| ());
        if result.as_ref().is_err_and(StoreError::is_transient) {
            self.links.report_failure();
        }
        result
    }

    async fn holders(&self, key: &[u8]) -> Result<Vec<Lease>, StoreError> {
        let mut conn = self.links.get()?;
        let mut call = self.holders.prepare_invoke();
        call.key(key).arg(self.time_arg());
        let flat: Vec<(String, u64)> = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        flat.into_iter()
            .map(|(member, score)| {
                let id = LeaseId::parse(&member)
                    .ok_or_else(|| StoreError::Protocol(format!("lease id {member:?}")))?;
                Ok(Lease {
                    expires_at: score,
                    id,
                })
            })
            .collect()
    }

    async fn queue(
        &self,
        key: &[u8],
        policy: &crate::algorithm::Policy,
        op: &QueueOp,
    ) -> Result<QueueOutcome, StoreError> {
        self.run_queue(key, policy, op).await
    }

    async fn first_seen(
        &self,
        key: &[u8],
        keep: Duration,
        create: bool,
    ) -> Result<crate::storage::FirstSeen, StoreError> {
        self.run_first_seen(key, keep, create).await
    }

    /// Fed by one subscription per store, opened on the first call ([`queue`]).
    fn queue_changes(&self) -> Option<tokio::sync::broadcast::Receiver<Vec<u8>>> {
        Some(self.queues.subscribe())
    }
}

/// Runs a Redis call under `timeout`, mapping both failure paths to [`StoreError`].
async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| store_error(&e, timeout)),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// Sorts Redis failures by whether waiting could help: network trouble and a server that is
/// loading, failing over or read-only are transient; refused credentials, missing permissions
/// and script errors are not.
pub(crate) fn store_error(e: &RedisError, timeout: Duration) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout(timeout);
    }
    match e.kind() {
        ErrorKind::Io | ErrorKind::ClusterConnectionNotFound => {
            StoreError::Unreachable(e.to_string())
        }
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly,
        ) => StoreError::Unreachable(e.to_string()),
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => StoreError::Protocol(e.to_string()),
        _ => StoreError::Server(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_url_is_not_transient() {
        let err = RedisStore::connect("http://nope", RedisOptions::default())
            .await
            .err()
            .expect("a non-redis URL must be refused");
        assert!(!err.is_transient(), "{err:?}");
    }

    #[tokio::test]
    async fn nothing_listening_is_transient() {
        // Port 1 on loopback: nothing listens there unprivileged, so the connect is refused.
        let err = RedisStore::connect(
            "redis://127.0.0.1:1",
            RedisOptions {
                timeout: Duration::from_millis(500),
                pool_size: 1,
                ..Default::default()
            },
        )
        .await
        .err()
        .expect("nothing listens on port 1");
        assert!(err.is_transient(), "{err:?}");
    }
}
