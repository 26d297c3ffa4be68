//! The gRPC listener's transports beyond plain TCP: a Unix domain socket (`--grpc-uds`, the
//! reference's `GRPC_UDS`) served to a real client over the socket, and connection ageing
//! (`--max-connection-age-ms`, the reference's `GRPC_MAX_CONNECTION_AGE`): a client's connection
//! is sent a GOAWAY, and the client reconnects without a failed call.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use hyper_util::rt::TokioIo;
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
async fn an_aged_connection_gets_a_goaway_and_its_client_reconnects_without_a_failed_call() {
    let sluice = Sluice::builder(RULES)
        .arg("--max-connection-age-ms")
        .arg("300")
        .arg("--max-connection-age-grace-ms")
        .arg("5000")
        .start();
    let mut client = sluice.grpc().await;
    let accepted = "sluice_connections_accepted_total{listener=\"grpc\"}";
    let aged = "sluice_connections_closed_by_server_total{listener=\"grpc\",reason=\"max_age\"}";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut calls = 0u32;
    // Calls back to back until the client has been moved to a third connection (bounded).
    while sluice.metric(accepted).await < 3.0 {
        assert!(
            Instant::now() < deadline && calls < 100_000,
            "no third connection after {calls} calls"
        );
        for _ in 0..20 {
            if let Err(status) = check(&mut client).await {
                panic!("call {calls} failed across a GOAWAY: {status:?}");
            }
            calls += 1;
        }
    }
    assert!(sluice.metric(aged).await >= 2.0);
    assert!(calls > 0);
}
