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
use std::future::Future;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::activity::{Activity, Closing};
use super::stream::{Listening, Stream};
use super::tls::Terminator;
use super::{CLOSE_GRACE, Limits};
use crate::log_throttle::LogThrottle;

/// How long to wait before accepting again after `accept` failed (typically out of file
/// descriptors): retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Connections evicted ahead at the cap: closing several at once lets a burst of newcomers in
/// without each waiting for one close.
const EVICT_AHEAD: usize = 8;
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
    accepted: Family<ListenerLabels, Counter>,
    open: Family<ListenerLabels, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    accept_errors: Family<ListenerLabels, Counter>,
}

impl ListenerStats {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_accepted",
            "Connections accepted, by listener (refused ones are counted as closed, not here)",
            self.accepted.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open, by listener",
            self.open.clone(),
        );
        registry.register(
            "connections_closed_by_server",
            "Connections the server closed or refused, by listener and reason (idle, \
             header_timeout, handshake_timeout, tls_handshake, message_timeout, keepalive, \
             max_age, evicted, refused)",
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
    /// The connection as accepted: TLS, when the listener terminates it, is still to be
    /// negotiated ([`Self::tls`]), within the handshake timeout of the connection's own task.
    pub stream: Stream,
    /// The client's address ([`super::stream::UNIX_PEER`] on a Unix socket).
    pub peer: SocketAddr,
    pub tls: Option<Arc<Terminator>>,
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
            self.registry.closed.notify_waiters();
        }
    }
}

/// The open connections of one listener, each until its task has ended and its socket is closed.
struct OpenSet {
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    gauge: Gauge,
    /// Signalled whenever a connection's socket has been closed.
    closed: Notify,
}

/// One listener's accept loop.
pub struct Acceptor {
    listener: Listening,
    tls: Option<Arc<Terminator>>,
    name: &'static str,
    max_connections: usize,
    limits: Arc<Limits>,
    registry: Arc<OpenSet>,
    next_id: u64,
    /// A connection taken from the kernel and waiting for room.
    pending: Option<(Stream, SocketAddr)>,
    epoch: Instant,
    stats: ListenerStats,
    refused_log: LogThrottle,
    accept_log: LogThrottle,
}

impl Acceptor {
    /// `name` labels metrics and logs (`grpc`, `http`).
    pub fn new(
        listener: impl Into<Listening>,
        name: &'static str,
        limits: Arc<Limits>,
        stats: ListenerStats,
    ) -> Self {
        let gauge = stats
            .open
            .get_or_create(&ListenerLabels { listener: name })
            .clone();
        Self {
            listener: listener.into(),
            tls: None,
            name,
            max_connections: limits.max_connections.max(1),
            limits,
            registry: Arc::new(OpenSet {
                conns: Mutex::new(HashMap::new()),
                gauge,
                closed: Notify::new(),
            }),
            next_id: 0,
            pending: None,
            epoch: Instant::now(),
            stats,
            refused_log: LogThrottle::new(WARN_INTERVAL),
            accept_log: LogThrottle::new(WARN_INTERVAL),
        }
    }

