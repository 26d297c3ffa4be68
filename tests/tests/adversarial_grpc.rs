//! The gRPC listener under attack (loopback only, every loop bounded in count and time): each
//! test runs an attack against the real binary and asserts its bound (memory, time to close) while
//! a well-behaved client keeps getting answers within its deadline.

use std::time::Duration;

use sluice_tests::attack::{PER_CONNECTION_BOUND, Probe, RULES, SLACK, grpc_check, stall_calls};
use sluice_tests::h2raw::{
    self, CONTINUATION, DATA, END_HEADERS, HEADERS, PING, RST_STREAM, RawH2, SETTINGS, frame,
    grpc_headers, header_block,
};
use sluice_tests::sluice::Sluice;

const DEADLINE: Duration = Duration::from_secs(2);

/// The attack that used to pin ~120 MB per connection: calls whose 64 KiB message stops one byte
/// short, as many as the connection allows, each with 8 KiB of headers, on 20 connections.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_messages_hold_at_most_the_connection_budget() {
    const CONNECTIONS: u64 = 20;
    let sluice = Sluice::builder(RULES)
        .arg("--message-timeout-ms")
        .arg("60000")
        .start();
    // Warm up, so allocator pools and the first connection's buffers are in the baseline.
    for _ in 0..20 {
        grpc_check(sluice.grpc_addr, DEADLINE).await;
    }
    let before = sluice.rss_bytes();
    let probe = Probe::start(&sluice, DEADLINE, 10_000);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        held.push(stall_calls(sluice.grpc_addr, 100, 8 * 1024).await);
    }
    let after = sluice.rss_bytes();
    let growth = after.saturating_sub(before);
    let opened: Vec<usize> = held.iter().map(|s| s.opened).collect();
    println!(
        "{CONNECTIONS} connections of stalled calls (opened {opened:?}): RSS {} KiB -> {} KiB \
         (+{} KiB, {} KiB a connection; bound {} KiB a connection)",
        before / 1024,
        after / 1024,
        growth / 1024,
        growth / CONNECTIONS / 1024,
        PER_CONNECTION_BOUND / 1024
    );
    assert!(
        growth <= CONNECTIONS * PER_CONNECTION_BOUND + SLACK,
        "RSS grew by {growth} bytes for {CONNECTIONS} connections"
    );
    // The well-behaved client was answered throughout, and still is.
    let (rounds, worst) = probe.finish().await;
    println!("well-behaved client: {rounds} rounds, slowest answer {worst:?}");
    assert!(rounds > 0);
    grpc_check(sluice.grpc_addr, DEADLINE).await;
}

