//! A synthetic upstream for adaptive limits: HTTP/1.1 on 127.0.0.1 with keep-alive, each answer
//! (`200 ok`) delayed by `base + per_request × requests in flight` (the count kept by the server,
//! this request included), as a server whose threads contend would be. `per_request` may change
//! while it runs, to make the upstream faster or slower.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Upstream {
    pub addr: SocketAddr,
    /// Microseconds of latency per request in flight.
    pub per_request_us: Arc<AtomicU64>,
}

impl Upstream {
    /// Starts one on the current runtime: `base` plus `per_request` per request in flight.
    pub async fn start(base: Duration, per_request: Duration) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("its address");
        let per_request_us = Arc::new(AtomicU64::new(per_request.as_micros() as u64));
        let in_flight = Arc::new(AtomicU64::new(0));
        let per = Arc::clone(&per_request_us);
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, base, Arc::clone(&per), Arc::clone(&in_flight)));
            }
        });
        Upstream {
            addr,
            per_request_us,
        }
    }
}

/// One connection's requests, in turn.
async fn serve(
    mut conn: tokio::net::TcpStream,
    base: Duration,
    per: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        buf.drain(..end);
        let n = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = base + Duration::from_micros(per.load(Ordering::Relaxed) * n);
        tokio::time::sleep(delay).await;
        in_flight.fetch_sub(1, Ordering::SeqCst);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if conn.write_all(answer).await.is_err() {
            return;
        }
    }
}
