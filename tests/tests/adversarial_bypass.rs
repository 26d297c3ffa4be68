//! Values a client controls must never turn a refusal into an error a proxy fails open on. A
//! client over its limit that makes its values too long, or not UTF-8 (Envoy copies header bytes
//! into descriptor values as they are), used to get `INVALID_ARGUMENT`, which Envoy with
//! `failure_mode_deny: false` lets through; now it is refused with a problem document.

use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use prost::Message;
use serde_json::Value;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

const RULES: &str = "
domain: edge
descriptors:
  - key: app_id
    rate_limit: { unit: hour, requests_per_unit: 1 }
http_descriptors:
  - entries: [{ key: app_id, header: x-app-id }]
";

fn problem(response: &RateLimitResponse) -> Value {
    serde_json::from_slice(&response.raw_body).expect("a JSON problem document")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_over_long_value_is_refused_not_an_error() {
    let sluice = Sluice::builder(RULES).start();
    let mut client = sluice.grpc().await;
    // Over its limit already.
    let spent = request("edge", vec![descriptor(&[("app_id", "noisy")])]);
    assert_eq!(
        client
            .should_rate_limit(spent.clone())
            .await
            .expect("ok")
            .get_ref()
            .overall_code,
        OK
    );
    assert_eq!(
        client
            .should_rate_limit(spent)
            .await
            .expect("ok")
            .get_ref()
            .overall_code,
        OVER_LIMIT
    );
    // The same client with a 20 KB value: refused, never INVALID_ARGUMENT.
    let long = "n".repeat(20 * 1024);
    let r = client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", &long)])]))
        .await
        .expect("an answer, not an error")
        .into_inner();
    assert_eq!(r.overall_code, OVER_LIMIT);
    assert_eq!(r.statuses.len(), 1);
    assert_eq!(r.statuses[0].code, OVER_LIMIT);
    let doc = problem(&r);
    assert_eq!(doc["status"], 400, "{doc}");
    assert_eq!(doc["kind"], "invalid", "{doc}");
    assert!(
        r.response_headers_to_add
            .iter()
            .any(|h| h.key == "content-type" && h.value == "application/problem+json")
    );
    assert_eq!(
        sluice
            .metric("sluice_requests_total{transport=\"grpc\",result=\"unusable\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_value_that_is_not_utf8_is_refused_not_an_error() {
    let sluice = Sluice::builder(RULES).start();
    // prost will not encode a String that is not UTF-8: encode a placeholder of the same length
    // and put the bytes Envoy would copy from a header in its place.
    let message = request("edge", vec![descriptor(&[("app_id", "PLACEHOLDER")])]).encode_to_vec();
    let at = message
        .windows(11)
        .position(|w| w == b"PLACEHOLDER")
        .expect("placeholder");
    let mut bytes = message.clone();
    bytes[at..at + 11].copy_from_slice(b"noisy\xff\xfe\xfdapp");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bytes);

    let tcp = tokio::net::TcpStream::connect(sluice.grpc_addr)
        .await
        .expect("connect");
    let (mut h2, conn) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let call = http::Request::post(
        "http://sluice/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (response, mut stream) = h2.send_request(call, false).expect("stream");
    stream.send_data(Bytes::from(framed), true).expect("data");
    let response = response.await.expect("response");
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        data.extend_from_slice(&chunk.expect("data"));
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let r = RateLimitResponse::decode(&data[5..]).expect("a RateLimitResponse");
    assert_eq!(r.overall_code, OVER_LIMIT);
    let doc = problem(&r);
    assert_eq!(doc["kind"], "invalid", "{doc}");
    assert!(
        doc["detail"].as_str().is_some_and(|d| d.contains("UTF-8")),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_refuses_a_header_that_is_not_utf8() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sluice = Sluice::builder(RULES).start();
    // reqwest will not send such a header; a raw request will, as NGINX forwards it.
    let mut tcp = tokio::net::TcpStream::connect(sluice.http_addr)
        .await
        .expect("connect");
    tcp.write_all(
        b"GET /auth/edge HTTP/1.1\r\nHost: s\r\nX-App-Id: noisy\xff\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("sluice-status: 400"),
        "{answer}"
    );
}
