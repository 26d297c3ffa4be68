//! Callouts over the real network: `proxy_grpc_call` as a unary gRPC call (tonic, HTTP/2, the
//! guest's message bytes sent as they are) and `proxy_http_call` as an HTTP/1.1 request
//! (reqwest), each bounded by the timeout the guest passed, as Envoy does.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::abi::Pairs;

/// How a callout ended, as the guest learns it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// gRPC OK with the response message.
    GrpcMessage(Vec<u8>),
    /// A gRPC status other than OK (DEADLINE_EXCEEDED, 4, when the timeout passed).
    GrpcClose { status: u32, message: String },
    /// An HTTP response: headers with `:status` first, and the body.
    Http { headers: Pairs, body: Vec<u8> },
    /// No HTTP response: timeout, refused or reset connection.
    HttpFailed,
}

/// The guest's bytes in and out, untouched: the test checks the filter's own encoding.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A lazily connected HTTP/2 channel to `addr` (call inside the runtime).
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint URI")
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

pub async fn grpc(
    channel: Channel,
    path: String,
    metadata: Pairs,
    message: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let call = async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::try_from(path)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        // The deadline is the host's to enforce (below), as Envoy's async client does; tonic's
        // own `grpc-timeout` handling would race it and report CANCELLED instead.
        let mut request = tonic::Request::new(Bytes::from(message));
        for (k, v) in metadata {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
                tonic::metadata::AsciiMetadataValue::try_from(v.as_slice()),
            ) {
                request.metadata_mut().insert(k, v);
            }
        }
        grpc.unary(request, path, RawCodec).await
    };
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Outcome::GrpcClose {
            status: 4,
            message: "deadline exceeded".into(),
        },
        Ok(Ok(response)) => Outcome::GrpcMessage(response.into_inner().to_vec()),
        Ok(Err(status)) => Outcome::GrpcClose {
            status: status.code() as u32,
            message: status.message().to_string(),
        },
    }
}

pub async fn http(
    client: reqwest::Client,
    addr: SocketAddr,
    headers: Pairs,
    body: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let method =
        reqwest::Method::from_bytes(get(":method").as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = client
        .request(method, format!("http://{addr}{}", get(":path")))
        .header("host", get(":authority"))
        .body(body)
        .timeout(timeout);
    for (k, v) in headers.iter().filter(|(k, _)| !k.starts_with(':')) {
        request = request.header(k.as_str(), v.as_slice());
    }
    let call = async move {
        let response = request.send().await.ok()?;
        let mut headers: Pairs = vec![(
            ":status".into(),
            response.status().as_str().as_bytes().to_vec(),
        )];
        for (k, v) in response.headers() {
            headers.push((k.as_str().to_string(), v.as_bytes().to_vec()));
        }
        let body = response.bytes().await.ok()?.to_vec();
        Some(Outcome::Http { headers, body })
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Some(outcome)) => outcome,
        _ => Outcome::HttpFailed,
    }
}
