//! Unary gRPC on one HTTP/2 stream: the request message read from the stream's data frames, the
//! answer written as one data frame and the trailers, or a status as a trailers-only answer.
//!
//! The framing is gRPC's: each message is a compressed flag (one byte), a big-endian `u32`
//! length, and the encoded message. Bad framing is the client's error and is answered, like any
//! other malformed request, with `INVALID_ARGUMENT`; a compressed message (Sluice negotiates no
//! compression, so a client must not send one) with `UNIMPLEMENTED`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use h2::RecvStream;
use h2::server::SendResponse;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use tonic::Status;

use super::service::RlsService;
use crate::storage::Store;

/// The flag byte and the length before each message.
const PREFIX: usize = 5;
const APPLICATION_GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
const GRPC_OK: HeaderValue = HeaderValue::from_static("0");

/// Why no message could be read.
#[derive(Debug)]
pub(crate) enum Unread {
    /// The request was malformed: answer with this status.
    Refused(Status),
    /// The client reset the stream or left: nobody is waiting for an answer.
    Gone,
    /// The message declares more bytes than are read. Only values from a proxy's client make a
    /// request that large, so it is refused, not an error (see `RlsService::oversized`).
    Oversized(usize),
}

/// One `ShouldRateLimit` call, from its request headers to its trailers. The message must arrive
/// whole within `message_timeout` of the headers.
pub async fn should_rate_limit<S: Store>(
    rls: &RlsService<S>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    message_timeout: Duration,
) {
    let (parts, mut body) = request.into_parts();
    let read = tokio::time::timeout(
        message_timeout,
        read_message(&mut body, rls.max_message_bytes()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Unread::Refused(Status::deadline_exceeded(format!(
            "the request message did not arrive within {message_timeout:?}"
        ))))
    });
    let answer = match read {
        Ok(bytes) => match RateLimitRequest::decode(&bytes[..]) {
            // Boxed so the deciding part's state (several KiB) is allocated only once a message
            // is whole: a call still waiting for its message costs its stream a few hundred
            // bytes, whatever the client leaves half-sent.
            Ok(message) => {
                let decide = Box::pin(rls.should_rate_limit(&parts.headers, message));
                // A call that waits in a pool's queue ends when its caller cancels it: dropping
                // the decision withdraws its ticket. Biased, so a decision ready at once (nearly
                // all of them) never looks at the stream's state.
                let reset = std::future::poll_fn(|cx| respond.poll_reset(cx));
                tokio::select! {
                    biased;
                    answer = decide => answer,
                    _ = reset => return,
                }
            }
            Err(e) => rls.undecodable(&bytes, &e),
        },
        Err(Unread::Refused(status)) => Err(rls.refuse(status)),
        Err(Unread::Oversized(len)) => Ok(rls.oversized(len)),
        Err(Unread::Gone) => return,
    };
    match answer {
        Ok(message) => answer_message(respond, &message),
        Err(status) => answer_status(respond, &status),
    }
}

/// Reads the call's one message. It returns as soon as the message is complete: a unary client
/// ends its stream right after it, and waiting for the end would only add a wake-up.
///
/// The flow-control window is given back only then: until a message is whole its bytes keep
/// counting against the stream's and the connection's windows, so a client that stalls halfway
/// through messages can park at most one connection window of them, however many streams it
/// opens.
async fn read_message(body: &mut RecvStream, cap: usize) -> Result<Bytes, Unread> {
    // Nearly always the whole message arrives in one data frame, which is then used as it is.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    loop {
        let held = first.as_ref().map_or(&joined[..], |b| &b[..]);
        if let Some(expected) = message_len(held, cap)? {
            let have = held.len() - PREFIX;
            if have == expected {
                let mut whole = match first.take() {
                    Some(bytes) => bytes,
                    None => std::mem::take(&mut joined).freeze(),
                };
                let _ = body.flow_control().release_capacity(whole.len());
                return Ok(whole.split_off(PREFIX));
            }
            if have > expected {
                return Err(Unread::Refused(Status::invalid_argument(
                    "a unary call carries exactly one message",
                )));
            }
        }
        let chunk = match body.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a gRPC call's stream failed while reading");
                return Err(Unread::Gone);
            }
            None if held.is_empty() => {
                return Err(Unread::Refused(Status::invalid_argument(
                    "the call carries no request message",
                )));
            }
            None => {
                return Err(Unread::Refused(Status::invalid_argument(
                    "the request message is truncated",
                )));
            }
        };
        if let Some(bytes) = first.take() {
            joined.extend_from_slice(&bytes);
        }
        if joined.is_empty() {
            first = Some(chunk);
        } else {
            joined.extend_from_slice(&chunk);
        }
    }
}

