//! Cross-request batching on a Redis Cluster: one [`Batcher`] per primary node.
//!
//! A script's declared keys must share one slot, so batching by declared keys would need a queue
//! per slot, which seldom fills. Instead the node script ([`super::scripts`]) declares no keys,
//! carries them in `ARGV` and is flagged `allow-cross-slot-keys` (Redis 7): it may touch keys of
//! every slot the node it runs on serves. Each call is sent to its node by address, so the node's
//! queue gathers the requests of all its slots, as one Redis's queue does.
//!
//! **Where keys live.** The slot map is read with `CLUSTER SLOTS` at start and again (at most every
//! [`REFRESH_EVERY`]) whenever a node's call fails or a request comes back unserved. Until it is
//! known, and for slots without a known primary, requests go unbatched through the Cluster's own
//! routing (declared keys; redirections followed), as every request did before.
//!
//! **A stale map never loses or doubles a request.** Redis aborts a script at a command on a key
//! its node does not serve (the slot moved, or is migrating and the key is not there yet), keeping
//! the writes made before it. So the node script decides each request under `pcall` and writes
//! only once every read of the request succeeded: a request whose reads fail wrote nothing and
//! replies [`UNSERVED`]; the requests before and after it are decided as usual. An unserved
//! request is sent again through the Cluster's routing. A call refused before it ran (the node
//! turned replica, the connection to it is gone, the cluster is down) is unserved as a whole. A
//! request whose writes fail midway (a lease pool rewritten in a migrating slot) replies
//! [`HALF_WRITTEN`] and fails, as it would alone. A call that times out or loses its connection
//! may have run: its requests fail, as on a single Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, Script, ServerErrorKind, Value};

use super::batcher::{Batcher, Part, Pipeline, Stats, Target};
use super::links::{Link, Links};
use super::{bounded, store_error};
use crate::storage::StoreError;

/// A request the node did not decide (nothing written): it goes again through the Cluster routing.
pub const UNSERVED: i64 = -1;
/// A request whose writes failed midway: it fails.
pub const HALF_WRITTEN: i64 = -2;
/// The node refused the node script (before Redis 7): it is unserved, and batching per node off.
pub const UNSUPPORTED: i64 = -3;
/// The slot map is read again at most this often.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;
const NO_NODE: u16 = u16::MAX;

/// The `{hash tag}` Redis Cluster hashes `key` by: the text between its first `{` and the next
/// `}`, unless that is empty or missing (the whole key is hashed then).
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    key.iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty())
}

/// The Cluster hash slot of `key` (CRC16-XMODEM of the key or its `{hash tag}`).
pub fn slot_of(key: &[u8]) -> usize {
    let mut crc: u16 = 0;
    for &byte in hash_tag(key).unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    usize::from(crc) % SLOTS
}

struct Map {
    /// Per slot, the index of its primary's batcher, or [`NO_NODE`].
    slots: Box<[u16]>,
    nodes: Vec<(String, u16, Arc<Batcher>)>,
}

#[derive(Default)]
struct Refresh {
    running: bool,
    last: Option<Instant>,
}

/// The per-node batchers of a Cluster and the slot map that picks one.
pub struct Nodes {
    links: Arc<Links>,
    script: Script,
    timeout: Duration,
    in_flight: usize,
    pipeline: Pipeline,
    stats: Arc<Stats>,
    map: ArcSwapOption<Map>,
    refresh: Mutex<Refresh>,
    off: std::sync::atomic::AtomicBool,
}

impl Nodes {
    /// Batchers sharing about `in_flight` calls in flight (one per node at least), each with
    /// `pipeline`'s window, counting into `stats`; the map is read at once.
    pub fn start(
        links: Arc<Links>,
        timeout: Duration,
        (in_flight, pipeline): (usize, Pipeline),
        stats: Arc<Stats>,
    ) -> Arc<Self> {
        let nodes = Arc::new(Self {
            links,
            script: super::scripts::node_script(),
            timeout,
            in_flight,
            pipeline,
            stats,
            map: ArcSwapOption::empty(),
            refresh: Mutex::default(),
            off: Default::default(),
        });
        nodes.refresh();
        nodes
    }

