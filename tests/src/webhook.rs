//! A webhook receiver for the notification tests: a real HTTP/1.1 server (or HTTPS, with a
//! certificate of the test's own CA) on a loopback port, on threads of its own (so its work never
//! shares the test's runtime), keeping every request it gets. It answers 200, or holds its
//! answers until released, which makes a receiver that hangs when it is never released.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    /// Answers wait while this is true.
    held: Mutex<bool>,
    released: Condvar,
    stop: AtomicBool,
    connections: AtomicUsize,
}

/// A running receiver, stopped on drop.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// A receiver that answers every request 200 at once.
    pub fn start() -> Self {
        Self::with_answers_held(false)
    }

    /// A receiver that reads each request and answers only once [`release`](Self::release)d:
    /// never, for a receiver that hangs.
    pub fn held() -> Self {
        Self::with_answers_held(true)
    }

    /// A receiver that answers 200 over TLS, with the certificate and key in these PEM files.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        let certs = CertificateDer::pem_file_iter(cert)
            .expect("certificate file")
            .collect::<Result<Vec<_>, _>>()
            .expect("certificates");
        let key = PrivateKeyDer::from_pem_file(key).expect("private key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server certificate");
        Self::listen(false, Some(Arc::new(config)))
    }

    fn with_answers_held(held: bool) -> Self {
        Self::listen(held, None)
    }

    fn listen(held: bool, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            held: Mutex::new(held),
            ..Shared::default()
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::clone(&accepting);
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(stream, &shared),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(session, stream), &shared);
                    }
                });
            }
        });
        Receiver { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host:port`, as Sluice names the sink in its metrics (`webhook:host:port`).
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Lets every held answer (and every later one) go.
    pub fn release(&self) {
        *self.shared.held.lock().expect("lock") = false;
        self.shared.released.notify_all();
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits (bounded by `within`, polling) until `done` holds for the requests so far; returns
    /// them either way.
    pub fn wait_for(&self, within: Duration, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if done(&received) || Instant::now() >= deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.release();
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads requests from one connection (keep-alive) and answers each 200, once not held.
fn serve(stream: impl Read + Write, shared: &Shared) {
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        shared.received.lock().expect("lock").push(request);
        let mut held = shared.held.lock().expect("lock");
        while *held {
            held = shared.released.wait(held).expect("lock");
        }
        drop(held);
        let writer = reader.get_mut();
        if shared.stop.load(Ordering::Acquire)
            || writer
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .and_then(|()| writer.flush())
                .is_err()
        {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<impl Read>) -> Option<Received> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let path = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(Some(0), |(_, v)| v.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        headers,
        body,
    })
}
