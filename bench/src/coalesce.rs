//! A client socket that batches the requests of one runtime pass into one write, as Envoy does.
//!
//! Envoy's HTTP/2 codec writes once per event-loop pass, so the checks its filters start in one
//! pass reach the rate-limit service in one TCP segment. tonic's client writes each request as
//! soon as its task sends it (one `writev` per request), which would load the server with many
//! more, smaller reads than Envoy does. The first write of a burst waits for one pass of the run
//! queue so the other requests ready on this worker join it. The same adapter sits in front of
//! Sluice's own gRPC listener (server/src/transport.rs), which explains it further.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

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
