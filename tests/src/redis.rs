//! A real `redis-server` for tests, on a free loopback port, gone when the test is.
//!
//! The server runs under a small `sh` wrapper that holds the read end of a pipe from this
//! process and stops Redis when that pipe closes. Dropping a [`RedisServer`] closes it, and so
//! does the test process exiting for any reason, so a server kept in a `static` (which is never
//! dropped) does not outlive its test binary either.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";
/// How long a fresh server may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Attempts at a free port before giving up (another process can take a port between our probe
/// and Redis binding it).
const PORT_ATTEMPTS: usize = 5;

/// Who may connect.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No password.
    #[default]
    None,
    /// `requirepass`: the default user needs this password.
    Password(String),
    /// An ACL user with full access; the default user is disabled.
    User { name: String, password: String },
}

/// A running `redis-server`, stopped on drop.
pub struct RedisServer {
    port: u16,
    auth: Auth,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::start_with(Auth::None)
    }

    /// Starts a server that requires `auth`.
    ///
    /// # Panics
    /// When `redis-server` is not installed or does not come up within 10 s.
    pub fn start_with(auth: Auth) -> Self {
        let dir = tempfile::tempdir().expect("create a directory for redis-server");
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut child = spawn(port, &auth, dir.path());
            match wait_ready(port, &mut child) {
                Ok(()) => {
                    return Self {
                        port,
                        auth,
                        child: Some(child),
                        dir,
                    };
                }
                Err(e) => {
                    last_error = e;
                    stop(&mut child);
                }
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` URL with the server's credentials, if any.
    pub fn url(&self) -> String {
        match &self.auth {
            Auth::None => self.url_without_auth(),
            Auth::Password(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            Auth::User { name, password } => {
                format!("redis://{name}:{password}@127.0.0.1:{}", self.port)
            }
        }
    }

    /// `redis://` URL without credentials.
    pub fn url_without_auth(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)), empty.
    ///
    /// # Panics
    /// When it does not come up within 10 s (another process took the port meanwhile).
    pub fn restart(&mut self) {
        self.stop();
        let mut child = spawn(self.port, &self.auth, self.dir.path());
        if let Err(e) = wait_ready(self.port, &mut child) {
            stop(&mut child);
            panic!("redis-server did not restart: {e}");
        }
        self.child = Some(child);
    }

    /// Stops the server now and waits until it has exited, so its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn spawn(port: u16, auth: &Auth, dir: &Path) -> Child {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.to_string_lossy(),
        "--loglevel",
        "warning",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match auth {
        Auth::None => {}
        Auth::Password(password) => args.extend(["--requirepass".into(), password.clone()]),
        Auth::User { name, password } => args.extend([
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
            name.clone(),
            "on".into(),
            format!(">{password}"),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ]),
    }
    spawn_watched(&args)
}

/// Runs `redis-server ARGS` so that it stops when this process lets go of it: Redis runs in the
/// background of a `sh` wrapper, and a watcher stops it when the wrapper's stdin (our pipe)
/// reaches end of file. The wrapper exits when Redis does, whatever the reason. Close the
/// child's stdin (or drop the child) to stop Redis.
pub fn spawn_watched(args: &[String]) -> Child {
    // (A background job's stdin is /dev/null in a non-interactive shell, hence the copy on fd 3.)
    let wrapper = r#"exec 3<&0
redis-server "$@" </dev/null &
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

/// Closes the wrapper's stdin (which stops Redis) and waits for the wrapper to exit.
fn stop(child: &mut Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

/// Polls until the server answers on `port`, failing early if it exits (port taken, bad
/// argument, binary missing).
fn wait_ready(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_WITHIN;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            if !binary_installed() {
                panic!(
                    "`{BINARY}` is not installed. Run the test command from the README, \
                     which installs it (Debian/Ubuntu: `apt-get install redis-server`)."
                );
            }
            return Err(format!("redis-server on port {port} exited with {status}"));
        }
        if answers_ping(addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "redis-server on port {port} did not answer within {READY_WITHIN:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Any reply counts: `+PONG`, or `-NOAUTH` from a server that wants a password.
fn answers_ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(stream.read(&mut first), Ok(1) if first[0] == b'+' || first[0] == b'-')
}

fn binary_installed() -> bool {
    Command::new(BINARY)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl RedisServer {
    /// Run `redis-cli` against this server (Debian's redis-server package brings it) and return
    /// its standard output. Only for servers without authentication.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?} failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key in the server, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.cli(&["--scan"]).lines().map(str::to_string).collect();
        keys.sort();
        keys
    }
}
