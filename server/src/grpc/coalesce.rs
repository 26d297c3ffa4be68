//! Write coalescing: a socket whose first write of a burst waits for one pass of the worker's
//! run queue, so writes that tasks already runnable on this worker are about to make join it.
//! The delay is one pass of the run queue, never a timer.
//!
//! Two users share this file: Sluice's gRPC listener, and the bench's load generator (which
//! includes it with `#[path]`, as Envoy's codec also writes once per event-loop pass).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket that lets the other work ready on this worker run before it writes.
///
/// On the listener, a connection's task answers the calls that arrived together before the
/// connection writes (`drive`); calls woken by another task (a Redis reply read by the Redis
/// connection's task) would still miss that write. Here the first write of a burst returns
/// `Pending` once and re-queues the connection's task behind the tasks already runnable, so their
/// answers join the same buffer and the next attempt writes them all.
pub struct Coalesce<T = TcpStream> {
    tcp: T,
    /// This burst already yielded once; cleared when the writer flushes.
    yielded: bool,
}

impl<T> Coalesce<T> {
    pub fn new(tcp: T) -> Self {
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

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
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
