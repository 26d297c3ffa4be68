//! The gRPC listener: accepts connections, serves HTTP/2 on each with `h2`, answers
//! `ShouldRateLimit` itself ([`unary`]) and hands `grpc.health.v1.Health` to tonic-health
//! ([`bridge`]), and drains on shutdown.
//!
//! **Why not tonic's server, or hyper's.** A check's own work (matching, counting) is a few
//! microseconds; profiles showed most of a call's CPU in the layers around it (see
//! docs/performance.md). tonic's `transport::Server` wraps every call in a router, a timeout
//! layer, error recovery and boxing; hyper spawns a task per call, so each call's wake-ups may
//! cross worker threads, and its body and codec layers copy large futures around. Here one task
//! per connection drives the connection and every call on it: a call is a future in that task,
//! its message is read straight from the stream, decoded with prost, decided, and written back as
//! one data frame and the trailers. Nothing is spawned per call.
//!
//! One connection's calls therefore share one worker thread at a time. Envoy opens a connection
//! per worker thread, and other connections are served by other workers, so the cores are used
//! as before; a call waiting for Redis does not hold the others up.
//!
//! A client's `grpc-timeout` is not enforced here: Envoy stops waiting by itself, and every
//! store call is already bounded by the store's own timeout.
//!
//! **Bounds** ([`crate::listener::Limits`]). The connection cap, idle and eviction are the
//! listener's; on top of them each connection here has: a handshake timeout; at most
//! `max_concurrent_streams` calls in flight, counting calls whose stream the client already reset
//! (at that count no new stream is taken, so rapid resets cannot pile up work: h2 itself closes
//! a connection whose reset streams pile up unaccepted); a budget for the headers of its calls in
//! flight (a stream over it is refused); flow-control window returned only once a message is
//! whole, so the connection window bounds what a client can park in half-sent messages; a
//! message timeout per stream; and keepalive pings when the client falls silent.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::future::poll_fn;
use futures::stream::FuturesUnordered;
use http::{Request, Response};
use tokio::sync::watch;
use tonic::server::NamedService;
use tower::Service;

pub use super::bridge::CallBody;
use super::coalesce::Coalesce;
use super::service::RlsService;
use super::{bridge, keepalive, unary};
use crate::listener::budget::{self, Budget, Charge};
use crate::listener::{Accepted, Acceptor, CLOSE_GRACE, Closing, Limits, Tracked};
use crate::storage::Store;

/// The path of the one method Sluice answers itself.
const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// A tonic service the listener can hand calls to (tonic-health's server is one).
pub trait TonicService:
    Service<
        Request<CallBody>,
        Response = Response<tonic::body::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> TonicService for T where
    T: Service<
            Request<CallBody>,
            Response = Response<tonic::body::Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// What the listener serves: the rate-limit service, and the health service (a tonic service).
pub struct Routes<S, H> {
    rls: Arc<RlsService<S>>,
    health: H,
    limits: Arc<Limits>,
}

impl<S, H: Clone> Clone for Routes<S, H> {
    fn clone(&self) -> Self {
        Self {
            rls: Arc::clone(&self.rls),
            health: self.health.clone(),
            limits: Arc::clone(&self.limits),
        }
    }
}