    /// The batcher of the node serving `key`'s slot, if known.
    pub fn batcher(self: &Arc<Self>, key: &[u8]) -> Option<Arc<Batcher>> {
        if self.off.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let map = self.map.load();
        let node = map
            .as_ref()
            .map(|m| m.slots[slot_of(key)])
            .filter(|&n| n != NO_NODE);
        match (map.as_ref(), node) {
            (Some(m), Some(n)) => Some(Arc::clone(&m.nodes[usize::from(n)].2)),
            _ => {
                self.refresh();
                None
            }
        }
    }

    /// A node refused the node script: every request goes through the Cluster routing from now.
    pub fn turn_off(&self) {
        if !self.off.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                "a Redis Cluster node refused the per-node batch script (it needs Redis 7); \
                 requests go one script each"
            );
        }
    }

    /// Reads the slot map again in the background, unless a read runs or ran lately.
    pub fn refresh(self: &Arc<Self>) {
        {
            let mut r = self.refresh.lock();
            if r.running || r.last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            r.running = true;
            r.last = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.refresh.lock().running = false;
            return;
        };
        let nodes = Arc::clone(self);
        runtime.spawn(async move {
            let result = nodes.load_map().await;
            nodes.refresh.lock().running = false;
            if let Err(e) = result {
                tracing::debug!(error = %e, "cannot read the Cluster slot map; retrying on demand");
            }
        });
    }

    /// `CLUSTER SLOTS` from a seed, whose address stands for a node the reply names without one
    /// (a lone node does not know its own address); from any node if no seed answers.
    async fn read_slots(&self) -> Result<(Value, Option<String>), StoreError> {
        let Link::Cluster(mut conn) = self.links.get()? else {
            return Err(StoreError::Protocol("not a Cluster connection".into()));
        };
        let slots = || {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SLOTS");
            cmd
        };
        for (host, port) in self.links.seeds() {
            let route = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            };
            let call = conn.route_command(slots(), RoutingInfo::SingleNode(route));
            if let Ok(Ok(value)) = tokio::time::timeout(self.timeout, call).await
                && let Ok(value) = value.extract_error()
            {
                return Ok((value, Some(host)));
            }
        }
        let value = bounded(self.timeout, slots().query_async(&mut conn)).await?;
        Ok((value, None))
    }

    async fn load_map(&self) -> Result<(), StoreError> {
        let (value, answering) = self.read_slots().await?;
        let old = self.map.load_full();
        let mut map = Map {
            slots: vec![NO_NODE; SLOTS].into_boxed_slice(),
            nodes: Vec::new(),
        };
        let ranges = parse_slots(value, answering.as_deref());
        let primaries = {
            let mut p: Vec<(&str, u16)> = ranges.iter().map(|r| (&*r.2, r.3)).collect();
            p.sort_unstable();
            p.dedup();
            p.len()
        };
        // About `in_flight` calls across the Cluster, as on one Redis, and one per node at least:
        // the fewer in flight, the more requests each call carries (Redis CPU per decision falls).
        let in_flight = (self.in_flight / primaries.max(1)).max(1);
        for (start, end, host, port) in ranges {
            let index = match map.nodes.iter().position(|n| n.0 == host && n.1 == port) {
                Some(i) => i,
                None => {
                    let known = old.as_ref().and_then(|m| {
                        m.nodes
                            .iter()
                            .find(|n| n.0 == host && n.1 == port)
                            .map(|n| Arc::clone(&n.2))
                    });
                    let batcher = known.unwrap_or_else(|| {
                        Batcher::new(
                            Arc::clone(&self.links),
                            self.script.clone(),
                            self.timeout,
                            (in_flight, self.pipeline),
                            Target::Node {
                                host: host.clone(),
                                port,
                            },
                            Arc::clone(&self.stats),
                        )
                    });
                    map.nodes.push((host, port, batcher));
                    map.nodes.len() - 1
                }
            };
            for slot in start..=end.min(SLOTS - 1) {
                map.slots[slot] = index as u16;
            }
        }
        let addrs = |m: &Map| {
            m.nodes
                .iter()
                .map(|n| (n.0.clone(), n.1))
                .collect::<Vec<_>>()
        };
        if old.as_deref().map(addrs) != Some(addrs(&map)) {
            tracing::info!(primaries = map.nodes.len(), "batching per Cluster primary");
        }
        self.map.store(Some(Arc::new(map)));
        Ok(())
    }
}

