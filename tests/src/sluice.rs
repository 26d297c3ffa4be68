//! Runs the real `sluice` binary on loopback port 0 and hands back its addresses.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

pub use crate::binary::sluice_bin;

/// A `sluice` process with its rule file in a temporary directory.
pub struct Sluice {
    child: Child,
    /// `0.0.0.0:0` when gRPC is served on a Unix socket ([`Self::grpc_uds`]).
    pub grpc_addr: SocketAddr,
    /// The Unix socket gRPC is served on (`--grpc-uds`), if any.
    pub grpc_uds: Option<PathBuf>,
    pub http_addr: SocketAddr,
    pub config_dir: tempfile::TempDir,
    logs: Arc<Mutex<Vec<String>>>,
}

pub struct SluiceBuilder {
    files: Vec<(String, String)>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    /// A command the binary runs under (`prlimit --nofile=1024:1024 --`).
    wrapper: Vec<String>,
    /// Pass no `--config` (the rules come from elsewhere: xDS).
    no_config: bool,
}

impl SluiceBuilder {
    /// Start with one rule file, `rules.yaml`.
    pub fn new(yaml: &str) -> Self {
        Self {
            files: vec![("rules.yaml".into(), yaml.into())],
            args: Vec::new(),
            envs: Vec::new(),
            wrapper: Vec::new(),
            no_config: false,
        }
    }

    /// Starts without `--config`, for rules from an xDS server.
    pub fn without_config(mut self) -> Self {
        self.no_config = true;
        self
    }

    /// Runs the binary under `command` (its arguments end with `--`), e.g. `prlimit` to start it
    /// with fewer file descriptors.
    pub fn under(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    pub fn file(mut self, name: &str, yaml: &str) -> Self {
        self.files.push((name.into(), yaml.into()));
        self
    }

    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Use the Redis store at `url`. Unless the test sets `--store-budget-ms`, checks may wait
    /// up to a second for Redis: most tests are about decisions, and a machine busy compiling can
    /// hold Redis past the 10 ms production budget. The fault-injection tests set their own.
    pub fn redis(self, url: &str) -> Self {
        self.arg("--backend")
            .arg("redis")
            .arg("--redis-url")
            .arg(url)
    }

    /// Keep the runtime overrides (and what adaptive limits and standing add up) in the etcd at
    /// `url`.
    pub fn etcd_overrides(self, url: &str) -> Self {
        self.arg("--override-store")
            .arg("etcd")
            .arg("--etcd-endpoints")
            .arg(url)
    }

    /// Use a Redis Cluster through `seeds` (`host:port,host:port,…`), as [`Self::redis`] does.
    pub fn redis_cluster(self, seeds: &str) -> Self {
        self.redis(seeds).arg("--redis-type").arg("cluster")
    }

    pub fn start(mut self) -> Sluice {
        let redis = self
            .args
            .windows(2)
            .any(|w| w[0] == "--backend" && w[1] == "redis");
        if redis && !self.args.iter().any(|a| a == "--store-budget-ms") {
            self.args
                .extend(["--store-budget-ms".into(), "1000".into()]);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, yaml) in &self.files {
            std::fs::write(dir.path().join(name), yaml).expect("write rules");
        }
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(sluice_bin()),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(sluice_bin());
                cmd
            }
        };
        if !self.no_config {
            cmd.arg("--config").arg(dir.path());
        }
        cmd.args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log-format", "json"])
            .args(
                (!self.args.iter().any(|a| a == "--log-level"))
                    .then_some(["--log-level", "info"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.args)
            .env_clear()
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sluice");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("sluice listening") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().expect("log lock").push(line);
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice did not start within 30 s; its log:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        let field = |name: &str| -> SocketAddr {
            v["fields"][name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .parse()
                .expect("socket address")
        };
        let grpc = v["fields"]["grpc"].as_str().unwrap_or_default();
        let grpc_uds = grpc.strip_prefix("unix:").map(PathBuf::from);
        Sluice {
            grpc_addr: if grpc_uds.is_some() {
                SocketAddr::from(([0, 0, 0, 0], 0))
            } else {
                field("grpc")
            },
            grpc_uds,
            http_addr: field("http"),
            child,
            config_dir: dir,
            logs,
        }
    }
}

impl Sluice {
    pub fn builder(yaml: &str) -> SluiceBuilder {
        SluiceBuilder::new(yaml)
    }

    pub async fn grpc(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect gRPC")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// The process id (under a wrapper such as `prlimit`, which execs, the same process).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident memory, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `sluice_connections_closed_by_server_total{listener="grpc",reason="idle"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        sample_of(&self.metrics().await, sample)
    }

    /// One scrape of `/metrics`, for reading several samples at one instant with [`sample_of`].
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Wait (bounded) until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.logs().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until at least `count` log lines contain `needle`, and returns those lines
    /// (fewer when `within` passed first). The log is read from the process's output as it
    /// comes, so lines written just before may still be on their way.
    pub fn wait_for_logs(&self, needle: &str, count: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let lines: Vec<String> = self
                .logs()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until `/healthcheck` answers 200: the store is connected. Start-up does not
    /// wait for Redis beyond `--redis-timeout-ms`, so a test that needs Redis from its first
    /// check waits here.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let status = reqwest::get(self.url("/healthcheck"))
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            if status == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {within:?}: {:?}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn write_rules(&self, name: &str, yaml: &str) {
        // Write then rename, as editors and ConfigMap updates do, so the watcher never reads a
        // half-written file.
        let tmp = self.config_dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write rules");
        std::fs::rename(&tmp, self.config_dir.path().join(name)).expect("rename rules");
    }

    /// Send SIGTERM and wait (bounded) for the exit.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        wait_for_exit(&mut self.child, within)
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `sample` (a metric name with its labels) in a scrape; 0 when absent.
pub fn sample_of(scrape: &str, sample: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Run `sluice` with `args` until it exits by itself (bounded by `within`; killed after that) and
/// return its exit status and stderr.
pub fn run_to_exit(args: &[&str], within: Duration) -> (Option<ExitStatus>, String) {
    run_to_exit_under(&[], args, within)
}

/// [`run_to_exit`] with the binary run under `wrapper` (`prlimit --data=… --`).
pub fn run_to_exit_under(
    wrapper: &[&str],
    args: &[&str],
    within: Duration,
) -> (Option<ExitStatus>, String) {
    run_to_exit_with(wrapper, args, &[], within)
}

/// [`run_to_exit_under`] with these environment variables (and no others).
pub fn run_to_exit_with(
    wrapper: &[&str],
    args: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
) -> (Option<ExitStatus>, String) {
    let mut command = match wrapper.split_first() {
        None => Command::new(sluice_bin()),
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(sluice_bin());
            c
        }
    };
    let mut child = command
        .args(args)
        .env_clear()
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let stderr = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut out);
        out
    });
    let status = wait_for_exit(&mut child, within);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, reader.join().unwrap_or_default())
}

/// The exit status of `child` once it exits, or `None` if it is still running after `within`.
fn wait_for_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