impl<S, H> Routes<S, H>
where
    S: Store,
    H: TonicService,
{
    pub fn new(rls: RlsService<S>, health: H, limits: Arc<Limits>) -> Self {
        Self {
            rls: Arc::new(rls),
            health,
            limits,
        }
    }

    /// One call's future, run by its connection's task. `held` is the call's share of the
    /// connection's header budget, given back when the call ends.
    fn call(
        &self,
        request: Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
        held: Charge,
    ) -> Call {
        let path = request.uri().path();
        let message_timeout = self.limits.message_timeout;
        if path == SHOULD_RATE_LIMIT {
            let rls = Arc::clone(&self.rls);
            return Box::pin(async move {
                unary::should_rate_limit(&rls, request, respond, message_timeout).await;
                drop(held);
            });
        }
        // A gRPC path is `/<package.Service>/<Method>`; tonic-health matches its methods itself.
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        if service == H::NAME {
            let health = self.health.clone();
            Box::pin(async move {
                bridge::serve(health, request, respond, message_timeout).await;
                drop(held);
            })
        } else {
            let status = tonic::Status::unimplemented(format!("unknown method {path:?}"));
            Box::pin(async move { unary::answer_status(respond, &status) })
        }
    }

    /// HTTP/2 settings for every connection.
    fn h2_builder(&self) -> h2::server::Builder {
        let limits = &self.limits;
        let mut builder = h2::server::Builder::new();
        builder
            .max_concurrent_streams(limits.max_concurrent_streams)
            .initial_window_size(limits.stream_window(self.rls.max_message_bytes()))
            .initial_connection_window_size(limits.connection_window())
            .max_header_list_size(limits.max_header_bytes)
            // Answers are a few hundred bytes; a client that stops reading them cannot make the
            // server queue more than this per stream.
            .max_send_buffer_size(64 * 1024);
        builder
    }
}

/// Serves `routes` on the connections `acceptor` takes until `shutdown` resolves; then stops
/// accepting (the listening socket is closed at once), asks every connection to finish its calls
/// in flight (an HTTP/2 GOAWAY), and returns once they all have.
pub async fn serve<S, H>(
    acceptor: Acceptor,
    routes: Routes<S, H>,
    shutdown: impl Future<Output = ()>,
) where
    S: Store,
    H: TonicService,
{
    acceptor
        .run(false, shutdown, |accepted, stats, drain| {
            serve_connection(accepted, routes.clone(), stats, drain)
        })
        .await;
}

