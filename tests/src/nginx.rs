//! A real `nginx` (Debian's package, with `libnginx-mod-http-lua` for the OpenResty-style
//! example) on a free loopback port, and a small upstream app for it to protect.
//!
//! The example configurations are run as shipped, with three exact substitutions: the
//! addresses of Sluice, of the app and of the listener. Each must occur exactly once, so an
//! example that drifts from what the tests expect fails here rather than in a reader's hands.
//! (openresty.conf names Sluice twice, for its checks and for its reports: [`point_at`].) The
//! prefix gets a copy of `examples/nginx/lua/`, as the README has readers make one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::redis::free_port;

/// The addresses the examples name, replaced in tests.
pub const EXAMPLE_SLUICE: &str = "server 127.0.0.1:8080;";
pub const EXAMPLE_APP: &str = "server 127.0.0.1:5678;";
pub const EXAMPLE_LISTEN: &str = "listen 127.0.0.1:8000;";
/// Where openresty.conf posts its reports (`sluice_reports.start`).
pub const EXAMPLE_SLUICE_REPORTS: &str = "sluice = \"127.0.0.1:8080\"";

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// Replaces `from` with `to` in `text`, insisting it occurs exactly once.
pub fn substitute(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in the configuration"
    );
    text.replace(from, to)
}

/// An example with Sluice's and the app's addresses filled in: the `upstream` blocks, and the
/// reporter's address where the example has one.
pub fn point_at(text: &str, sluice: SocketAddr, app: SocketAddr) -> String {
    let text = substitute(text, EXAMPLE_SLUICE, &format!("server {sluice};"));
    let text = substitute(&text, EXAMPLE_APP, &format!("server {app};"));
    if text.contains(EXAMPLE_SLUICE_REPORTS) {
        substitute(
            &text,
            EXAMPLE_SLUICE_REPORTS,
            &format!("sluice = \"{sluice}\""),
        )
    } else {
        text
    }
}

impl Nginx {
    /// Runs `conf` (an example with Sluice's and the app's addresses filled in) with the prefix
    /// in a temporary directory.
    pub fn start(conf: &str) -> Nginx {
        let mut last_error = String::new();
        // Another process may take the probed port before nginx binds it: retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let conf = substitute(conf, EXAMPLE_LISTEN, &format!("listen 127.0.0.1:{port};"));
            let dir = tempfile::tempdir().expect("temp dir");
            for sub in ["logs", "temp", "lua"] {
                std::fs::create_dir(dir.path().join(sub)).expect("mkdir");
            }
            let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx/lua");
            for entry in std::fs::read_dir(&lua).expect("examples/nginx/lua") {
                let path = entry.expect("entry").path();
                let name = path.file_name().expect("a file name");
                std::fs::copy(&path, dir.path().join("lua").join(name)).expect("copy Lua");
            }
            let conf_path = dir.path().join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let child = Command::new(nginx_bin())
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn nginx");
            let mut nginx = Nginx {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir,
            };
            match nginx.wait_ready() {
                Ok(()) => return nginx,
                Err(e) => last_error = e,
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                return Err(format!(
                    "exited with {status}: {stderr}{}",
                    self.error_log()
                ));
            }
            if TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("not listening after 10 s{}", self.error_log()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /orders` through this nginx as the app `app_id` (`X-App-Id`), as the examples' rules
    /// key requests; a failure to get any answer panics with nginx's error log.
    pub async fn get_orders(&self, client: &reqwest::Client, app_id: &str) -> reqwest::Response {
        client
            .get(self.url("/orders"))
            .header("x-app-id", app_id)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET through nginx: {e}{}", self.error_log()))
    }

    /// nginx's error log so far, for failure messages.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/error.log"))
            .map(|l| format!("\nerror.log:\n{l}"))
            .unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_bin() -> &'static Path {
    for p in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return Path::new(p);
        }
    }
    panic!("nginx is not installed: scripts/test.sh installs Debian's nginx package")
}

/// A tiny HTTP/1.1 app that answers every request `200 hello from upstream` and counts them.
/// Its status and how long it takes to answer can be changed while it runs.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    arrivals: Arc<Mutex<Vec<(SystemTime, String)>>>,
    answer: Arc<Answer>,
    stop: Arc<AtomicBool>,
}

/// The status the app answers with, and after how many milliseconds.
struct Answer {
    status: AtomicU16,
    delay_ms: AtomicU64,
}

pub const UPSTREAM_BODY: &str = "hello from upstream\n";

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let hits = Arc::new(AtomicUsize::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer = Arc::new(Answer {
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
        });
        let (h, a, s, ans) = (
            Arc::clone(&hits),
            Arc::clone(&arrivals),
            Arc::clone(&stop),
            Arc::clone(&answer),
        );
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, a, ans) = (Arc::clone(&h), Arc::clone(&a), Arc::clone(&ans));
                        std::thread::spawn(move || serve(stream, &h, &a, &ans));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Upstream {
            addr,
            hits,
            arrivals,
            answer,
            stop,
        }
    }

    /// From now on, answer with `status` (the body stays the same).
    pub fn set_status(&self, status: u16) {
        self.answer.status.store(status, Ordering::SeqCst);
    }

    /// From now on, answer each request `delay` after it arrived.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.answer.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// The most requests with `X-App-Id: app_id` that reached the app within one second of
    /// the Unix clock (the windows Sluice's per-second limits count in). A request arrives a
    /// little after Sluice decided it, so one stamped within `skew` of a second's start may have
    /// been counted by Sluice in the second before: it is counted there when that second has room
    /// under `limit`, seconds taken in order (the assignment that keeps every second lowest).
    pub fn busiest_second(&self, app_id: &str, limit: usize, skew: Duration) -> usize {
        let mut stamps: Vec<Duration> = self
            .arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, app)| app == app_id)
            .map(|(at, _)| at.duration_since(UNIX_EPOCH).unwrap_or_default())
            .collect();
        stamps.sort();
        let mut per_second = std::collections::BTreeMap::<u64, usize>::new();
        for at in stamps {
            let second = at.as_secs();
            let early = at - Duration::from_secs(second) < skew;
            let before = second
                .checked_sub(1)
                .map(|s| *per_second.get(&s).unwrap_or(&0));
            match before {
                Some(n) if early && n < limit => *per_second.entry(second - 1).or_default() += 1,
                _ => *per_second.entry(second).or_default() += 1,
            }
        }
        per_second.into_values().max().unwrap_or(0)
    }

    /// Requests that reached the app.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    stream: TcpStream,
    hits: &AtomicUsize,
    arrivals: &Mutex<Vec<(SystemTime, String)>>,
    answer: &Answer,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        // Headers only: the examples' requests have no body.
        let mut length = 0usize;
        let mut app_id = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-app-id") {
                    app_id = v.trim().to_owned();
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((SystemTime::now(), app_id));
        hits.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(
            answer.delay_ms.load(Ordering::SeqCst),
        ));
        let status = answer.status.load(Ordering::SeqCst);
        // The reason phrase is informative only (RFC 9112 §4); NGINX passes it on.
        let reason = if status == 200 { "OK" } else { "Answer" };
        let text = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{UPSTREAM_BODY}",
            UPSTREAM_BODY.len()
        );
        if writer.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}
