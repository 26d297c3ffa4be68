//! A real single-member `etcd` (Debian's `etcd-server`) for tests, on free loopback ports, gone
//! when the test is: the same stdin-watching wrapper as [`crate::redis`] stops it when this
//! process lets go of it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::free_port;

const BINARY: &str = "etcd";
const READY_WITHIN: Duration = Duration::from_secs(20);
const PORT_ATTEMPTS: usize = 5;

/// A running etcd, stopped on drop.
pub struct EtcdServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// # Panics
    /// When `etcd` is not installed or does not answer within 20 s.
    pub fn start() -> Self {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::tempdir().expect("a data directory for etcd");
            let (client, peer) = (free_port(), free_port());
            let mut child = spawn(client, peer, dir.path());
            match wait_ready(client, &mut child) {
                Ok(()) => {
                    return Self {
                        port: client,
                        child,
                        _dir: dir,
                    };
                }
                Err(e) => {
                    last_error = e;
                    stop(&mut child);
                }
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    /// `http://127.0.0.1:PORT`, its client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

fn spawn(client: u16, peer: u16, dir: &std::path::Path) -> Child {
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let args = [
        "--name".to_owned(),
        "test".to_owned(),
        "--data-dir".to_owned(),
        dir.to_string_lossy().into_owned(),
        "--listen-client-urls".to_owned(),
        client_url.clone(),
        "--advertise-client-urls".to_owned(),
        client_url,
        "--listen-peer-urls".to_owned(),
        peer_url.clone(),
        "--initial-advertise-peer-urls".to_owned(),
        peer_url.clone(),
        "--initial-cluster".to_owned(),
        format!("test={peer_url}"),
        "--logger".to_owned(),
        "zap".to_owned(),
        "--log-level".to_owned(),
        "error".to_owned(),
    ];
    let wrapper = r#"exec 3<&0
etcd "$@" </dev/null &
pid=$!
(read -r _ <&3; kill "$pid" 2>/dev/null) &
wait "$pid""#;
    Command::new("sh")
        .arg("-c")
        .arg(wrapper)
        .arg("sh")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sh to start {BINARY}: {e}"))
}

fn stop(child: &mut Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Polls `GET /health` until etcd reports itself healthy.
fn wait_ready(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let installed = Command::new(BINARY)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !installed {
                panic!(
                    "`{BINARY}` is not installed. Run the test command from the README, which \
                     installs it (Debian: `apt-get install etcd-server`)."
                );
            }
            return Err(format!("etcd on port {port} exited with {status}"));
        }
        if healthy(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "etcd on port {port} was not healthy within {READY_WITHIN:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let request = "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") && answer.contains("\"health\":\"true\"")
}
