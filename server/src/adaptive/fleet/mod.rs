//! Where replicas add up an interval's reports, and agree on which of them decides.
//!
//! | backend | aggregate of interval `k` of rule `r` | who decides |
//! |---|---|---|
//! | Redis (the override store's) | hash `<prefix>{sluice-adaptive}:<r>:<k>`: `n` reports, `e` errors, one field per non-empty bucket, added with `HINCRBY` by each replica | the replica whose `SET <hash>:lock NX PX` succeeds |
//! | etcd (the override store, [`etcd`]) | one key per replica and interval, summed when read | the replica that creates the interval's lock key |
//! | local (memory override store) | this process | this process |
//!
//! Weights that follow behaviour (`standing`) keep, per rule and window, the tenants refused
//! anywhere in the fleet: a Redis set `<prefix>{sluice-adaptive}:standing:<r>:<k>` each replica
//! adds its own to (`SADD`), read as an intersection or a union over the last windows
//! (`SINTER`, `SUNION`: one hash tag, one node), or this process's sets.
//!
//! Both keys expire after a few intervals: nothing is left behind by a replica that stops. The
//! keys share a hash tag, so a Redis Cluster keeps them on one node.

pub mod etcd;

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::Duration;

use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;

use super::sketch::{Aggregate, BUCKETS};
use crate::storage::backend::redis::lazy::LazyConnection;

/// `KEYS[1]` the interval's hash; ARGV: field, increment, field, increment, ..., then its TTL (ms).
const ADD: &str = r"
for i = 1, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
return 1
";

pub enum Fleet {
    /// One process decides from its own reports.
    Local(Box<LocalFleet>),
    Redis(Box<RedisFleet>),
    Etcd(Box<etcd::EtcdFleet>),
}

#[derive(Default)]
pub struct LocalFleet {
    aggregates: Mutex<HashMap<(String, u64), Aggregate>>,
    refused: Mutex<HashMap<(String, u64), HashSet<String>>>,
}

pub struct RedisFleet {
    conn: LazyConnection,
    timeout: Duration,
    prefix: String,
    add: Script,
}

impl Fleet {
    pub fn local() -> Self {
        Fleet::Local(Box::default())
    }

    /// Through the etcd override store `store`.
    pub fn etcd(store: std::sync::Arc<crate::overrides::OverrideStore>) -> Self {
        Fleet::Etcd(Box::new(etcd::EtcdFleet::new(store)))
    }

    pub fn redis(client: redis::Client, key_prefix: &str, timeout: Duration) -> Self {
        Fleet::Redis(Box::new(RedisFleet {
            conn: LazyConnection::new(client, timeout),
            timeout,
            prefix: format!("{key_prefix}{{sluice-adaptive}}"),
            add: Script::new(ADD),
        }))
    }

    /// Adds this replica's `agg` to interval `k` of `rule`, kept for `ttl`.
    pub async fn add(
        &self,
        rule: &str,
        k: u64,
        agg: &Aggregate,
        ttl: Duration,
    ) -> Result<(), String> {
        match self {
            Fleet::Local(l) => {
                let mut m = l.aggregates.lock();
                // Nothing older than the interval before is read again.
                m.retain(|(_, at), _| *at + 2 >= k);
                m.entry((rule.to_owned(), k)).or_default().merge(agg);
                Ok(())
            }
            Fleet::Etcd(e) => e.add(rule, k, agg).await,
            Fleet::Redis(r) => {
                if agg.reports == 0 {
                    return Ok(());
                }
                let mut conn = r.conn().await?;
                let mut call = r.add.prepare_invoke();
                call.key(r.key(rule, k))
                    .arg("n")
                    .arg(agg.reports)
                    .arg("e")
                    .arg(agg.errors);
                for (i, n) in agg.buckets.iter().enumerate().filter(|(_, n)| **n > 0) {
                    call.arg(i).arg(*n);
                }
                call.arg(ttl.as_millis() as u64);
                r.bounded(call.invoke_async::<u8>(&mut conn))
                    .await
                    .map(drop)
            }
        }
    }