/// The message's length once its prefix has arrived; refuses compressed and oversized messages
/// before reading them.
pub(crate) fn message_len(held: &[u8], cap: usize) -> Result<Option<usize>, Unread> {
    let Some(prefix) = held.get(..PREFIX) else {
        return Ok(None);
    };
    match prefix[0] {
        0 => {}
        1 => {
            return Err(Unread::Refused(Status::unimplemented(
                "compressed messages are not supported",
            )));
        }
        flag => {
            return Err(Unread::Refused(Status::invalid_argument(format!(
                "invalid gRPC compressed flag {flag}"
            ))));
        }
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > cap {
        return Err(Unread::Oversized(len));
    }
    Ok(Some(len))
}

/// `200`, the message in one data frame, then `grpc-status: 0`.
fn answer_message(mut respond: SendResponse<Bytes>, message: &impl Message) {
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(PREFIX + len);
    frame.put_u8(0);
    frame.put_u32(len as u32);
    message.encode_raw(&mut frame);
    let mut response = Response::new(());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_GRPC);
    // A send fails only when the client has reset the stream: nobody is left to answer.
    let Ok(mut stream) = respond.send_response(response, false) else {
        return;
    };
    if stream.send_data(frame.freeze(), false).is_err() {
        return;
    }
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, GRPC_OK);
    let _ = stream.send_trailers(trailers);
}

/// A trailers-only answer: `200` with `grpc-status` and `grpc-message`, ending the stream.
pub fn answer_status(mut respond: SendResponse<Bytes>, status: &Status) {
    let mut response = Response::new(());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_GRPC);
    if let Err(unencodable) = status.add_header(headers) {
        // Only custom metadata can fail to encode; the code alone still tells the client.
        tracing::debug!(error = %unencodable, "a gRPC status could not be encoded in full");
        headers.insert(GRPC_STATUS, HeaderValue::from(status.code() as i32));
    }
    let _ = respond.send_response(response, true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a call costs while its client holds its message back is the size of this future:
    /// with 100 streams a connection, a few KiB more each was most of what a stalling client
    /// could pin.
    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn a_call_waiting_for_its_message_is_small() {
        use std::sync::Arc;

        use crate::clock::SystemClock;
        use crate::limiter::{LimiterOptions, RateLimiter};
        use crate::metrics::Metrics;
        use crate::storage::backend::memory::MemoryStore;

        let limiter = RateLimiter::new(
            crate::config::parse_str("rules.yaml", "domain: d\n").unwrap(),
            Arc::new(MemoryStore::new(10, Arc::new(SystemClock))),
            Arc::new(Metrics::new()),
            LimiterOptions::default(),
        );
        let rls = RlsService::new(Arc::new(limiter));
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let client = tokio::spawn(async move {
            let (mut client, conn) = h2::client::handshake(client_io).await.unwrap();
            tokio::spawn(conn);
            let request = http::Request::post("http://s/x").body(()).unwrap();
            let (response, _stream) = client.send_request(request, false).unwrap();
            let _ = response.await;
        });
        let mut conn = h2::server::handshake(server_io).await.unwrap();
        let (request, respond) = conn.accept().await.unwrap().unwrap();
        let call = should_rate_limit(&rls, request, respond, Duration::from_secs(1));
        let size = std::mem::size_of_val(&call);
        assert!(size <= 1024, "a waiting call's future is {size} bytes");
        client.abort();
    }

    fn refused(result: Result<Option<usize>, Unread>) -> tonic::Code {
        match result {
            Err(Unread::Refused(status)) => status.code(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_prefix_gives_the_length_and_refuses_what_must_not_be_read() {
        assert!(matches!(message_len(&[0, 0, 0], 10), Ok(None)));
        assert!(matches!(message_len(&[0, 0, 0, 0, 7], 10), Ok(Some(7))));
        assert!(matches!(message_len(&[0, 0, 0, 0, 0], 10), Ok(Some(0))));
        assert!(matches!(
            message_len(&[0, 0, 0, 0, 11], 10),
            Err(Unread::Oversized(11))
        ));
        assert_eq!(
            refused(message_len(&[1, 0, 0, 0, 1], 10)),
            tonic::Code::Unimplemented
        );
        assert_eq!(
            refused(message_len(&[2, 0, 0, 0, 1], 10)),
            tonic::Code::InvalidArgument
        );
    }
}
