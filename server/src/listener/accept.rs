//! The accept loop both listeners share: at most `max_connections` open at once, the idlest
//! connection closed to make room for a new one, failed accepts backed off, and every warning a
//! client can cause throttled.
//!
//! Evicting the idlest connection, rather than refusing the newcomer, is what keeps a listener
//! usable under an idle-socket flood: the flood's sockets are idle, so each new client takes the
//! place of the oldest of them. Only when every connection is busy is a newcomer refused (closed
//! at once), and then the busy ones are each bounded by the per-connection limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::Limits;
use super::activity::{Activity, Closing};
use crate::log_throttle::LogThrottle;

/// How long to wait before accepting again after `accept` failed (typically out of file
/// descriptors): retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one warning per this interval for each kind a client can cause.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    listener: &'static str,
    reason: &'static str,
}

/// Connection metrics of both listeners.
#[derive(Debug, Clone, Default)]
pub struct ListenerStats {
    open: Family<ListenerLabels, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
}

impl ListenerStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Client connections open, by listener",
            self.open.clone(),
        );
        registry.register(
            "connections_closed_by_server",
            "Connections the server closed or refused, by listener and reason (idle, \
             header_timeout, handshake_timeout, message_timeout, keepalive, evicted, refused)",
            self.closed.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (usually out of file descriptors), by listener",
            self.accept_errors.clone(),
        );
    }

    /// Counts a connection the server closed, and why.
    pub fn closed(&self, listener: &'static str, reason: &'static str) {
        self.closed
            .get_or_create(&ClosedLabels { listener, reason })
            .inc();
    }
}

/// A connection handed to its listener's serving code. Dropping it takes it off the registry.
pub struct Accepted {
    pub tcp: TcpStream,
    pub peer: SocketAddr,
    pub activity: Arc<Activity>,
    /// Keep it for as long as the connection is served.
    pub slot: Slot,
}

/// A connection's place in its listener's registry; dropping it frees the place.
pub struct Slot {
    id: u64,
    registry: Arc<OpenSet>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.registry.conns.lock().remove(&self.id).is_some() {
            self.registry.gauge.dec();
        }
    }
}

/// The open connections of one listener.
struct OpenSet {
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    gauge: Gauge,
}

/// One listener's accept loop.
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    max_connections: usize,
    limits: Arc<Limits>,
    registry: Arc<OpenSet>,
    next_id: u64,
    epoch: Instant,
    stats: ListenerStats,
    refused_log: LogThrottle,
    accept_log: LogThrottle,
}

impl Acceptor {
    /// `name` labels metrics and logs (`grpc`, `http`).
    pub fn new(
        listener: TcpListener,
        name: &'static str,
        limits: Arc<Limits>,
        stats: ListenerStats,
    ) -> Self {
        let gauge = stats
            .open
            .get_or_create(&ListenerLabels { listener: name })
            .clone();
        Self {
            listener,
            name,
            max_connections: limits.max_connections.max(1),
            limits,
            registry: Arc::new(OpenSet {
                conns: Mutex::new(HashMap::new()),
                gauge,
            }),
            next_id: 0,
            epoch: Instant::now(),
            stats,
            refused_log: LogThrottle::new(WARN_INTERVAL),
            accept_log: LogThrottle::new(WARN_INTERVAL),
        }
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The next connection to serve. `head_pending` starts its header-read timer at once (HTTP/1,
    /// where the first request must arrive within it).
    pub async fn accept(&mut self, head_pending: bool) -> Accepted {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    self.stats
                        .accept_errors
                        .get_or_create(&ListenerLabels {
                            listener: self.name,
                        })
                        .inc();
                    crate::warn_throttled!(
                        self.accept_log,
                        listener = self.name,
                        error = %e,
                        "cannot accept a connection; retrying shortly"
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            if !self.make_room() {
                self.stats.closed(self.name, "refused");
                crate::warn_throttled!(
                    self.refused_log,
                    listener = self.name,
                    %peer,
                    max_connections = self.max_connections,
                    "connection refused: every connection is busy and the cap is reached"
                );
                drop(tcp);
                continue;
            }
            let activity = Arc::new(Activity::new(self.epoch, head_pending));
            let id = self.next_id;
            self.next_id += 1;
            self.registry.conns.lock().insert(id, Arc::clone(&activity));
            self.registry.gauge.inc();
            return Accepted {
                tcp,
                peer,
                activity,
                slot: Slot {
                    id,
                    registry: Arc::clone(&self.registry),
                },
            };
        }
    }

    /// Whether a new connection may be served: below the cap, or after evicting the connection
    /// idle the longest. The scan runs only at the cap.
    fn make_room(&self) -> bool {
        let mut open = self.registry.conns.lock();
        if open.len() < self.max_connections {
            return true;
        }
        let idlest = open
            .iter()
            .filter_map(|(id, a)| a.idle_since().map(|since| (since, *id)))
            .min();
        let Some((_, id)) = idlest else {
            return false;
        };
        if let Some(activity) = open.remove(&id) {
            self.registry.gauge.dec();
            activity.evict();
            self.stats.closed(self.name, Closing::Evicted.as_str());
        }
        true
    }
}
