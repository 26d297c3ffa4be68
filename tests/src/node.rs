//! One `redis-server` process with any arguments (a Cluster node, a Sentinel, a TLS server, a
//! persistent standalone), and the faults tests inject into it: kill (`SIGKILL`), hang
//! (`SIGSTOP`, undone by `SIGCONT`) and restart on the same port with the same data directory.
//!
//! Like [`crate::redis::RedisServer`], the process is stopped when the node is dropped or the test
//! process exits ([`crate::redis::spawn_watched`]).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::redis::spawn_watched;

/// How a test reaches a node with `redis-cli`.
#[derive(Debug, Clone, Default)]
pub struct CliAccess {
    /// `--user`, `--pass`.
    pub auth: Option<(String, String)>,
    /// `--tls --cacert CA --cert CERT --key KEY` (the node only serves TLS).
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

pub struct RedisNode {
    port: u16,
    args: Vec<String>,
    access: CliAccess,
    child: Option<Child>,
    pid: u32,
    paused: bool,
}

const READY_WITHIN: Duration = Duration::from_secs(15);

impl RedisNode {
    /// Starts `redis-server ARGS` (which must make it listen on `port`) and waits until it
    /// answers `PING` through `redis-cli` with `access`.
    pub fn start(port: u16, args: Vec<String>, access: CliAccess) -> Self {
        let mut node = Self {
            port,
            args,
            access,
            child: None,
            pid: 0,
            paused: false,
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let mut child = spawn_watched(&self.args);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "redis-server on port {} exited at start-up with {status}: {:?}",
                    self.port, self.args
                );
            }
            if let Some(pid) = self.try_cli(&["INFO", "server"]).and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .and_then(|p| p.trim().parse().ok())
            }) {
                self.pid = pid;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer within {READY_WITHIN:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `SIGKILL`: the process dies at once; connections are reset.
    pub fn kill(&mut self) {
        // Only a process of ours: after a kill its pid may belong to anything.
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.resume();
        signal("KILL", self.pid);
        let _ = child.wait();
    }

    /// `SIGSTOP`: the process hangs; connections stay open and nothing answers.
    pub fn pause(&mut self) {
        if self.child.is_some() {
            signal("STOP", self.pid);
            self.paused = true;
        }
    }

    /// `SIGCONT` after [`pause`](Self::pause).
    pub fn resume(&mut self) {
        if self.paused {
            signal("CONT", self.pid);
            self.paused = false;
        }
    }

    /// Starts the node again (after [`kill`](Self::kill)), same port, same arguments and data.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis-cli ARGS` against this node; panics unless it ran.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|| panic!("redis-cli {args:?} on port {} failed", self.port))
    }

    /// `redis-cli ARGS`, or `None` if it could not run or the server did not answer.
    pub fn try_cli(&self, args: &[&str]) -> Option<String> {
        cli_output(self.port, &self.access, args)
    }
}

/// Runs `redis-cli` against `port`; `None` when it fails or times out (a paused node).
pub fn cli_output(port: u16, access: &CliAccess, args: &[&str]) -> Option<String> {
    let mut cmd = Command::new("timeout");
    cmd.args(["5", "redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((user, pass)) = &access.auth {
        cmd.args(["--user", user, "--pass", pass, "--no-auth-warning"]);
    }
    if let Some((ca, cert, key)) = &access.tls {
        cmd.arg("--tls")
            .arg("--cacert")
            .arg(ca)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key);
    }
    let out = cmd.args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && !text.starts_with("Could not connect")).then_some(text)
}

fn signal(name: &str, pid: u32) {
    if pid != 0 {
        let _ = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status();
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        // A stopped process would never see the wrapper's SIGTERM.
        self.resume();
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// A loopback port `p` with `p` and `p + offset` both free (a Cluster node also listens on its
/// port + 10000), chosen below the ephemeral range so `p + offset` stays a valid port.
pub fn free_port_pair(offset: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Spread tests of one run over the range; the probe below skips taken ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() % 5000) as u16;
    for _ in 0..5000 {
        let p = 20_000 + (seed + NEXT.fetch_add(7, Ordering::Relaxed)) % 10_000;
        let free = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if free(p) && free(p + offset) {
            return p;
        }
    }
    panic!("no free loopback port pair");
}

/// Polls `cond` every 20 ms until it holds or `within` passes; returns whether it held.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether something accepts TCP connections on `port`.
pub fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// The arguments every test node shares: loopback only, no RDB snapshots, quiet logs, its
/// directory.
pub fn base_args(port: u16, dir: &Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        &dir.to_string_lossy(),
        "--loglevel",
        "warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}
