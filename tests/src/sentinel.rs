//! A master, its replica and Sentinel processes watching them, on loopback, with timings short
//! enough for a test: a master silent for 400 ms is down, and the replica is promoted at once.

use std::time::Duration;

use crate::node::{RedisNode, base_args, free_port_pair, wait_until};
use crate::tls::Pki;

pub const MASTER_NAME: &str = "sluice-primary";

pub struct SentinelSetup {
    /// `[0]` starts as master, `[1]` as its replica.
    pub data: Vec<RedisNode>,
    pub sentinels: Vec<RedisNode>,
    _dir: tempfile::TempDir,
}

impl SentinelSetup {
    pub fn start(sentinels: usize) -> Self {
        Self::start_with(sentinels, None)
    }

    /// As [`start`](Self::start), with the data nodes and the sentinels speaking TLS only (the
    /// sentinels reach the data nodes over TLS too) with `tls`'s certificates when given.
    pub fn start_with(sentinels: usize, tls: Option<&Pki>) -> Self {
        let access = tls.map(Pki::cli_access).unwrap_or_default();
        let dir = tempfile::tempdir().expect("sentinel directory");
        let persistent = |port: u16, name: &str| {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).expect("node directory");
            let mut args = base_args(port, &d);
            args.extend(
                ["--appendonly", "yes", "--appendfsync", "no"]
                    .iter()
                    .map(|s| s.to_string()),
            );
            if let Some(pki) = tls {
                pki.serve_tls_only(&mut args, false);
            }
            args
        };
        let master_port = free_port_pair(0);
        let master = RedisNode::start(
            master_port,
            persistent(master_port, "master"),
            access.clone(),
        );
        let replica_port = free_port_pair(0);
        let mut args = persistent(replica_port, "replica");
        args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master_port.to_string(),
        ]);
        let replica = RedisNode::start(replica_port, args, access.clone());
        assert!(
            wait_until(Duration::from_secs(15), || {
                replica
                    .try_cli(&["INFO", "replication"])
                    .is_some_and(|i| i.contains("master_link_status:up"))
            }),
            "the replica never synchronised"
        );
        let quorum = sentinels / 2 + 1;
        let sentinels = (0..sentinels)
            .map(|i| {
                let port = free_port_pair(0);
                let conf = dir.path().join(format!("sentinel{i}.conf"));
                let listen = match tls {
                    Some(pki) => pki.config_lines(port),
                    None => format!("port {port}\n"),
                };
                std::fs::write(
                    &conf,
                    format!(
                        "{listen}bind 127.0.0.1\ndir {}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 400\n\
                         sentinel failover-timeout {MASTER_NAME} 3000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir.path().display()
                    ),
                )
                .expect("sentinel config");
                let args = vec![
                    conf.to_string_lossy().into_owned(),
                    "--sentinel".into(),
                    "--loglevel".into(),
                    "warning".into(),
                ];
                RedisNode::start(port, args, access.clone())
            })
            .collect();
        let setup = Self {
            data: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        assert!(
            wait_until(Duration::from_secs(15), || setup.sentinels.iter().all(
                |s| s
                    .try_cli(&["SENTINEL", "REPLICAS", MASTER_NAME])
                    .is_some_and(|r| r.contains(&replica_port.to_string()))
            )),
            "the sentinels never saw the replica"
        );
        setup
    }

    /// The reference's Sentinel address: `master_name,host:port,…`.
    pub fn address(&self) -> String {
        let mut parts = vec![MASTER_NAME.to_string()];
        parts.extend(self.sentinels.iter().map(RedisNode::addr));
        parts.join(",")
    }

    /// The port the first answering sentinel names as master.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let out = s.try_cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])?;
            out.lines().nth(1)?.trim().parse().ok()
        })
    }

    /// The data node listening on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisNode {
        self.data
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("a data node of this setup")
    }
}
