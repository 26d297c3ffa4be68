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

mod bridge;
mod coalesce;
mod unary;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::future::poll_fn;
use futures::stream::FuturesUnordered;
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::server::NamedService;
use tower::Service;

use crate::grpc::RlsService;
use crate::storage::Store;
pub use bridge::CallBody;
use coalesce::Coalesce;

/// Streams one connection may have open at once. Envoy multiplexes a worker's checks over one
/// connection and opens another when a connection is full, so this bounds the memory one client
/// can pin without limiting throughput.
const MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Flow-control windows, per stream and per connection. Requests are ~100 bytes, so these never
/// bind; they are hyper's defaults, which the service used before.
const WINDOW: u32 = 1024 * 1024;
/// Request headers larger than this are refused (HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST: u32 = 16 * 1024;

/// How long to wait before accepting again after `accept` failed (typically out of file
/// descriptors): retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
}

impl<S, H: Clone> Clone for Routes<S, H> {
    fn clone(&self) -> Self {
        Self {
            rls: Arc::clone(&self.rls),
            health: self.health.clone(),
        }
    }
}

impl<S, H> Routes<S, H>
where
    S: Store,
    H: TonicService,
{
    pub fn new(rls: RlsService<S>, health: H) -> Self {
        Self {
            rls: Arc::new(rls),
            health,
        }
    }

    /// One call's future, run by its connection's task.
    fn call(
        &self,
        request: Request<h2::RecvStream>,
        respond: h2::server::SendResponse<Bytes>,
    ) -> Call {
        let path = request.uri().path();
        if path == SHOULD_RATE_LIMIT {
            let rls = Arc::clone(&self.rls);
            return Box::pin(async move {
                unary::should_rate_limit(&rls, request, respond).await;
            });
        }
        // A gRPC path is `/<package.Service>/<Method>`; tonic-health matches its methods itself.
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        if service == H::NAME {
            let health = self.health.clone();
            Box::pin(bridge::serve(health, request, respond))
        } else {
            let status = tonic::Status::unimplemented(format!("unknown method {path:?}"));
            Box::pin(async move { unary::answer_status(respond, &status) })
        }
    }
}

/// HTTP/2 settings for every connection.
fn h2_builder() -> h2::server::Builder {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(MAX_HEADER_LIST);
    builder
}

/// Serves `routes` on `listener` until `shutdown` resolves; then stops accepting (the listening
/// socket is closed at once), asks every connection to finish its calls in flight (an HTTP/2
/// GOAWAY), and returns once they all have.
pub async fn serve<S, H>(
    listener: TcpListener,
    routes: Routes<S, H>,
    shutdown: impl Future<Output = ()>,
) where
    S: Store,
    H: TonicService,
{
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, routes.clone(), drain_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a gRPC connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every client that left.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// Drives one connection and every call on it until the client leaves or, once draining, until
/// the calls in flight have been answered.
async fn serve_connection<S, H>(
    tcp: TcpStream,
    routes: Routes<S, H>,
    mut drain: watch::Receiver<bool>,
) where
    S: Store,
    H: TonicService,
{
    // Answers are a few hundred bytes: Nagle would hold them for a delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
    }
    let mut conn = match h2_builder().handshake(Coalesce::new(tcp)).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(error = %e, "gRPC connection ended during the HTTP/2 handshake");
            return;
        }
    };
    let mut calls = FuturesUnordered::new();
    let mut draining = false;
    loop {
        tokio::select! {
            () = poll_fn(|cx| drive(&mut conn, &mut calls, &routes, cx)) => break,
            // Also taken when the sender is gone: nothing is left to serve for.
            _ = drain.wait_for(|draining| *draining), if !draining => {
                draining = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// Rounds of [`drive`] before it lets the worker's other tasks run.
const ROUNDS: usize = 16;

type Connection = h2::server::Connection<Coalesce, Bytes>;
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
    cx: &mut Context<'_>,
) -> Poll<()>
where
    S: Store,
    H: TonicService,
{
    for _ in 0..ROUNDS {
        let mut moved = false;
        loop {
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((request, respond)))) => {
                    calls.push(routes.call(request, respond));
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
        if !moved {
            return Poll::Pending;
        }
    }
    // Still busy: come back after the other tasks of this worker had their turn.
    cx.waker().wake_by_ref();
    Poll::Pending
}