    /// Whether this replica decides interval `k` of `rule` (the first to ask, fleet-wide).
    pub async fn claim(&self, rule: &str, k: u64, ttl: Duration) -> Result<bool, String> {
        match self {
            Fleet::Local(_) => Ok(true),
            Fleet::Etcd(e) => e.claim(rule, k).await,
            Fleet::Redis(r) => {
                let mut conn = r.conn().await?;
                let set: Option<String> = r
                    .bounded(
                        redis::cmd("SET")
                            .arg(format!("{}:lock", r.key(rule, k)))
                            .arg(1)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl.as_millis() as u64)
                            .query_async(&mut conn),
                    )
                    .await?;
                Ok(set.is_some())
            }
        }
    }

    /// The fleet's aggregate of interval `k` of `rule`.
    pub async fn read(&self, rule: &str, k: u64) -> Result<Aggregate, String> {
        match self {
            Fleet::Local(l) => Ok(l
                .aggregates
                .lock()
                .remove(&(rule.to_owned(), k))
                .unwrap_or_default()),
            Fleet::Etcd(e) => e.read(rule, k).await,
            Fleet::Redis(r) => {
                let mut conn = r.conn().await?;
                let fields: Vec<(String, u64)> = r
                    .bounded(
                        redis::cmd("HGETALL")
                            .arg(r.key(rule, k))
                            .query_async(&mut conn),
                    )
                    .await?;
                let mut agg = Aggregate::default();
                for (field, n) in fields {
                    match field.as_str() {
                        "n" => agg.reports = n,
                        "e" => agg.errors = n,
                        i => {
                            if let Some(b) = i.parse::<usize>().ok().filter(|b| *b < BUCKETS) {
                                agg.buckets[b] = n;
                            }
                        }
                    }
                }
                Ok(agg)
            }
        }
    }
}

impl Fleet {
    /// Adds the tenants this replica saw refused in window `k` of `rule`; kept for `keep`
    /// windows of `window`.
    pub async fn add_refused(
        &self,
        rule: &str,
        k: u64,
        tenants: &HashSet<String>,
        keep: u64,
        window: Duration,
    ) -> Result<(), String> {
        match self {
            Fleet::Local(l) => {
                let mut m = l.refused.lock();
                m.retain(|(r, at), _| r != rule || at + keep >= k);
                m.entry((rule.to_owned(), k))
                    .or_default()
                    .extend(tenants.iter().cloned());
                Ok(())
            }
            Fleet::Etcd(e) => e.add_refused(rule, k, tenants).await,
            Fleet::Redis(r) => {
                if tenants.is_empty() {
                    return Ok(());
                }
                let key = r.refused_key(rule, k);
                let mut conn = r.conn().await?;
                let mut pipe = redis::pipe();
                pipe.cmd("SADD")
                    .arg(&key)
                    .arg(tenants.iter().collect::<Vec<_>>())
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(window.saturating_mul(keep as u32).as_millis() as u64)
                    .ignore();
                r.bounded(pipe.query_async::<()>(&mut conn)).await
            }
        }
    }

    /// The tenants refused in every window of `ks` (`all`), or in any of them, fleet-wide.
    pub async fn refused(
        &self,
        rule: &str,
        ks: RangeInclusive<u64>,
        all: bool,
    ) -> Result<HashSet<String>, String> {
        match self {
            Fleet::Local(l) => {
                let m = l.refused.lock();
                Ok(combine(
                    ks.map(|k| m.get(&(rule.to_owned(), k)).cloned().unwrap_or_default()),
                    all,
                ))
            }
            Fleet::Etcd(e) => e.refused(rule, ks, all).await,
            Fleet::Redis(r) => {
                let mut conn = r.conn().await?;
                let keys: Vec<String> = ks.map(|k| r.refused_key(rule, k)).collect();
                let cmd = if all { "SINTER" } else { "SUNION" };
                r.bounded(redis::cmd(cmd).arg(keys).query_async(&mut conn))
                    .await
            }
        }
    }
}

impl Fleet {
    /// Forgets `rule`'s refused tenants of the windows before `k` where nothing expires by
    /// itself (etcd); Redis keys and local sets expire on their own.
    pub async fn forget_before(&self, rule: &str, k: u64) -> Result<(), String> {
        match self {
            Fleet::Etcd(e) => e.forget_before(rule, k).await,
            _ => Ok(()),
        }
    }
}

/// The tenants in every one of `windows` (`all`), or in any of them; none for no window.
pub(super) fn combine(
    windows: impl Iterator<Item = HashSet<String>>,
    all: bool,
) -> HashSet<String> {
    windows
        .reduce(|acc, w| {
            if all {
                acc.intersection(&w).cloned().collect()
            } else {
                acc.union(&w).cloned().collect()
            }
        })
        .unwrap_or_default()
}

impl RedisFleet {
    fn refused_key(&self, rule: &str, k: u64) -> String {
        format!("{}:standing:{rule}:{k}", self.prefix)
    }

    fn key(&self, rule: &str, k: u64) -> String {
        format!("{}:{rule}:{k}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, String> {
        self.conn.get().await
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))?
            .map_err(|e| e.to_string())
    }
}