    /// Terminates TLS on every connection with `tls` (`None`: plaintext).
    #[must_use]
    pub fn with_tls(mut self, tls: Option<Arc<Terminator>>) -> Self {
        self.tls = tls;
        self
    }

    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Accepts connections until `shutdown` resolves, each served on its own task by `serve`
    /// (given the connection, the listener's stats and a signal that turns true when draining
    /// starts); then stops accepting (the listening socket closes at once), signals the drain,
    /// and returns once every connection has ended. `head_pending` as for [`Self::accept`].
    pub async fn run<F, Fut>(
        mut self,
        head_pending: bool,
        shutdown: impl Future<Output = ()>,
        mut serve: F,
    ) where
        F: FnMut(Accepted, ListenerStats, watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (drain_tx, drain_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.accept(head_pending) => {
                    connections.spawn(serve(accepted, self.stats.clone(), drain_rx.clone()));
                }
                // Reap finished connections so the set does not grow with every client that left.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(self);
        let _ = drain_tx.send(true);
        while connections.join_next().await.is_some() {}
    }

    pub fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// The next connection to serve. `head_pending` starts its header-read timer at once (HTTP/1,
    /// where the first request must arrive within it).
    ///
    /// Cancel-safe (callers `select!` on it): a connection taken from the kernel but not yet
    /// given room is kept here, and the next call carries on with it.
    pub async fn accept(&mut self, head_pending: bool) -> Accepted {
        loop {
            if self.pending.is_some() {
                // The connection stays in `pending` while waiting, so a cancelled call loses
                // nothing.
                let room = self.make_room().await;
                let Some((stream, peer)) = self.pending.take() else {
                    continue;
                };
                if !room {
                    self.stats.closed(self.name, "refused");
                    crate::warn_throttled!(
                        self.refused_log,
                        listener = self.name,
                        %peer,
                        max_connections = self.max_connections,
                        "connection refused: every connection is busy and the cap is reached"
                    );
                    drop(stream);
                    continue;
                }
                return self.admit(stream, peer, head_pending);
            }
            match self.listener.accept().await {
                Ok(accepted) => self.pending = Some(accepted),
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
                }
            }
        }
    }

    /// Registers a connection that has room.
    fn admit(&mut self, stream: Stream, peer: SocketAddr, head_pending: bool) -> Accepted {
        self.stats
            .accepted
            .get_or_create(&ListenerLabels {
                listener: self.name,
            })
            .inc();
        let activity = Arc::new(Activity::new(self.epoch, head_pending));
        let id = self.next_id;
        self.next_id += 1;
        self.registry.conns.lock().insert(id, Arc::clone(&activity));
        self.registry.gauge.inc();
        Accepted {
            stream,
            peer,
            tls: self.tls.clone(),
            activity,
            slot: Slot {
                id,
                registry: Arc::clone(&self.registry),
            },
        }
    }

    /// Whether a new connection may be served: below the cap, or once the connection idle the
    /// longest has been evicted and has closed its socket. Waiting for the close (not just asking
    /// for it) is what keeps the descriptors in use within the cap when a flood outpaces the
    /// connections' own tasks; the acceptor takes no one else meanwhile. With every connection
    /// busy, or a close that does not come within [`CLOSE_GRACE`], the newcomer is refused.
    async fn make_room(&self) -> bool {
        loop {
            let closed = self.registry.closed.notified();
            let mut closed = std::pin::pin!(closed);
            closed.as_mut().enable();
            {
                let open = self.registry.conns.lock();
                if open.len() < self.max_connections {
                    return true;
                }
                // Up to EVICT_AHEAD closing at once, so a flood finds room already made
                // instead of waiting for each close in turn.
                let closing = open.values().filter(|a| a.is_evicted()).count();
                if closing < EVICT_AHEAD {
                    // Idle the longest first; among equals, the oldest connection first, so a
                    // newcomer goes last even when a flood makes every connection equally new.
                    let mut idle: Vec<((u64, u64), &Arc<Activity>)> = open
                        .iter()
                        .filter(|(_, a)| !a.is_evicted())
                        .filter_map(|(id, a)| a.idle_since().map(|since| ((since, *id), a)))
                        .collect();
                    if idle.is_empty() && closing == 0 {
                        return false;
                    }
                    idle.sort_unstable_by_key(|(key, _)| *key);
                    for (_, activity) in idle.into_iter().take(EVICT_AHEAD - closing) {
                        activity.evict();
                        self.stats.closed(self.name, Closing::Evicted.as_str());
                    }
                }
            }
            if tokio::time::timeout(CLOSE_GRACE, closed).await.is_err() {
                return false;
            }
        }
    }
}
