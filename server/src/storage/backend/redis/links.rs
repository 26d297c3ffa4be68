//! Connections to Redis that never hold a check up: they are made, remade and moved in the
//! background, and a check that finds none fails at once (the failure policy then decides).
//!
//! - **Single**: `pool_size` multiplexed connections (`ConnectionManager`), each pipelining every
//!   concurrent call on one socket; taken in turn. Until the first connect succeeds, a connector
//!   retries with backoff (50 ms doubling to 2 s); after that each connection reconnects by itself
//!   on the next call after a failure.
//! - **Sentinel**: the same pool, to the master the sentinels name. A follower asks the sentinels
//!   every [`FOLLOW_EVERY`] (at once when a call fails) and moves the pool when the master changes:
//!   a failover is followed within a fraction of a second of the sentinels' decision.
//! - **Cluster**: `pool_size` cluster connections, each holding one multiplexed connection per
//!   node, following MOVED/ASK redirections and refreshing the slot map after a failover.
//!
//! The pool is bounded: `pool_size` connections per node, whatever the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, Pipeline, RedisFuture, Value};

use super::target::{RedisTarget, RedisType};
use super::{store_error, with_nodelay};
use crate::storage::StoreError;

/// How often the Sentinel follower asks for the master while nothing fails.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// The first wait before connecting again; it doubles up to `BACKOFF_MAX`.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One connection handle (cloning is cheap: it shares the socket).
#[derive(Clone)]
pub enum Link {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Node(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Node(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

struct Pool {
    links: Box<[Link]>,
    /// The node a single or Sentinel pool talks to.
    primary: Option<ConnectionAddr>,
}

/// Where the connections stand, for start-up and `/healthcheck`.
#[derive(Debug, Clone)]
enum Status {
    Connecting,
    Connected,
    Failing(String, bool),
}

pub struct Links {
    target: RedisTarget,
    pool_size: usize,
    timeout: Duration,
    current: ArcSwapOption<Pool>,
    next: AtomicUsize,
    status: Mutex<Status>,
    changed: tokio::sync::Notify,
    kick: Arc<tokio::sync::Notify>,
}

impl Links {
    /// Starts connecting in the background and returns at once.
    pub fn start(target: RedisTarget, pool_size: usize, timeout: Duration) -> Arc<Self> {
        let links = Arc::new(Self {
            target,
            pool_size: pool_size.max(1),
            timeout,
            current: ArcSwapOption::empty(),
            next: AtomicUsize::new(0),
            status: Mutex::new(Status::Connecting),
            changed: tokio::sync::Notify::new(),
            kick: Arc::new(tokio::sync::Notify::new()),
        });
        let weak = Arc::downgrade(&links);
        match links.target.kind {
            RedisType::Single => tokio::spawn(connect_single(weak)),
            RedisType::Sentinel => tokio::spawn(follow_sentinel(weak)),
            RedisType::Cluster => tokio::spawn(connect_cluster(weak)),
        };
        links
    }

    /// The seed addresses (host and port) given for a Cluster.
    pub fn seeds(&self) -> Vec<(String, u16)> {
        self.target
            .nodes
            .iter()
            .filter_map(|n| match n.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    Some((host.clone(), *port))
                }
                _ => None,
            })
            .collect()
    }

    /// The next connection in turn, or an error while there is none.
    pub fn get(&self) -> Result<Link, StoreError> {
        let pool = self.current.load();
        match pool.as_ref() {
            Some(p) => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % p.links.len();
                Ok(p.links[i].clone())
            }
            None => Err(match &*self.status.lock() {
                Status::Failing(e, _) => StoreError::Unreachable(format!("not connected: {e}")),
                _ => StoreError::Unreachable("not connected yet".into()),
            }),
        }
    }

    /// Every connection (one per pool slot), to check or revive them all.
    pub fn all(&self) -> Result<Vec<Link>, StoreError> {
        match self.current.load().as_ref() {
            Some(p) => Ok(p.links.to_vec()),
            None => self.get().map(|l| vec![l]),
        }
    }

    /// A call failed: the Sentinel follower checks the master at once.
    pub fn report_failure(&self) {
        if self.target.kind == RedisType::Sentinel {
            self.kick.notify_one();
        }
    }

    /// Waits up to `within` for the first connection. Returns the error of a failure that waiting
    /// cannot cure (refused credentials, missing permissions); `Ok` otherwise, connected or not.
    pub async fn wait_connected(&self, within: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            match self.status.lock().clone() {
                Status::Connected => return Ok(()),
                Status::Failing(e, false) => return Err(StoreError::Server(e)),
                _ => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(());
            }
        }
    }

    fn set_status(&self, status: Status) {
        *self.status.lock() = status;
        self.changed.notify_waiters();
    }

    fn install(&self, links: Vec<Link>, primary: Option<ConnectionAddr>) {
        self.current.store(Some(Arc::new(Pool {
            links: links.into_boxed_slice(),
            primary,
        })));
        self.set_status(Status::Connected);
    }

    fn failing(&self, e: &redis::RedisError, what: &str) {
        let err = store_error(e, self.timeout);
        let transient = err.is_transient();
        let message = e.to_string();
        let repeated = matches!(&*self.status.lock(), Status::Failing(m, _) if *m == message);
        if !repeated {
            if transient {
                tracing::warn!(error = %message, "{what}; retrying in the background");
            } else {
                tracing::error!(error = %message, "{what}; retrying in the background");
            }
        }
        self.set_status(Status::Failing(message, transient));
    }

    /// `pool_size` managed connections to one node, after a plain probe that surfaces the precise
    /// error (the managers would retry a refused password until their timeout).
    async fn node_pool(&self, client: redis::Client) -> redis::RedisResult<Vec<Link>> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut probe).await?;
        super::scripts::apply_script()
            .prepare_invoke()
            .load_async(&mut probe)
            .await?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // One attempt per reconnect: while Redis is down each call fails at once instead of
            // waiting behind a retry loop, and the next call starts a fresh attempt, so recovery
            // is noticed on the first call after Redis is back.
            .set_number_of_retries(0);
        let managers = (0..self.pool_size)
            .map(|_| ConnectionManager::new_with_config(client.clone(), config.clone()));
        let managers = futures::future::try_join_all(managers).await?;
        Ok(managers.into_iter().map(Link::Node).collect())
    }
}

