//! What both listeners (gRPC and HTTP) share: the bounds on connections and on what one
//! connection may hold, the accept loop that keeps them ([`accept`]), each connection's activity
//! and expiry ([`activity`]), the per-connection buffer budget ([`budget`]), the
//! file-descriptor limit ([`nofile`]), the sockets listened on and each connection's stream
//! ([`stream`]), and TLS termination with certificate rotation ([`tls`]).
//!
//! Every bound holds whatever a client sends: a client can open at most `max_connections`
//! connections per listener (the idlest is closed to make room for a newcomer); on one
//! connection, at most `max_concurrent_streams` requests at once, each with at most
//! `max_header_bytes` of headers, and at most `connection_buffer_bytes` of request data held
//! before it is processed; a request head, message or body that does not arrive in time is
//! dropped; an idle connection is closed; an unresponsive HTTP/2 peer is found by a ping and
//! closed. `docs/security.md` lists each with its setting and the memory it bounds.
//!
//! Boundary: knows connections, bytes and time, never what a connection carries (no limiter, no
//! wire types).

pub mod accept;
pub mod activity;
pub mod budget;
pub mod nofile;
pub mod stream;
pub mod tls;

use std::time::Duration;

pub use accept::{Accepted, Acceptor, ListenerStats};
pub use activity::{Activity, Closing, InFlight, Tracked};
pub use stream::{Listening, Stream};

/// Per-listener bounds (the same for gRPC and HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on one listener.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    /// Envoy opens another connection when one is full, so this bounds what one connection can
    /// hold without bounding throughput.
    pub max_concurrent_streams: u32,
    /// Bytes of one request's headers: HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`, HTTP/1's head.
    pub max_header_bytes: u32,
    /// Request bytes one connection may have sent and not yet had processed: the HTTP/2
    /// connection flow-control window, which is returned to the client only as messages are
    /// consumed; on the gRPC listener also the budget for the headers of its open streams.
    pub connection_buffer_bytes: u32,
    /// From accept to the end of the HTTP/2 connection preface (gRPC).
    pub handshake_timeout: Duration,
    /// From the first byte of an HTTP/1 request head (or from accept, for the first request) to
    /// its end.
    pub header_read_timeout: Duration,
    /// From a request's headers to the end of its message (gRPC) or body (HTTP).
    pub message_timeout: Duration,
    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY first).
    pub idle_timeout: Duration,
    /// An HTTP/2 connection silent for this long is sent a PING...
    pub keepalive_interval: Duration,
    /// ...and closed when its answer does not come within this.
    pub keepalive_timeout: Duration,
    /// An HTTP/2 connection open this long (give or take a tenth, so a fleet's connections do not
    /// all age together) is sent a GOAWAY: its client reconnects, and a replica added since gets
    /// its share. `None`: connections never age.
    pub max_connection_age: Option<Duration>,
    /// After the GOAWAY, how long its calls in flight may take before the connection is closed.
    pub max_connection_age_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_concurrent_streams: 100,
            max_header_bytes: 16 * 1024,
            connection_buffer_bytes: 128 * 1024,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            max_connection_age: Some(Duration::from_secs(24 * 3600)),
            max_connection_age_grace: Duration::from_secs(3600),
        }
    }
}

impl Limits {
    /// The HTTP/2 per-stream window: one whole message of `max_message` bytes with its gRPC
    /// prefix, within the connection's budget.
    pub fn stream_window(&self, max_message: usize) -> u32 {
        let want = u32::try_from(max_message + 5).unwrap_or(u32::MAX);
        want.clamp(65_535, self.connection_window())
    }

    /// When this connection is to be aged out: `max_connection_age` less or more up to a tenth,
    /// at random. Never, without an age.
    pub fn connection_age(&self) -> Option<Duration> {
        let age = self.max_connection_age?;
        let mut bytes = [0u8; 8];
        // Without randomness, the age as configured: only the spread is lost.
        let _ = getrandom::fill(&mut bytes);
        let unit = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
        Some(age.mul_f64(0.9 + 0.2 * unit))
    }

    /// The HTTP/2 connection window: the per-connection budget, never below HTTP/2's initial
    /// 65,535 bytes.
    pub fn connection_window(&self) -> u32 {
        self.connection_buffer_bytes.max(65_535)
    }
}

/// How long a connection being closed by the server (idle, evicted, unresponsive) may take to
/// finish: GOAWAY is sent and the connection dropped after this even if the client never reads.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
