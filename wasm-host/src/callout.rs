//! Callouts over the real network: `proxy_grpc_call` as a unary gRPC call (tonic, HTTP/2, the
//! guest's message bytes sent as they are, with the `grpc-timeout` Envoy's gRPC client derives
//! from the guest's timeout) and `proxy_http_call` as an HTTP/1.1 request (reqwest), each bounded
//! by the timeout the guest passed, as Envoy does.

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

/// `grpc-timeout` as Envoy's gRPC client writes it from a callout's timeout
/// (`Grpc::Common::toGrpcTimeout`): whole milliseconds (`250m`) while they fit the header's 8
/// digits, else seconds, minutes, hours, clipped to `99999999H`. With the time it announces, at
/// most `timeout` (the coarser units round down).
fn grpc_timeout(timeout: Duration) -> (String, Duration) {
    const MAX: u128 = 99_999_999;
    const UNITS: [(char, u64); 4] = [('m', 1), ('S', 1000), ('M', 60_000), ('H', 3_600_000)];
    let mut time = timeout.as_millis();
    let mut unit = 0;
    if time > MAX {
        time /= 1000;
        unit = 1;
    }
    while time > MAX {
        if unit == UNITS.len() - 1 {
            time = MAX;
        } else {
            time /= 60;
            unit += 1;
        }
    }
    let (symbol, ms) = UNITS[unit];
    let announced = Duration::from_millis((time as u64).saturating_mul(ms));
    (format!("{time}{symbol}"), announced.min(timeout))
}

pub async fn grpc(
    channel: Channel,
    path: String,
    metadata: Pairs,
    message: Vec<u8>,
    timeout: Duration,
) -> Outcome {
    let (header, announced) = grpc_timeout(timeout);
    let start = tokio::time::Instant::now();
    let call = async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::try_from(path)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let mut request = tonic::Request::new(Bytes::from(message));
        for (k, v) in metadata {
            if let (Ok(k), Ok(v)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
                tonic::metadata::AsciiMetadataValue::try_from(v.as_slice()),
            ) {
                request.metadata_mut().insert(k, v);
            }
        }
        // Envoy's async client sends the callout's timeout as `grpc-timeout`, so the server
        // knows the caller's deadline (a check queued for a Sluice pool is answered within it).
        // Not `Request::set_timeout`: that writes the finest unit that fits (`250000u`), Envoy
        // milliseconds.
        if let Ok(v) = tonic::metadata::AsciiMetadataValue::try_from(header) {
            request.metadata_mut().insert("grpc-timeout", v);
        }
        grpc.unary(request, path, RawCodec).await
    };
    match tokio::time::timeout_at(start + timeout, call).await {
        Err(_) => deadline_exceeded(),
        Ok(Ok(response)) => Outcome::GrpcMessage(response.into_inner().to_vec()),
        // The deadline is the host's to enforce, as Envoy's async client does. But tonic's channel
        // enforces the `grpc-timeout` it sends too, from a timer started a little after `start`,
        // and reports CANCELLED when that timer wins (both can fire in one timer tick, and
        // `timeout_at` polls the call first): CANCELLED once the announced time has passed is
        // the timeout.
        Ok(Err(status))
            if status.code() == tonic::Code::Cancelled
                && tokio::time::Instant::now() >= start + announced =>
        {
            deadline_exceeded()
        }
        Ok(Err(status)) => Outcome::GrpcClose {
            status: status.code() as u32,
            message: status.message().to_string(),
        },
    }
}

/// What the guest learns when a gRPC callout's timeout passed: DEADLINE_EXCEEDED.
fn deadline_exceeded() -> Outcome {
    Outcome::GrpcClose {
        status: 4,
        message: "deadline exceeded".into(),
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

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tonic::codegen::{Service, http};
    use tonic::transport::server::TcpIncoming;

    use super::*;

    #[test]
    fn grpc_timeout_is_written_as_envoy_writes_it() {
        let ms = Duration::from_millis;
        for (timeout, header, announced) in [
            (ms(0), "0m", ms(0)),
            (ms(20), "20m", ms(20)),
            (ms(250), "250m", ms(250)),
            (ms(60_000), "60000m", ms(60_000)),
            (ms(99_999_999), "99999999m", ms(99_999_999)),
            // Past 8 digits of milliseconds: seconds, rounded down.
            (ms(100_000_999), "100000S", ms(100_000_000)),
            (ms(u64::from(u32::MAX)), "4294967S", ms(4_294_967_000)),
            (
                Duration::from_secs(100_000_000),
                "1666666M",
                ms(99_999_960_000),
            ),
        ] {
            assert_eq!(grpc_timeout(timeout), (header.to_string(), announced));
        }
        assert_eq!(grpc_timeout(Duration::MAX).0, "99999999H");
    }

    /// A gRPC service that notes each call's `grpc-timeout` and never answers.
    #[derive(Clone, Default)]
    struct Silent(Arc<Mutex<Vec<Option<String>>>>);

    impl tonic::server::NamedService for Silent {
        const NAME: &'static str = "test.Silent";
    }

    impl Service<http::Request<tonic::body::Body>> for Silent {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future =
            Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            let header = request
                .headers()
                .get("grpc-timeout")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            self.0.lock().expect("calls").push(header);
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_grpc_call_announces_its_timeout_and_ends_deadline_exceeded() {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = incoming.local_addr().expect("local address");
        let silent = Silent::default();
        let server = tonic::transport::Server::builder()
            .add_service(silent.clone())
            .serve_with_incoming(incoming);
        let server = tokio::spawn(server);
        let channel = channel(addr);
        // tonic enforces the header it sends as well: whichever timer fires first, the guest
        // learns DEADLINE_EXCEEDED, never CANCELLED, and never before its timeout.
        let calls = (0..16).map(|i| {
            let timeout = Duration::from_millis(20 + i % 4);
            let call = grpc(
                channel.clone(),
                "/test.Silent/Call".into(),
                vec![("x-app".into(), b"web".to_vec())],
                b"ping".to_vec(),
                timeout,
            );
            async move { (timeout, tokio::time::Instant::now(), call.await) }
        });
        let mut tasks = Vec::new();
        for call in calls {
            tasks.push(tokio::spawn(call));
        }
        for task in tasks {
            let (timeout, started, outcome) = task.await.expect("call task");
            let ended = started.elapsed();
            match outcome {
                Outcome::GrpcClose { status: 4, .. } => {}
                other => panic!("expected DEADLINE_EXCEEDED, got {other:?}"),
            }
            assert!(
                ended >= timeout,
                "ended after {ended:?}, before {timeout:?}"
            );
        }
        let mut seen = silent.0.lock().expect("calls").clone();
        seen.sort();
        let mut expected: Vec<_> = (0..16).map(|i| Some(format!("{}m", 20 + i % 4))).collect();
        expected.sort();
        assert_eq!(seen, expected);
        server.abort();
    }
}