/// `f` under `within`: a timeout is an I/O error, as the connection's own would be.
pub(super) async fn bounded<T>(
    within: Duration,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(within, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {within:?}"),
        ))),
    }
}

pub(super) fn next_backoff(b: Duration) -> Duration {
    (b * 2).min(BACKOFF_MAX)
}

async fn connect_single(links: std::sync::Weak<Links>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(l) = links.upgrade() else { return };
        let info = with_nodelay(l.target.nodes[0].clone());
        let result = match l.target.client(info) {
            Ok(client) => bounded(l.timeout, l.node_pool(client)).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(pool) => {
                tracing::info!("connected to Redis");
                l.install(pool, None);
                return;
            }
            Err(e) => l.failing(&e, "cannot connect to Redis"),
        }
        drop(l);
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}

async fn follow_sentinel(links: std::sync::Weak<Links>) {
    let mut sentinel = match links.upgrade().map(|l| l.target.sentinel_client()) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            if let Some(l) = links.upgrade() {
                l.failing(&e, "cannot use the Sentinel addresses");
            }
            return;
        }
        None => return,
    };
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(l) = links.upgrade() else { return };
        let found = bounded(l.timeout, sentinel.async_get_client()).await;
        let mut wait = FOLLOW_EVERY;
        match found {
            Ok(client) => {
                let addr = client.get_connection_info().addr().clone();
                let current = l.current.load();
                let moved = current.as_ref().and_then(|p| p.primary.as_ref()) != Some(&addr);
                if moved {
                    let client = match l
                        .target
                        .client(with_nodelay(client.get_connection_info().clone()))
                    {
                        Ok(c) => c,
                        Err(e) => {
                            l.failing(&e, "cannot use the master's address");
                            continue;
                        }
                    };
                    match bounded(l.timeout, l.node_pool(client)).await {
                        Ok(pool) => {
                            tracing::info!(master = %addr, "following the master named by Sentinel");
                            l.install(pool, Some(addr));
                            backoff = BACKOFF_MIN;
                        }
                        Err(e) => {
                            l.failing(&e, "cannot connect to the master named by Sentinel");
                            wait = backoff;
                            backoff = next_backoff(backoff);
                        }
                    }
                }
            }
            Err(e) => {
                l.failing(&e, "no sentinel names a reachable master");
                wait = backoff;
                backoff = next_backoff(backoff);
            }
        }
        let kick = Arc::clone(&l.kick);
        drop(l);
        let _ = tokio::time::timeout(wait, kick.notified()).await;
    }
}

async fn connect_cluster(links: std::sync::Weak<Links>) {
    let Some(l) = links.upgrade() else { return };
    let client = match l.target.cluster_client(l.timeout) {
        Ok(c) => c,
        Err(e) => {
            l.failing(&e, "cannot use the Cluster addresses");
            return;
        }
    };
    let config = redis::cluster::ClusterConfig::new()
        .set_connection_timeout(l.timeout)
        .set_response_timeout(l.timeout);
    // Pending connections connect on first use, in the background of the calls.
    let pool: Vec<Link> = (0..l.pool_size)
        .map(|_| Link::Cluster(client.get_pending_async_connection_with_config(config.clone())))
        .collect();
    let mut probe = pool[0].clone();
    l.current.store(Some(Arc::new(Pool {
        links: pool.into_boxed_slice(),
        primary: None,
    })));
    drop(l);
    // Report the first successful contact (start-up waits for it) or why there is none yet.
    let mut backoff = BACKOFF_MIN;
    loop {
        let Some(l) = links.upgrade() else { return };
        let script = super::scripts::apply_script();
        let load = async {
            redis::cmd("PING").query_async::<()>(&mut probe).await?;
            // SCRIPT LOAD goes to every primary: loaded now rather than on each one's first
            // NOSCRIPT.
            script.prepare_invoke().load_async(&mut probe).await?;
            // The per-node batch script too, where Redis knows its flags (7.0 on); else each
            // node's first batch finds out ([`super::nodes`]).
            let _ = super::scripts::node_script()
                .prepare_invoke()
                .load_async(&mut probe)
                .await;
            Ok(())
        };
        match bounded(l.timeout, load).await {
            Ok(()) => {
                tracing::info!("connected to Redis Cluster");
                l.set_status(Status::Connected);
                return;
            }
            Err(e) => l.failing(&e, "cannot reach Redis Cluster"),
        }
        drop(l);
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}
