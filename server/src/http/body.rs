//! Request bodies, read within a bound. A body over the bound is answered 413 with the reason,
//! and the client is let finish its upload first (within limits) so it reads that answer: closing
//! the connection mid-upload leaves the client with a broken pipe instead of a status.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;

use super::error;
use super::listener::BodyLimit;

/// The most bytes of an oversized body read and thrown away so the client gets the 413.
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// The longest time spent doing so.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// The whole body, or the answer to give when it is larger than `cap` bytes or cannot be read.
pub(crate) async fn read(headers: &HeaderMap, body: Body, cap: usize) -> Result<Bytes, Response> {
    if let Some(declared) = content_length(headers)
        && declared > cap as u64
    {
        return Err(too_large(headers, body, cap, declared).await);
    }
    let mut buf = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(unreadable)?;
        if buf.len() + chunk.len() > cap {
            let seen = (buf.len() + chunk.len()) as u64;
            return Err(too_large(headers, Body::from_stream(stream), cap, seen).await);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops a body that carries nothing for us, within the same bound.
pub(super) async fn discard(headers: &HeaderMap, body: Body, cap: usize) -> Result<(), Response> {
    read(headers, body, cap).await.map(drop)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// 408 for a body that did not arrive in time, 429 for one over its connection's buffer budget
/// (too many bodies in flight at once on one connection), 400 otherwise.
fn unreadable(e: axum::Error) -> Response {
    let inner = e.into_inner();
    let status = match inner.downcast_ref::<BodyLimit>() {
        Some(BodyLimit::Timeout(_)) => StatusCode::REQUEST_TIMEOUT,
        Some(BodyLimit::Budget(_)) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = error(
        status,
        format!("the request body could not be read: {inner}"),
    );
    // What is left of the body may still be on the wire.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 413, after draining what is left of the body when that is cheap enough. A client that asked
/// `Expect: 100-continue` has not sent its body and will not: nothing to drain.
async fn too_large(headers: &HeaderMap, body: Body, cap: usize, size: u64) -> Response {
    let expects = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let drained = !expects && size <= DRAIN_BYTES && drain(body).await;
    let mut response = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {cap} bytes (at least {size} bytes were sent)"),
    );
    if !drained {
        // The rest of the body is still on the wire: the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the body was read to its end within the bounds.
async fn drain(body: Body) -> bool {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    let read_all = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            total += chunk.len() as u64;
            if total > DRAIN_BYTES {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read_all)
        .await
        .unwrap_or(false)
}
