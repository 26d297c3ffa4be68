//! The gRPC listener: accepts connections, serves HTTP/2 on each with hyper, routes each call by
//! its service name to the RLS or the health service, and drains on shutdown.
//!
//! tonic's own `transport::Server` wraps every call in an axum router (a path match that also
//! allocates URL parameters), a `grpc-timeout` timer, error recovery, boxing and a connect-info
//! extension; profiles showed that stack at about a tenth of a check's instructions (see
//! docs/performance.md). Sluice serves two services with infallible handlers, so a match on the
//! service name is all the routing it needs. The generated service code (decoding, encoding,
//! status mapping) is tonic's, unchanged.
//!
//! A client's `grpc-timeout` is not enforced here: Envoy stops waiting by itself, and every
//! store call is already bounded by the store's own timeout.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, Either, Ready, TryFutureExt, ready};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

/// Streams one connection may have open at once. Envoy multiplexes a worker's checks over one
/// connection and opens another when a connection is full, so this bounds the memory one client
/// can pin without limiting throughput.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long to wait before accepting again after `accept` failed (typically out of file
/// descriptors): retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The two gRPC services and the path each one answers.
#[derive(Clone)]
pub struct Routes<R, H> {
    rls: R,
    health: H,
}

impl<R, H> Routes<R, H>
where
    R: NamedService,
    H: NamedService,
{
    pub fn new(rls: R, health: H) -> Self {
        Self { rls, health }
    }
}

type Answer = Result<Response<Body>, Infallible>;
type Rewrite = fn(Response<Body>) -> Response<Body>;

impl<R, H> hyper::service::Service<Request<Incoming>> for Routes<R, H>
where
    R: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone,
    R::Future: Send + 'static,
    H: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone,
    H::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<
        futures::future::MapOk<BoxFuture<'static, Answer>, Rewrite>,
        Either<BoxFuture<'static, Answer>, Ready<Answer>>,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // A gRPC path is `/<package.Service>/<Method>`; each service matches its methods itself.
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(service, _)| service);
        // Both services are always ready (`poll_ready` is a constant), so calling a clone
        // directly is what tower's `Oneshot` would do, minus its state machine.
        if service == R::NAME {
            let call: BoxFuture<'static, Answer> = Box::pin(self.rls.clone().call(request));
            Either::Left(call.map_ok(out_of_range_is_invalid as Rewrite))
        } else if service == H::NAME {
            Either::Right(Either::Left(Box::pin(self.health.clone().call(request))))
        } else {
            Either::Right(Either::Right(ready(Ok(tonic::Status::unimplemented(
                format!("unknown service {service:?}"),
            )
            .into_http()))))
        }
    }
}

/// tonic refuses a message over its decoding cap with OUT_OF_RANGE before our handler runs;
/// Sluice's contract is INVALID_ARGUMENT for every oversized request, and the handler itself
/// never returns OUT_OF_RANGE, so rewriting that one code is exact.
fn out_of_range_is_invalid(mut response: Response<Body>) -> Response<Body> {
    // A prebuilt name: looking a header up by `&str` parses and validates the name every time,
    // which showed as several hundred instructions per call.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    const OUT_OF_RANGE: &[u8] = b"11";
    if response
        .headers()
        .get(&GRPC_STATUS)
        .is_some_and(|v| v.as_bytes() == OUT_OF_RANGE)
    {
        response
            .headers_mut()
            .insert(GRPC_STATUS, http::HeaderValue::from_static("3"));
    }
    response
}

/// HTTP/2 settings for every connection.
fn http2_builder() -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // gRPC clients ignore `date`; hyper would otherwise HPACK-encode a fresh value on every
        // answer (it changes each second, so it never stays in the header table for long).
        .auto_date_header(false);
    builder
}

/// Serves `routes` on `listener` until `shutdown` resolves; then stops accepting (the listening
/// socket is closed at once), asks every connection to finish its calls in flight (an HTTP/2
/// GOAWAY), and returns once they all have.
pub async fn serve<R, H>(
    listener: TcpListener,
    routes: Routes<R, H>,
    shutdown: impl Future<Output = ()>,
) where
    R: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    R::Future: Send + 'static,
    H: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + 'static,
    H::Future: Send + 'static,
{
    let builder = http2_builder();
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Answers are a few hundred bytes: Nagle would hold them for a delayed ACK.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a gRPC connection");
                    }
                    let conn = builder
                        .serve_connection(TokioIo::new(Coalesce::new(tcp)), routes.clone());
                    let mut drain = drain_rx.clone();
                    connections.spawn(async move {
                        let mut conn = std::pin::pin!(conn);
                        let finished = tokio::select! {
                            result = conn.as_mut() => Some(result),
                            // Also taken when the sender is gone: nothing is left to serve for.
                            _ = drain.wait_for(|draining| *draining) => None,
                        };
                        let result = match finished {
                            Some(result) => result,
                            None => {
                                conn.as_mut().graceful_shutdown();
                                conn.await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "gRPC connection ended with an error");
                        }
                    });
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

/// A connection's socket that lets the other calls ready on this worker finish before it writes.
///
/// hyper answers each call from a task of its own; the call's last frame wakes the connection's
/// task, which the runtime runs next and which writes at once, so a busy connection made one
/// `writev` (one loopback TCP segment, one wake-up of the peer) per answer. Here the first
/// write of a burst returns `Pending` once and re-queues the connection's task behind the tasks
/// already runnable; their answers join the same buffer, and the next attempt writes them all.
/// The delay is one pass of the run queue, never a timer.
struct Coalesce {
    tcp: TcpStream,
    /// This burst already yielded once; cleared when the writer flushes.
    yielded: bool,
}

impl Coalesce {
    fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            yielded: false,
        }
    }

    /// `true` when this write should wait for one pass of the run queue.
    fn defer(&mut self, cx: &mut Context<'_>) -> bool {
        if self.yielded {
            return false;
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        true
    }
}

impl AsyncRead for Coalesce {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Coalesce {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.defer(cx) {
            return Poll::Pending;
        }
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.yielded = false;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