/// `CLUSTER SLOTS`: each range's first and last slot and its primary's address. A primary named
/// without an address stands for the `answering` node, if known, as for the `redis` crate; else,
/// and for an unknown one (`?`), its slots go through the Cluster routing.
fn parse_slots(value: Value, answering: Option<&str>) -> Vec<(usize, usize, String, u16)> {
    let Value::Array(ranges) = value else {
        return Vec::new();
    };
    ranges
        .into_iter()
        .filter_map(|range| {
            let Value::Array(range) = range else {
                return None;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (range.first(), range.get(1), range.get(2))
            else {
                return None;
            };
            let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
                (primary.first(), primary.get(1))
            else {
                return None;
            };
            let mut host = String::from_utf8(host.clone()).ok()?;
            if host.is_empty() || host == "0.0.0.0" || host == "::" {
                host = answering?.to_owned();
            }
            if host == "?" {
                return None;
            }
            Some((
                usize::try_from(*start).ok()?,
                usize::try_from(*end).ok()?,
                host,
                u16::try_from(*port).ok()?,
            ))
        })
        .collect()
}

/// Errors with which a node refused a call before running it: every request of it is unserved.
fn not_run(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ClusterConnectionNotFound
            | ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
    )
}

/// One primary by address.
pub struct Node<'a> {
    pub host: &'a str,
    pub port: u16,
}

impl Node<'_> {
    /// One `EVALSHA` of the node script for `parts`, in order; one reply per part.
    pub async fn send(
        &self,
        links: &Links,
        script: &Script,
        timeout: Duration,
        parts: &[&Part],
    ) -> Result<Vec<Vec<i64>>, StoreError> {
        let Link::Cluster(mut conn) = links.get()? else {
            return Err(StoreError::Protocol("not a Cluster connection".into()));
        };
        let route = || {
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: self.host.to_owned(),
                port: self.port,
            })
        };
        let eval = || {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(script.get_hash()).arg(0);
            cmd.arg(parts.iter().map(|p| p.keys().count()).sum::<usize>());
            for key in parts.iter().flat_map(|p| p.keys()) {
                cmd.arg(key);
            }
            for arg in parts.iter().flat_map(|p| p.args()) {
                cmd.arg(arg);
            }
            cmd
        };
        // A server error comes back as a value.
        let mut run = async |cmd| conn.route_command(cmd, route()).await?.extract_error();
        let call = async {
            match run(eval()).await {
                // The node lost its scripts (a restart, a new primary): load there and run again.
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    let mut load = redis::cmd("SCRIPT");
                    load.arg("LOAD").arg(super::scripts::NODE_SOURCE);
                    match run(load).await {
                        // Refused outright (a Redis without script flags): not a passing failure.
                        Err(e) if matches!(e.kind(), ErrorKind::Server(_)) && !not_run(&e) => {
                            let refused = Value::Array(vec![Value::Int(UNSUPPORTED)]);
                            Ok(Value::Array(vec![refused; parts.len()]))
                        }
                        Err(e) => Err(e),
                        Ok(_) => run(eval()).await,
                    }
                }
                result => result,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(StoreError::Timeout(timeout)),
            Ok(Ok(value)) => {
                redis::from_redis_value(value).map_err(|e| StoreError::Protocol(e.to_string()))
            }
            Ok(Err(e)) if not_run(&e) => Ok(vec![vec![UNSERVED]; parts.len()]),
            Ok(Err(e)) => Err(store_error(&e, timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn slots_match_the_redis_crate() {
        for key in [
            &b"a"[..],
            b"rl:{tenant}:x",
            b"{}x",
            b"{x",
            b"",
            b"foo{bar}{zap}",
        ] {
            let ours = Slot::new(slot_of(key) as u16).unwrap();
            assert!(ours == Slot::for_key(key), "{key:?}");
        }
        // Known values (CLUSTER KEYSLOT).
        assert_eq!(slot_of(b"a"), 15495);
        assert_eq!(slot_of(b"b"), 3300);
    }

    #[test]
    fn slot_ranges_need_an_address() {
        let node = |host: &str, port| {
            Value::Array(vec![
                Value::BulkString(host.into()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let value = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![Value::Int(5461), Value::Int(9000), node("?", 7001)]),
        ]);
        assert_eq!(
            parse_slots(value.clone(), None),
            vec![(0, 5460, "10.0.0.1".to_owned(), 7000)]
        );
        let lone = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16383),
            node("", 7000),
        ])]);
        assert_eq!(parse_slots(lone.clone(), None), vec![]);
        assert_eq!(
            parse_slots(lone, Some("seed")),
            vec![(0, 16383, "seed".to_owned(), 7000)]
        );
    }
}
