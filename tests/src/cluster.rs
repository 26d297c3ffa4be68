//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes` nodes joined with
//! `redis-cli --cluster create`, waited on until every node reports `cluster_state:ok` and every
//! replica is in sync.

use std::time::Duration;

use crate::node::{RedisNode, base_args, free_port_pair, wait_until};
use crate::tls::Pki;

pub struct Cluster {
    /// Masters first (as created), then replicas.
    pub nodes: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `masters` masters with `replicas` replicas each. Nodes consider a silent peer failed after
    /// `node_timeout` (a replica then takes over its master's slots). The cluster keeps serving
    /// the slots it still covers when a master is down, and a restarted node has every hit it
    /// answered: Redis writes its append-only file before it replies, so a killed process loses
    /// nothing it acknowledged (only a crash of the machine would, which `fsync` guards against).
    pub fn start(masters: usize, replicas: usize, node_timeout: Duration) -> Self {
        Self::start_with(masters, replicas, node_timeout, None)
    }

    /// As [`start`](Self::start), with every node speaking TLS only (clients, replication and
    /// the cluster bus) with `tls`'s certificates when given.
    pub fn start_with(
        masters: usize,
        replicas: usize,
        node_timeout: Duration,
        tls: Option<&Pki>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("cluster directory");
        let count = masters * (1 + replicas);
        let nodes: Vec<RedisNode> = (0..count)
            .map(|i| {
                let port = free_port_pair(10_000);
                let node_dir = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&node_dir).expect("node directory");
                let mut args = base_args(port, &node_dir);
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &node_timeout.as_millis().to_string(),
                        "--cluster-require-full-coverage",
                        "no",
                        "--appendonly",
                        "yes",
                        "--appendfsync",
                        "no",
                    ]
                    .iter()
                    .map(|s| s.to_string()),
                );
                if let Some(pki) = tls {
                    pki.serve_tls_only(&mut args, true);
                }
                let access = tls.map(Pki::cli_access).unwrap_or_default();
                RedisNode::start(port, args, access)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisNode::addr).collect();
        let out = std::process::Command::new("redis-cli")
            .args(tls.map(Pki::cli_args).unwrap_or_default())
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        assert!(
            cluster.wait_healthy(Duration::from_secs(30)),
            "the cluster did not become healthy"
        );
        cluster
    }

    /// Seed addresses in the reference's form: `host:port,host:port,…`.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(RedisNode::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every running node reports `cluster_state:ok`, every slot is served, and every replica's
    /// link to its master is up.
    pub fn healthy(&self) -> bool {
        self.nodes.iter().filter(|n| n.is_running()).all(|n| {
            let info = n.try_cli(&["CLUSTER", "INFO"]).unwrap_or_default();
            let replication = n.try_cli(&["INFO", "replication"]).unwrap_or_default();
            info.contains("cluster_state:ok")
                && info.contains("cluster_slots_ok:16384")
                && (replication.contains("role:master")
                    || replication.contains("master_link_status:up"))
        })
    }

    pub fn wait_healthy(&self, within: Duration) -> bool {
        wait_until(within, || self.healthy())
    }

    /// The node serving `key` as master now (asked of any running node).
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .any_running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot number");
        self.master_of_slot(slot)
    }

    pub fn master_of_slot(&self, slot: u16) -> usize {
        self.try_master_of_slot(slot)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The node serving `key` as master now, if a master not flagged as failed serves it (none
    /// does between a master's failure and its replica's promotion).
    pub fn try_master_of(&self, key: &str) -> Option<usize> {
        let slot: u16 = self
            .any_running()
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot number");
        self.try_master_of_slot(slot)
    }

    fn try_master_of_slot(&self, slot: u16) -> Option<usize> {
        let nodes = self.any_running().cli(&["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                match (a.parse::<u16>(), b.parse::<u16>()) {
                    (Ok(a), Ok(b)) => (a..=b).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let port: u16 = fields[1]
                    .split(['@', ':'])
                    .nth(1)
                    .and_then(|p| p.parse().ok())
                    .expect("node port");
                return Some(
                    self.nodes
                        .iter()
                        .position(|n| n.port() == port)
                        .expect("a node of this cluster"),
                );
            }
        }
        None
    }

    fn any_running(&self) -> &RedisNode {
        self.nodes
            .iter()
            .find(|n| n.is_running() && n.try_cli(&["PING"]).is_some())
            .expect("a running node")
    }

    /// Node `i`'s cluster id.
    pub fn id(&self, i: usize) -> String {
        self.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_string()
    }

    /// Starts moving `key`'s slot from master `src` to master `dst` and migrates `key` with it:
    /// until [`Self::finish_migration`], `src` answers ASK for the key. Returns the slot.
    pub fn begin_migration(&self, key: &str, src: usize, dst: usize) -> String {
        let slot = self.nodes[0]
            .cli(&["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let (from, to) = (&self.nodes[src], &self.nodes[dst]);
        let importing = to.cli(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &self.id(src)]);
        assert_eq!(importing.trim(), "OK");
        let migrating = from.cli(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &self.id(dst)]);
        assert_eq!(migrating.trim(), "OK");
        let port = to.port().to_string();
        let moved = from.cli(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", key]);
        assert_eq!(moved.trim(), "OK");
        slot
    }

    /// Ends a migration: every master names `dst` as the slot's owner (the old one then answers
    /// MOVED).
    pub fn finish_migration(&self, slot: &str, dst: usize) {
        let owner = self.id(dst);
        for node in &self.nodes {
            let set = node.cli(&["CLUSTER", "SETSLOT", slot, "NODE", &owner]);
            assert_eq!(set.trim(), "OK");
        }
    }

    /// The sum of a command's calls over every running master (`INFO commandstats`).
    pub fn calls(&self, command: &str) -> u64 {
        self.nodes
            .iter()
            .filter_map(|n| n.try_cli(&["INFO", "commandstats"]))
            .map(|stats| command_calls(&stats, command))
            .sum()
    }
}

/// `calls=` of `cmdstat_<command>` in `INFO commandstats` output.
pub fn command_calls(stats: &str, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
