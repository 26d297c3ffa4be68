//! The gRPC listener's transports beyond plain TCP: a Unix domain socket (`--grpc-uds`, the
//! reference's `GRPC_UDS`) served to a real client over the socket, and connection ageing
//! (`--max-connection-age-ms`, the reference's `GRPC_MAX_CONNECTION_AGE`): a connection is sent a
//! graceful GOAWAY at its age and closed after its grace, and a client moves to a new one.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use hyper_util::rt::TokioIo;
use sluice_tests::h2raw::RawH2;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit};
use tonic::transport::{Channel, Endpoint};

const RULES: &str = "domain: t\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1000000}\n";

async fn check(client: &mut RateLimitServiceClient<Channel>) -> Result<(), tonic::Status> {
    let answer = client
        .should_rate_limit(request("t", vec![descriptor(&[("k", "v")])]))
        .await?;
    assert_eq!(answer.into_inner().overall_code, Code::Ok as i32);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_is_served_on_a_unix_socket_replacing_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rls.sock");
    // A socket file left behind by a process that died.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let mut sluice = Sluice::builder(RULES)
        .env("GRPC_UDS", socket.to_str().unwrap())
        .start();
    assert_eq!(sluice.grpc_uds.as_deref(), Some(socket.as_path()));

    let path = socket.clone();
    // The URI is required by the API and unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .unwrap();
    let mut client = RateLimitServiceClient::new(channel);
    for _ in 0..10 {
        check(&mut client).await.unwrap();
    }
    sluice.terminate(Duration::from_secs(15));
    assert!(!socket.exists(), "the socket file outlived the server");
}

#[test]
fn a_unix_socket_path_that_is_not_a_socket_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let (status, stderr) = run_to_exit(
        &[
            "--config",
            rules.to_str().unwrap(),
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-uds",
            rules.to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(!status.expect("exits").success());
    assert!(
        stderr.contains("rules.yaml") && stderr.contains("not a socket"),
        "{stderr}"
    );
    assert!(rules.exists(), "a regular file was removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aged_connection_is_sent_a_graceful_goaway_then_closed_after_its_grace() {
    let sluice = Sluice::builder(RULES)
        .arg("--max-connection-age-ms")
        .arg("300")
        .arg("--max-connection-age-grace-ms")
        .arg("700")
        .start();
    // A raw client that never answers the server's PING, so only the grace ends the connection.
    let mut raw = RawH2::connect(sluice.grpc_addr).await;
    let ended = raw.wait_closed(Duration::from_secs(10)).await;
    assert_eq!(ended.goaway, Some(0), "a GOAWAY with NO_ERROR: {ended:?}");
    assert!(ended.closed, "{ended:?}");
    // The age is 300 ms give or take a tenth, then the 700 ms grace.
    assert!(
        ended.after >= Duration::from_millis(900) && ended.after < Duration::from_secs(5),
        "{ended:?}"
    );
    let aged = "sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"max_age\"}";
    assert_eq!(sluice.metric(aged).await, 1.0);

    // A real client keeps working across ages: it reconnects for its next calls.
    let mut client = sluice.grpc().await;
    let accepted = "sluice_connections_accepted_total{listener=\"grpc\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    while sluice.metric(accepted).await < 4.0 {
        assert!(
            Instant::now() < deadline,
            "the client was never moved to a new connection"
        );
        // tonic has no transparent retry: a call it dispatched onto a connection just as the
        // GOAWAY arrived can fail; gRPC clients that retry such calls (grpcio, Envoy) see none,
        // which tests/conformance/test_connection_age.py checks.
        let _ = check(&mut client).await;
    }
    check(&mut client)
        .await
        .expect("a call on the newest connection");
}