/// Calls that send headers and then nothing, or a message that never finishes, are answered
/// `DEADLINE_EXCEEDED` once the message timeout passes.
#[tokio::test(flavor = "multi_thread")]
async fn calls_without_a_whole_message_time_out() {
    let timeout = Duration::from_millis(500);
    let sluice = Sluice::builder(RULES)
        .arg("--message-timeout-ms")
        .arg("500")
        .start();
    let tcp = tokio::net::TcpStream::connect(sluice.grpc_addr)
        .await
        .expect("connect");
    let (mut client, conn) = h2::client::handshake(tcp).await.expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let call = |client: &mut h2::client::SendRequest<bytes::Bytes>| {
        let request = http::Request::post(
            "http://sluice/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        )
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
        client.send_request(request, false).expect("stream")
    };
    let started = std::time::Instant::now();
    // Headers only, then half a message.
    let (headers_only, _keep_open) = call(&mut client);
    let (half, mut half_stream) = call(&mut client);
    half_stream
        .send_data(h2raw::grpc_message_start(100, 50).into(), false)
        .expect("data");
    for response in [headers_only, half] {
        let response = tokio::time::timeout(Duration::from_secs(5), response)
            .await
            .expect("answered within 5 s")
            .expect("a response");
        // A trailers-only answer: grpc-status 4 (DEADLINE_EXCEEDED) in the headers.
        assert_eq!(
            response.headers().get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"4"[..]),
            "{response:?}"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(50)
            && elapsed < timeout + Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once, 20,000 of them. The server's
/// work in flight is bounded by the stream limit whatever the resets, its memory does not grow
/// with the count, and other clients are answered throughout.
#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_is_bounded() {
    let sluice = Sluice::builder(RULES).start();
    grpc_check(sluice.grpc_addr, DEADLINE).await;
    let before = sluice.rss_bytes();
    let probe = Probe::start(&sluice, DEADLINE, 10_000);
    let mut raw = RawH2::connect(sluice.grpc_addr).await;
    let block = header_block(&grpc_headers());
    let mut sent = 0u32;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    'attack: for batch in 0..200u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let stream = 2 * (batch * 100 + i) + 1;
            bytes.extend(frame(HEADERS, END_HEADERS, stream, &block));
            bytes.extend(frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
        }
        if !raw.try_send(&bytes).await || std::time::Instant::now() > deadline {
            break 'attack;
        }
        sent += 100;
    }
    let ended = raw.wait_closed(Duration::from_millis(500)).await;
    let growth = sluice.rss_bytes().saturating_sub(before);
    let (rounds, worst) = probe.finish().await;
    println!(
        "rapid reset: {sent} streams opened and reset; connection {ended:?}; RSS +{} KiB; \
         well-behaved client {rounds} rounds, slowest {worst:?}",
        growth / 1024
    );
    assert!(
        growth <= PER_CONNECTION_BOUND + SLACK,
        "RSS grew by {growth} bytes"
    );
    grpc_check(sluice.grpc_addr, DEADLINE).await;
}

/// A header block that never ends: CONTINUATION frames until the server gives up. It must close
/// the connection rather than buffer them.
#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_closes_the_connection() {
    let sluice = Sluice::builder(RULES).start();
    grpc_check(sluice.grpc_addr, DEADLINE).await;
    let before = sluice.rss_bytes();
    let mut raw = RawH2::connect(sluice.grpc_addr).await;
    raw.send(&frame(HEADERS, 0, 1, &header_block(&grpc_headers())))
        .await;
    let junk = header_block(&[("x-junk", "j".repeat(1000))]);
    let mut sent = 0usize;
    for _ in 0..100_000 {
        if !raw.try_send(&frame(CONTINUATION, 0, 1, &junk)).await {
            break;
        }
        sent += 1;
    }
    let ended = raw.wait_closed(Duration::from_secs(5)).await;
    let growth = sluice.rss_bytes().saturating_sub(before);
    println!(
        "CONTINUATION flood: {sent} frames ({} KiB) before the server stopped reading; {ended:?}; RSS +{} KiB",
        sent * junk.len() / 1024,
        growth / 1024
    );
    assert!(ended.closed, "the connection stayed open: {ended:?}");
    assert!(sent < 100_000, "the server read every frame");
    assert!(
        growth <= PER_CONNECTION_BOUND + SLACK,
        "RSS grew by {growth} bytes"
    );
    grpc_check(sluice.grpc_addr, DEADLINE).await;
}

/// SETTINGS and PING floods from a client that never reads the acknowledgements: the server stops
/// reading once its answers back up, so its memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn settings_and_ping_floods_are_bounded() {
    let sluice = Sluice::builder(RULES).start();
    grpc_check(sluice.grpc_addr, DEADLINE).await;
    let before = sluice.rss_bytes();
    let probe = Probe::start(&sluice, DEADLINE, 10_000);
    for kind in [SETTINGS, PING] {
        let mut raw = RawH2::connect(sluice.grpc_addr).await;
        let one = match kind {
            SETTINGS => frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]),
            _ => frame(PING, 0, 0, &[7; 8]),
        };
        let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let mut sent = 0usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sent < 1_000_000 && std::time::Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(500), raw.try_send(&batch)).await {
                Ok(true) => sent += 1000,
                // Closed, or blocked: the server stopped reading.
                _ => break,
            }
        }
        let growth = sluice.rss_bytes().saturating_sub(before);
        println!(
            "{} flood: {sent} frames sent before the server stopped reading; RSS +{} KiB",
            if kind == SETTINGS { "SETTINGS" } else { "PING" },
            growth / 1024
        );
        assert!(
            growth <= PER_CONNECTION_BOUND + SLACK,
            "RSS grew by {growth} bytes"
        );
    }
    let (rounds, worst) = probe.finish().await;
    println!("well-behaved client: {rounds} rounds, slowest {worst:?}");
}

