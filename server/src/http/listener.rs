//! The HTTP listener: HTTP/1.1 and cleartext HTTP/2 on hyper, within the listener bounds
//! ([`crate::listener::Limits`]).
//!
//! `axum::serve` sets no timer, so hyper applies none of its timeouts and a request head that
//! never completes holds its connection forever; here each connection is served through hyper's
//! own builder with the bounds set, under the listener's accept loop (connection cap, eviction of
//! the idlest) and its watchdog (header-read and idle timeouts). Each request's body is read
//! through [`LimitedBody`]: within the message timeout, and charged to the connection's buffer
//! budget, so a client that opens many HTTP/2 streams and stalls each body halfway holds at most
//! the budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::listener::budget::{Budget, Charge, header_bytes};
use crate::listener::{Accepted, Acceptor, CLOSE_GRACE, Closing, Limits, ListenerStats, Tracked};

/// Serves `app` on the connections `acceptor` takes until `shutdown` resolves; then stops
/// accepting, lets every connection finish the requests in flight, and returns once they have.
///
/// `max_body` is the largest body any handler keeps (larger ones are refused with 413): what a
/// body counts against the connection's budget at most, however much of it is read and dropped.
pub async fn serve(
    acceptor: Acceptor,
    app: Router,
    max_body: usize,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Arc::clone(acceptor.limits());
    let builder = Arc::new(builder(&limits));
    acceptor
        .run(true, shutdown, |accepted, stats, drain| {
            serve_connection(
                accepted,
                Arc::clone(&builder),
                app.clone(),
                Arc::clone(&limits),
                max_body,
                stats,
                drain,
            )
        })
        .await;
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The listener's watchdog times request heads (hyper's timer would also close idle
        // keep-alive connections after it, racing proxies that reuse them).
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192) as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(limits.connection_window())
        .max_send_buf_size(64 * 1024)
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout);
    builder
}

async fn serve_connection(
    accepted: Accepted,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: Arc<Limits>,
    max_body: usize,
    stats: ListenerStats,
    mut drain: watch::Receiver<bool>,
) {
    let Accepted {
        stream,
        peer,
        tls,
        activity,
        slot: _slot,
    } = accepted;
    if let Err(e) = stream.set_nodelay() {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
    }
    let expired = activity.expired(&limits);
    let mut expired = std::pin::pin!(expired);
    let stream = match tls {
        None => stream,
        // Within the handshake timeout, and the header-read timeout that runs from accept.
        Some(tls) => {
            let handshake = tokio::time::timeout(limits.handshake_timeout, tls.accept(stream));
            tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "HTTP connection failed its TLS handshake");
                        stats.closed("http", "tls_handshake");
                        return;
                    }
                    Err(_) => {
                        stats.closed("http", "handshake_timeout");
                        return;
                    }
                },
                why = &mut expired => {
                    if why != Closing::Evicted {
                        stats.closed("http", why.as_str());
                    }
                    return;
                }
            }
        }
    };
    let budget = Arc::new(Budget::new(limits.connection_buffer_bytes as usize));
    let service = {
        let activity = Arc::clone(&activity);
        let limits = Arc::clone(&limits);
        hyper::service::service_fn(move |request: http::Request<Incoming>| {
            let in_flight = activity.begin();
            let headers = budget.charge(header_bytes(request.headers()));
            let mut request = request.map(|body| {
                Body::new(LimitedBody::new(
                    body,
                    &limits,
                    Arc::clone(&budget),
                    max_body,
                ))
            });
            // The peer address is what the admin API logs for a refused request.
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            let capacity = limits.connection_buffer_bytes;
            async move {
                let response = match headers {
                    Some(_held) => app.oneshot(request).await,
                    // Only HTTP/2 can have several requests in flight on one connection.
                    None => Ok(crate::http::error(
                        http::StatusCode::TOO_MANY_REQUESTS,
                        BodyLimit::Budget(capacity).to_string(),
                    )),
                };
                drop(in_flight);
                response
            }
        })
    };
    let io = TokioIo::new(Tracked::new(stream, Arc::clone(&activity)));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut close_by: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = drain.wait_for(|draining| *draining), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            why = &mut expired, if close_by.is_none() && !draining => {
                // Evicted: the listener needs the descriptor now, and the connection is idle.
                if why == Closing::Evicted {
                    break;
                }
                stats.closed("http", why.as_str());
                conn.as_mut().graceful_shutdown();
                close_by = Some(Box::pin(tokio::time::sleep(CLOSE_GRACE)));
            }
            () = async { if let Some(at) = close_by.as_mut() { at.await } }, if close_by.is_some() => break,
        }
    }
}

/// Why a request body could not be read in full.
#[derive(Debug, thiserror::Error)]
pub enum BodyLimit {
    #[error("the request body did not arrive within {0:?}")]
    Timeout(std::time::Duration),
    #[error(
        "this connection's requests in flight already hold {0} bytes of headers and bodies: \
         send fewer at once"
    )]
    Budget(u32),
    #[error(transparent)]
    Read(hyper::Error),
}

/// A request body read within the message timeout and the connection's buffer budget.
pub struct LimitedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: std::time::Duration,
    held: Option<Charge>,
    /// Bytes charged so far, and at most.
    charged: usize,
    max_charge: usize,
    capacity: u32,
}

impl LimitedBody {
    fn new(inner: Incoming, limits: &Limits, budget: Arc<Budget>, max_body: usize) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.message_timeout)),
            timeout: limits.message_timeout,
            held: budget.charge(0),
            charged: 0,
            max_charge: max_body,
            capacity: limits.connection_buffer_bytes,
        }
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BodyLimit;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyLimit>>> {
        let this = &mut *self;
        if this.inner.is_end_stream() {
            return Pin::new(&mut this.inner)
                .poll_frame(cx)
                .map_err(BodyLimit::Read);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyLimit::Timeout(this.timeout))));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(BodyLimit::Read(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            // Past `max_charge` the handler is refusing the body and dropping what it reads.
            let more = data.len().min(this.max_charge - this.charged);
            let charged = this.held.as_mut().is_some_and(|held| held.grow(more));
            if !charged {
                return Poll::Ready(Some(Err(BodyLimit::Budget(this.capacity))));
            }
            this.charged += more;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
