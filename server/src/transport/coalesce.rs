//! Write coalescing across the connections served by one worker.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's socket that lets the other calls ready on this worker finish before it writes.
///
/// hyper answers each call from a task of its own; the call's last frame wakes the connection's
/// task, which the runtime runs next and which writes at once, so a busy connection made one
/// `writev` (one loopback TCP segment, one wake-up of the peer) per answer. Here the first
/// write of a burst returns `Pending` once and re-queues the connection's task behind the tasks
/// already runnable; their answers join the same buffer, and the next attempt writes them all.
/// The delay is one pass of the run queue, never a timer.
pub struct Coalesce {
    tcp: TcpStream,
    /// This burst already yielded once; cleared when the writer flushes.
    yielded: bool,
}

impl Coalesce {
    pub fn new(tcp: TcpStream) -> Self {
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