/// A frame larger than the server's `SETTINGS_MAX_FRAME_SIZE` (16 KiB) ends the connection with
/// `FRAME_SIZE_ERROR` before its payload is buffered.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_frame_ends_the_connection() {
    let sluice = Sluice::builder(RULES).start();
    let mut raw = RawH2::connect(sluice.grpc_addr).await;
    raw.send(&RawH2::headers_frame(1, &grpc_headers(), false))
        .await;
    let mut header = frame(DATA, 0, 1, &[]);
    // Declare 1 MiB.
    header[0] = 0x10;
    header[1] = 0;
    header[2] = 0;
    raw.send(&header).await;
    let _ = raw.try_send(&vec![0u8; 64 * 1024]).await;
    let ended = raw.wait_closed(Duration::from_secs(5)).await;
    assert_eq!(ended.goaway, Some(6), "{ended:?}");
    assert!(ended.closed, "{ended:?}");
}

/// Slowloris on the gRPC listener: a client that sends its connection preface a byte at a time is
/// closed when the handshake timeout passes, whatever it sends meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_preface_is_closed_at_the_handshake_timeout() {
    let sluice = Sluice::builder(RULES)
        .arg("--handshake-timeout-ms")
        .arg("500")
        .start();
    let mut raw = RawH2::connect_only(sluice.grpc_addr).await;
    let started = std::time::Instant::now();
    let mut closed_early = false;
    for byte in h2raw::PREFACE.iter().take(10) {
        if !raw.try_send(&[*byte]).await {
            closed_early = true;
            break;
        }
        let ended = raw.wait_closed(Duration::from_millis(100)).await;
        if ended.closed {
            closed_early = true;
            break;
        }
    }
    let ended = raw.wait_closed(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(closed_early || ended.closed, "still open after {elapsed:?}");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(2),
        "closed after {elapsed:?}"
    );
    assert_eq!(
        sluice
            .metric(
                "sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"handshake_timeout\"}"
            )
            .await,
        1.0
    );
}

/// An idle connection is sent a GOAWAY and closed at the idle timeout; a connection with a call in
/// flight whose peer stops answering pings is closed by the keepalive.
#[tokio::test(flavor = "multi_thread")]
async fn idle_and_unresponsive_connections_are_closed() {
    let sluice = Sluice::builder(RULES)
        .arg("--idle-timeout-secs")
        .arg("1")
        .arg("--keepalive-interval-secs")
        .arg("1")
        .arg("--keepalive-timeout-secs")
        .arg("1")
        .arg("--message-timeout-ms")
        .arg("60000")
        .start();
    // Idle: preface and settings, then nothing. Our SETTINGS ACK is the last thing sent.
    let mut idle = RawH2::connect(sluice.grpc_addr).await;
    idle.send(&frame(SETTINGS, h2raw::ACK, 0, &[])).await;
    let ended = idle.wait_closed(Duration::from_secs(5)).await;
    assert_eq!(ended.goaway, Some(0), "{ended:?}");
    assert!(ended.closed, "{ended:?}");
    assert!(
        ended.after >= Duration::from_millis(900) && ended.after < Duration::from_secs(3),
        "{ended:?}"
    );

    // Busy but silent: one call waiting for its message; the client never answers a PING (it
    // reads, so the server's writes do not block, but never writes again).
    let mut silent = RawH2::connect(sluice.grpc_addr).await;
    silent.send(&frame(SETTINGS, h2raw::ACK, 0, &[])).await;
    silent
        .send(&RawH2::headers_frame(1, &grpc_headers(), false))
        .await;
    let ended = silent.wait_closed(Duration::from_secs(6)).await;
    assert!(ended.closed, "{ended:?}");
    assert!(
        ended.after >= Duration::from_millis(1900) && ended.after < Duration::from_secs(5),
        "{ended:?}"
    );
    assert_eq!(
        sluice
            .metric(
                "sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"keepalive\"}"
            )
            .await,
        1.0
    );
    assert_eq!(
        sluice
            .metric("sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"idle\"}")
            .await,
        1.0
    );
}
