//! The HTTP listener under attack (loopback only, every loop bounded): slow heads, slow bodies,
//! idle keep-alive connections and cleartext HTTP/2 streams that stall their bodies, each with
//! its bound asserted while a well-behaved client keeps getting answers.

use std::time::{Duration, Instant};

use sluice_tests::attack::{
    PER_CONNECTION_BOUND, Probe, RULES, SLACK, grpc_check, http_check, stall_bodies,
};
use sluice_tests::sluice::Sluice;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(2);

/// Reads until the server closes the connection (or `within` passes): what it sent, and when it
/// closed.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(start.elapsed()),
                );
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn around(elapsed: Option<Duration>, expected: Duration) -> bool {
    elapsed.is_some_and(|e| {
        e + Duration::from_millis(60) >= expected && e < expected + Duration::from_secs(2)
    })
}

/// Slowloris: a request head sent a byte at a time is closed when the header-read timeout passes,
/// however steadily the bytes come; so is a connection that never sends a first request.
#[tokio::test(flavor = "multi_thread")]
async fn slow_and_missing_request_heads_are_closed_at_the_header_timeout() {
    let sluice = Sluice::builder(RULES)
        .arg("--header-read-timeout-ms")
        .arg("500")
        .start();
    let probe = Probe::start(&sluice, DEADLINE, 1000);

    let mut slow = TcpStream::connect(sluice.http_addr).await.expect("connect");
    let started = Instant::now();
    let head = b"GET /healthcheck HTTP/1.1\r\nHost: sluice\r\nX-Slow: ";
    let mut cut = false;
    for byte in head.iter().chain(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()) {
        if slow.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        // One byte every 50 ms keeps any per-read timer from firing.
        let (_, closed) = read_until_closed(&mut slow, Duration::from_millis(50)).await;
        if closed.is_some() {
            cut = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(cut, "a trickled head was still open after {elapsed:?}");
    assert!(
        around(Some(elapsed), Duration::from_millis(500)),
        "{elapsed:?}"
    );

    let mut silent = TcpStream::connect(sluice.http_addr).await.expect("connect");
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(around(closed, Duration::from_millis(500)), "{closed:?}");

    let (rounds, worst) = probe.finish().await;
    println!("well-behaved client: {rounds} rounds, slowest {worst:?}");
    assert_eq!(
        sluice
            .metric("sluice_connections_closed_by_server_total{listener=\"http\",reason=\"header_timeout\"}")
            .await,
        2.0
    );
}

/// A keep-alive connection between requests is idle, not a slow head: it is closed at the idle
/// timeout, and a request on it before then is served.
#[tokio::test(flavor = "multi_thread")]
async fn idle_keep_alive_connections_close_at_the_idle_timeout() {
    let sluice = Sluice::builder(RULES)
        .arg("--header-read-timeout-ms")
        .arg("300")
        .arg("--idle-timeout-secs")
        .arg("1")
        .start();
    let mut tcp = TcpStream::connect(sluice.http_addr).await.expect("connect");
    let request = b"GET /healthcheck HTTP/1.1\r\nHost: sluice\r\n\r\n";
    tcp.write_all(request).await.expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tcp.read(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    // Past the header timeout, the idle connection still serves.
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_millis(600)).await;
    assert_eq!(closed, None, "closed while idle before the idle timeout");
    tcp.write_all(request).await.expect("write");
    let n = tcp.read(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"));
    let (_, closed) = read_until_closed(&mut tcp, Duration::from_secs(4)).await;
    assert!(around(closed, Duration::from_secs(1)), "{closed:?}");
}

/// A body that stops coming is answered 408 at the message timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_body_is_answered_408() {
    let sluice = Sluice::builder(RULES)
        .arg("--message-timeout-ms")
        .arg("500")
        .start();
    let mut tcp = TcpStream::connect(sluice.http_addr).await.expect("connect");
    tcp.write_all(
        b"POST /json HTTP/1.1\r\nHost: sluice\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"domain\":",
    )
    .await
    .expect("write");
    let (answer, closed) = read_until_closed(&mut tcp, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(around(closed, Duration::from_millis(500)), "{closed:?}");
}

/// Cleartext HTTP/2 clients that open every stream they may and stall each body one byte short:
/// the connection's buffer budget bounds what each holds (the bodies past it are answered 429),
/// and a well-behaved client is answered throughout.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_http2_bodies_hold_at_most_the_connection_budget() {
    const CONNECTIONS: u64 = 20;
    let sluice = Sluice::builder(RULES)
        .arg("--message-timeout-ms")
        .arg("60000")
        .start();
    // Warm up both of the probe's paths, so allocator pools and their first connections'
    // buffers are in the baseline.
    for _ in 0..20 {
        grpc_check(sluice.grpc_addr, DEADLINE).await;
        http_check(&sluice, DEADLINE).await;
    }
    let before = sluice.rss_bytes();
    let probe = Probe::start(&sluice, DEADLINE, 10_000);
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        held.push(stall_bodies(sluice.http_addr, 100).await);
    }
    let growth = sluice.rss_bytes().saturating_sub(before);
    println!(
        "{CONNECTIONS} h2c connections of stalled bodies: RSS +{} KiB, {} KiB a connection \
         (bound {} KiB)",
        growth / 1024,
        growth / CONNECTIONS / 1024,
        PER_CONNECTION_BOUND / 1024
    );
    assert!(
        growth <= CONNECTIONS * PER_CONNECTION_BOUND + SLACK,
        "RSS grew by {growth} bytes"
    );
    let (rounds, worst) = probe.finish().await;
    println!("well-behaved client: {rounds} rounds, slowest {worst:?}");
    assert!(rounds > 0);
}