/// Drives one connection and every call on it until the client leaves or, once draining, until
/// the calls in flight have been answered; or until the connection expires (idle, evicted, a
/// silent peer), when it is sent a GOAWAY and dropped after [`CLOSE_GRACE`].
async fn serve_connection<S, H>(
    accepted: Accepted,
    routes: Routes<S, H>,
    stats: crate::listener::ListenerStats,
    mut drain: watch::Receiver<bool>,
) where
    S: Store,
    H: TonicService,
{
    // The connection keeps its place in the listener's registry until this task ends.
    let Accepted {
        stream,
        tls,
        activity,
        slot: _slot,
        ..
    } = accepted;
    if let Err(e) = stream.set_nodelay() {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
    }
    let limits = Arc::clone(&routes.limits);
    let expired = activity.expired(&limits);
    let mut expired = std::pin::pin!(expired);
    let h2 = routes.h2_builder();
    // TLS, then the HTTP/2 preface, both within the handshake timeout.
    let handshake = async {
        let stream = match &tls {
            Some(tls) => tls
                .accept(stream)
                .await
                .map_err(|e| ("tls_handshake", e.to_string()))?,
            None => stream,
        };
        let io = Tracked::new(Coalesce::new(stream), Arc::clone(&activity));
        h2.handshake(io)
            .await
            .map_err(|e| ("handshake", e.to_string()))
    };
    let handshake = tokio::time::timeout(limits.handshake_timeout, handshake);
    let mut conn = tokio::select! {
        done = handshake => match done {
            Ok(Ok(conn)) => conn,
            Ok(Err((stage, e))) => {
                tracing::debug!(error = %e, stage, "gRPC connection ended during its handshake");
                if stage == "tls_handshake" {
                    stats.closed("grpc", stage);
                }
                return;
            }
            Err(_) => {
                stats.closed("grpc", "handshake_timeout");
                return;
            }
        },
        // Evicted before it even finished its handshake: the listener needs the descriptor.
        why = &mut expired => {
            if why != Closing::Evicted {
                stats.closed("grpc", why.as_str());
            }
            return;
        }
    };
    let budget = Arc::new(Budget::new(limits.connection_buffer_bytes as usize));
    let keepalive = keepalive::run(conn.ping_pong(), &activity, &limits);
    let mut keepalive = std::pin::pin!(keepalive);
    let mut close_by: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let age = limits.connection_age();
    let aged = async move {
        match age {
            Some(age) => tokio::time::sleep(age).await,
            None => std::future::pending().await,
        }
    };
    let mut aged = std::pin::pin!(aged);
    let mut calls = FuturesUnordered::new();
    let mut draining = false;
    let cap = limits.max_concurrent_streams as usize;
    loop {
        tokio::select! {
            () = poll_fn(|cx| drive(&mut conn, &mut calls, &routes, cap, &budget, &activity, cx)) => break,
            // Also taken when the sender is gone: nothing is left to serve for.
            _ = drain.wait_for(|draining| *draining), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
            why = &mut expired, if close_by.is_none() && !draining => {
                // Evicted: the listener needs the descriptor now, and the connection is idle.
                if why == Closing::Evicted {
                    break;
                }
                stats.closed("grpc", why.as_str());
                conn.graceful_shutdown();
                close_by = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            () = &mut aged, if close_by.is_none() && !draining => {
                // Old enough: the client reconnects (to any replica) for its next calls, and
                // those in flight have the grace to finish here.
                stats.closed("grpc", "max_age");
                conn.graceful_shutdown();
                close_by = Some(Box::pin(tokio::time::sleep(limits.max_connection_age_grace)));
            }
            () = &mut keepalive, if close_by.is_none() => {
                // The peer did not answer a ping: it is gone, or not reading.
                stats.closed("grpc", "keepalive");
                break;
            }
            () = async { if let Some(at) = close_by.as_mut() { at.await } }, if close_by.is_some() => break,
        }
    }
}

/// Rounds of [`drive`] before it lets the worker's other tasks run.
const ROUNDS: usize = 16;

type Connection = h2::server::Connection<Tracked<Coalesce<crate::listener::Stream>>, Bytes>;
/// One call's future: every kind is boxed, so one connection's calls share one collection.
type Call = BoxFuture<'static, ()>;

/// One pass over a connection: take every call that has arrived, then run every call that can
/// make progress, and again while either moved. Ready when the connection has ended.
///
/// The order is what batches the writes: the connection writes what is queued whenever it is
/// polled, so the calls that arrived together all answer before it is polled again, and their
/// answers leave in one write.
fn drive<S, H>(
    conn: &mut Connection,
    calls: &mut FuturesUnordered<Call>,
    routes: &Routes<S, H>,
    cap: usize,
    budget: &Arc<Budget>,
    activity: &crate::listener::Activity,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    S: Store,
    H: TonicService,
{
    for _ in 0..ROUNDS {
        let mut moved = false;
        loop {
            // At the cap (which calls whose stream the client reset still count toward), only
            // the connection's I/O is driven; new streams wait in h2's queue.
            let polled = if calls.len() < cap {
                conn.poll_accept(cx)
            } else {
                match conn.poll_closed(cx) {
                    Poll::Ready(Ok(())) => Poll::Ready(None),
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Pending => Poll::Pending,
                }
            };
            match polled {
                Poll::Ready(Some(Ok((request, mut respond)))) => {
                    match budget.charge(budget::header_bytes(request.headers())) {
                        Some(held) => calls.push(routes.call(request, respond, held)),
                        // The headers of the calls in flight already fill the budget.
                        None => respond.send_reset(h2::Reason::REFUSED_STREAM),
                    }
                    moved = true;
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(error = %e, "gRPC connection ended with an error");
                    return Poll::Ready(());
                }
                // The client closed the connection, or a drain has answered every call.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(())) = calls.poll_next_unpin(cx) {
            moved = true;
        }
        activity.set_in_flight(calls.len());
        if !moved {
            return Poll::Pending;
        }
    }
    // Still busy: come back after the other tasks of this worker had their turn.
    cx.waker().wake_by_ref();
    Poll::Pending
}
