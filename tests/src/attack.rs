//! What the adversarial tests share: a well-behaved client that keeps checking while an attack
//! runs (every answer must come within its deadline), and the attacks that need a real HTTP/2
//! client library rather than raw frames.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::h2raw::grpc_message_start;
use crate::rls::{OK, descriptor, request};
use crate::sluice::Sluice;

/// The rule set the attacks run against: one limited key, generous enough never to refuse the
/// well-behaved client.
pub const RULES: &str = "
domain: edge
descriptors:
  - key: app_id
    rate_limit: { unit: second, requests_per_unit: 1000000 }
";

/// One check over a fresh gRPC connection, answered OK within `deadline`; how long it took.
pub async fn grpc_check(addr: SocketAddr, deadline: Duration) -> Duration {
    let start = Instant::now();
    let answer = tokio::time::timeout(deadline, async {
        let mut client = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(format!("http://{addr}"))
            .await
            .map_err(|e| format!("{e:?}"))?;
        client
            .should_rate_limit(request("edge", vec![descriptor(&[("app_id", "good")])]))
            .await
            .map_err(|e| format!("{e:?}"))
    })
    .await;
    match answer {
        Ok(Ok(response)) => assert_eq!(response.get_ref().overall_code, OK),
        Ok(Err(e)) => panic!("the well-behaved gRPC client was refused: {e:?}"),
        Err(_) => panic!("the well-behaved gRPC client got no answer within {deadline:?}"),
    }
    start.elapsed()
}

/// One `GET /healthcheck` over a fresh HTTP connection, answered within `deadline`.
pub async fn http_check(sluice: &Sluice, deadline: Duration) -> Duration {
    let start = Instant::now();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let answer = tokio::time::timeout(deadline, client.get(sluice.url("/healthcheck")).send())
        .await
        .unwrap_or_else(|_| {
            panic!("the well-behaved HTTP client got no answer within {deadline:?}")
        })
        .unwrap_or_else(|e| panic!("the well-behaved HTTP client failed: {e:?}"));
    assert_eq!(answer.status(), 200);
    start.elapsed()
}

/// Resident memory one stalled stream may hold: 8 KiB in a release build, the bound
/// `docs/security.md` states. The debug build the tests run by default keeps larger futures
/// (measured 8.5 to 9 KiB a stream against 6 to 7 in release), so 10 KiB there.
pub const STREAM_STATE: u64 = if cfg!(debug_assertions) {
    10 * 1024
} else {
    8 * 1024
};

/// The per-connection bound with the defaults (100 streams, a 128 KiB buffer budget): each
/// stream's state, and three times the budget for request data held by the connection window
/// (read, then copied once) and the headers held by the budget.
pub const PER_CONNECTION_BOUND: u64 = 100 * STREAM_STATE + 3 * 128 * 1024;

/// Resident memory grows in 2 MiB steps: nearly all of what the stalled streams add is in
/// transparent huge pages (`AnonHugePages` in `/proc/PID/smaps_rollup`), and each thread's heap
/// rounds up to one. Runs of the same test differ by up to three steps.
pub const SLACK: u64 = 8 * 1024 * 1024;

/// A well-behaved client checking over gRPC and HTTP, one after the other, until stopped; each
/// answer within `deadline` (a panic in the task otherwise). At most `max_checks`.
pub struct Probe {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Duration)>,
}

impl Probe {
    pub fn start(sluice: &Sluice, deadline: Duration, max_checks: usize) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let grpc = sluice.grpc_addr;
        let http = sluice.url("/healthcheck");
        let task = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .expect("client");
                let mut worst = Duration::ZERO;
                let mut checks = 0;
                while !stop.load(Ordering::Relaxed) && checks < max_checks {
                    worst = worst.max(grpc_check(grpc, deadline).await);
                    let start = Instant::now();
                    let r = tokio::time::timeout(deadline, client.get(&http).send())
                        .await
                        .unwrap_or_else(|_| panic!("HTTP probe: no answer within {deadline:?}"))
                        .unwrap_or_else(|e| panic!("HTTP probe failed: {e}"));
                    assert_eq!(r.status(), 200);
                    worst = worst.max(start.elapsed());
                    checks += 1;
                }
                (checks, worst)
            })
        };
        Probe { stop, task }
    }

    /// Stops the probe: how many rounds it made and its slowest answer.
    pub async fn finish(self) -> (usize, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the well-behaved client failed")
    }
}

/// An HTTP/2 connection holding `streams` `ShouldRateLimit` calls, each with a header of `pad`
/// bytes and a message declared 64 KiB that stops one byte short. The h2 library sends what the
/// server's flow-control windows allow and keeps the rest. Returns once the server has read
/// everything sent (a PING answered after it), with the handles that keep the calls open, and
/// how many calls the server took before refusing or limiting.
pub struct Stalled {
    _send: Vec<h2::SendStream<Bytes>>,
    _responses: Vec<h2::client::ResponseFuture>,
    _client: h2::client::SendRequest<Bytes>,
    pub opened: usize,
}

pub async fn stall_calls(addr: SocketAddr, streams: usize, pad: usize) -> Stalled {
    let message = Bytes::from(grpc_message_start(64 * 1024, 64 * 1024 - 1));
    stall(addr, streams, message, |_| {
        http::Request::post(
            "http://sluice/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        )
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-pad", "p".repeat(pad))
        .body(())
        .expect("request")
    })
    .await
}

/// The same over cleartext HTTP/2 to the HTTP listener: `POST /json` requests declaring a 64 KiB
/// body and sending all but its last byte.
pub async fn stall_bodies(addr: SocketAddr, streams: usize) -> Stalled {
    let body = Bytes::from(vec![b' '; 64 * 1024 - 1]);
    stall(addr, streams, body, |_| {
        http::Request::post("http://sluice/json")
            .header("content-type", "application/json")
            .header("content-length", (64 * 1024).to_string())
            .body(())
            .expect("request")
    })
    .await
}

async fn stall(
    addr: SocketAddr,
    streams: usize,
    data: Bytes,
    request: impl Fn(usize) -> http::Request<()>,
) -> Stalled {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, mut conn) = h2::client::Builder::new()
        .max_send_buffer_size(1 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .expect("HTTP/2 handshake");
    let mut ping_pong = conn.ping_pong().expect("ping_pong");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client;
    let mut send = Vec::new();
    let mut responses = Vec::new();
    for i in 0..streams {
        // The server's stream limit makes `ready` wait: stop there.
        let Ok(Ok(ready)) =
            tokio::time::timeout(Duration::from_millis(500), client.clone().ready()).await
        else {
            break;
        };
        client = ready;
        let Ok((response, mut stream)) = client.send_request(request(i), false) else {
            break;
        };
        if stream.send_data(data.clone(), false).is_err() {
            break;
        }
        send.push(stream);
        responses.push(response);
    }
    // Frames are read in order: once this PING is answered, the server has read every frame the
    // windows let through before it.
    tokio::time::timeout(Duration::from_secs(10), ping_pong.ping(h2::Ping::opaque()))
        .await
        .expect("PING answered within 10 s")
        .expect("PING answered");
    Stalled {
        opened: send.len(),
        _send: send,
        _responses: responses,
        _client: client,
    }
}
