//! The shared store: counters in Redis, so every Sluice instance enforces the same limits.
//!
//! Each request is one `EVALSHA` of the script in [`scripts`] (one round trip, atomic). Calls go
//! over a few multiplexed connections taken in turn: each pipelines concurrent requests on one
//! socket, and more than one keeps a single socket's read loop from becoming the bottleneck. Each
//! connection is a `ConnectionManager`, which reconnects in the background after a failure.
//!
//! Every call is bounded by [`RedisOptions::timeout`]; an outage therefore costs a request at
//! most that long and surfaces as a transient [`StoreError`] (`UNAVAILABLE` to Envoy), never as a
//! hang.
//!
//! Credentials come from the URL (`redis://user:password@host:port/db`, or `redis://:password@…`
//! for `requirepass`). Redis Cluster and Sentinel are not supported yet (see [`scripts`]).

pub mod scripts;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{
    AsyncConnectionConfig, ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind,
};

use super::{Batch, Outcome, Store, StoreError};
use crate::algorithm::lease::{Lease, LeaseId};
use crate::algorithm::{self, MAX_UNITS};
use crate::clock::Clock;

/// How to talk to Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Bound on every call (connecting, `EVALSHA`, `PING`). Envoy waits 20 ms by default, so
    /// keep this in the tens of milliseconds in production.
    pub timeout: Duration,
    /// Multiplexed connections used in turn (at least one).
    pub pool_size: usize,
    /// Whose time decides windows and buckets.
    pub clock: RedisClock,
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
        }
    }
}

/// Counters in one Redis primary.
pub struct RedisStore {
    connections: Box<[ConnectionManager]>,
    next: AtomicUsize,
    timeout: Duration,
    script: Script,
    holders: Script,
    clock: RedisClock,
    /// Expired leases the script reclaimed (reported with each reply).
    leases_reclaimed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RedisStore {
    /// Connects `opts.pool_size` connections to `url` and checks that the server answers, accepts
    /// the credentials and runs scripts. Fails fast with the precise error rather than retrying.
    pub async fn connect(url: &str, opts: RedisOptions) -> Result<Self, StoreError> {
        let timeout = opts.timeout;
        // Without TCP_NODELAY a small EVALSHA can wait for a delayed ACK: ~40 ms stalls in the
        // tail, twice Envoy's whole default budget.
        let info = url
            .into_connection_info()
            .map_err(|e| store_error(e, timeout))?
            .set_tcp_settings(TcpSettings::default().set_nodelay(true));
        let client = redis::Client::open(info).map_err(|e| store_error(e, timeout))?;
        let script = scripts::apply_script();

        // A plain connection first: the manager below retries failed connects (a wrong password
        // included) until the timeout, which would hide the reason.
        let probe = async {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            script.prepare_invoke().load_async(&mut conn).await?;
            Ok::<_, RedisError>(())
        };
        bounded(timeout, probe).await?;

        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per reconnect, no backoff: while Redis is down each call fails at once
            // (`Unreachable`) instead of waiting out its timeout behind a retry loop, and the
            // next call starts a fresh attempt, so recovery is noticed on the first call after
            // Redis is back. Concurrent calls share one attempt per connection.
            .set_number_of_retries(0);
        let managers = (0..opts.pool_size.max(1))
            .map(|_| ConnectionManager::new_with_config(client.clone(), config.clone()));
        let connections = bounded(timeout, futures::future::try_join_all(managers)).await?;

        Ok(Self {
            connections: connections.into_boxed_slice(),
            next: AtomicUsize::new(0),
            timeout,
            script,
            holders: scripts::holders_script(),
            clock: opts.clock,
            leases_reclaimed: Default::default(),
        })
    }

    /// The next connection in turn. Cloning a manager only clones a handle.
    fn connection(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
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
        let mut call = self.script.prepare_invoke();
        call.arg(&*scripts::admission_arg(batch.admission));
        match &self.clock {
            RedisClock::Redis => call.arg(""),
            RedisClock::Pinned(clock) => call.arg(clock.now().as_micros() as u64),
        };
        for hit in hits {
            let p = &hit.policy;
            call.key(&hit.key[..])
                .arg(scripts::algorithm_arg(p.algorithm))
                .arg(scripts::period_arg(p.period))
                .arg(p.limit.min(MAX_UNITS))
                .arg(p.burst.min(MAX_UNITS))
                .arg(algorithm::clamp_delta(hit.delta))
                .arg(&*scripts::role_arg(hit.role))
                .arg(scripts::claim_arg(&hit.claim));
        }
        let mut conn = self.connection();
        let reply: Vec<i64> = bounded(self.timeout, call.invoke_async(&mut conn)).await?;
        let (outcome, reclaimed, _) = scripts::parse_reply(hits, &reply)?;
        self.leases_reclaimed
            .fetch_add(reclaimed, Ordering::Relaxed);
        Ok(outcome)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection();
        bounded(
            self.timeout,
            redis::cmd("PING").query_async::<()>(&mut conn),
        )
        .await
    }

    async fn holders(&self, key: &[u8]) -> Result<Vec<Lease>, StoreError> {
        let mut conn = self.connection();
        let mut call = self.holders.prepare_invoke();
        call.key(key);
        match &self.clock {
            RedisClock::Redis => call.arg(""),
            RedisClock::Pinned(clock) => call.arg(clock.now().as_micros() as u64),
        };
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
}

/// Scrape-time metrics of a Redis store: the expired leases its scripts reclaimed.
pub struct RedisStoreMetrics(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl std::fmt::Debug for RedisStoreMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStoreMetrics")
    }
}

impl RedisStore {
    pub fn metrics(&self) -> RedisStoreMetrics {
        RedisStoreMetrics(std::sync::Arc::clone(&self.leases_reclaimed))
    }

    /// Expired leases the script reclaimed since the store was opened.
    pub fn leases_reclaimed(&self) -> u64 {
        self.leases_reclaimed.load(Ordering::Relaxed)
    }
}

impl prometheus_client::collector::Collector for RedisStoreMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let reclaimed =
            prometheus_client::metrics::counter::ConstCounter::new(self.0.load(Ordering::Relaxed));
        reclaimed.encode(encoder.encode_descriptor(
            "lease_expirations_reclaimed",
            "Expired leases removed from their pools by an operation on the pool",
            None,
            reclaimed.metric_type(),
        )?)
    }
}

/// Runs a Redis call under `timeout`, mapping both failure paths to [`StoreError`].
async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(|e| store_error(e, timeout)),
        Err(_) => Err(StoreError::Timeout(timeout)),
    }
}

/// Sorts Redis failures by whether waiting could help: network trouble and a server that is
/// loading, failing over or read-only are transient; refused credentials, missing permissions
/// and script errors are not.
fn store_error(e: RedisError, timeout: Duration) -> StoreError {
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
