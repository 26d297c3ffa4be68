//! A tonic service served on an `h2` stream: for `grpc.health.v1.Health` (tonic-health, with
//! its streaming `Watch`), whose calls are rare enough that tonic's layers cost nothing that
//! matters.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::poll_fn;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tower::Service;

/// A call's request body as tonic reads it: the stream's data frames, then its trailers.
///
/// As for `ShouldRateLimit`, the window is given back only once the request has ended (health
/// requests are one small message), so the connection window bounds what a stalled one holds;
/// and the request must end within the message timeout.
pub struct CallBody {
    stream: RecvStream,
    /// Bytes read and not yet given back to the flow-control window.
    unreleased: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl CallBody {
    fn new(stream: RecvStream, timeout: Duration) -> Self {
        Self {
            stream,
            unreleased: 0,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(h2::Error::from(h2::Reason::CANCEL))));
        }
        let stream = &mut this.stream;
        match stream.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                this.unreleased += data.len();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                let released = std::mem::take(&mut this.unreleased);
                let _ = stream.flow_control().release_capacity(released);
                match stream.poll_trailers(cx) {
                    Poll::Ready(Ok(Some(trailers))) => {
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    Poll::Ready(Ok(None)) => Poll::Ready(None),
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_end_stream()
    }
}

/// Runs one call through `service` and writes its answer: the headers, each data frame as the
/// service produces it, and the trailers. Stops when the client resets the stream.
pub async fn serve<H>(
    mut service: H,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    message_timeout: Duration,
) where
    H: Service<Request<CallBody>, Response = Response<tonic::body::Body>, Error = Infallible>,
{
    let request = request.map(|stream| CallBody::new(stream, message_timeout));
    let response = match service.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let end = body.is_end_stream();
    // Sends fail only once the client has reset the stream: nobody is left to answer.
    let Ok(mut stream) = respond.send_response(Response::from_parts(parts, ()), end) else {
        return;
    };
    if end {
        return;
    }
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            // A `Watch` may wait a long time for its next frame; a client that left ends it.
            _ = poll_fn(|cx| stream.poll_reset(cx)) => return,
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if stream.send_data(data, false).is_err() {
                        return;
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().unwrap_or_else(|_| HeaderMap::new());
                    let _ = stream.send_trailers(trailers);
                    return;
                }
            },
            Some(Err(status)) => {
                tracing::debug!(error = %status, "a gRPC service's answer failed");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
            None => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
        }
    }
}
