//! Rules from a control plane: the real binary as the client of a real State-of-the-World xDS
//! server (tests/src/xds.rs) on a loopback port, configured with the reference's variables.
//! Pushes apply and are ACKed; malformed, invalid and oversized pushes are refused while the last
//! good rules keep serving; a restarted server is found again; start-up waits for the first
//! rules unless told not to.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use sluice_tests::redis::free_port;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::{Sluice, SluiceBuilder};
use sluice_tests::xds::{Received, Snapshot, TYPE_URL, XdsServer};
use tonic::transport::Channel;

fn config(domain: &str, key: &str, per_hour: u32) -> RateLimitConfig {
    RateLimitConfig {
        name: domain.into(),
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            key: key.into(),
            rate_limit: Some(RateLimitPolicy {
                unit: RateLimitUnit::Hour as i32,
                requests_per_unit: per_hour,
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

fn sluice(server: &XdsServer) -> SluiceBuilder {
    Sluice::builder("")
        .without_config()
        .env("CONFIG_TYPE", "GRPC_XDS_SOTW")
        .env("CONFIG_GRPC_XDS_SERVER_URL", &server.addr.to_string())
        .env("CONFIG_GRPC_XDS_NODE_ID", "ratelimit-test")
        .env("CONFIG_GRPC_XDS_NODE_METADATA", "zone:eu1,role=edge")
        .env(
            "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
            "x-token:s3cret",
        )
        .env("CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", "50ms")
        .env("XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "50ms")
        .env("XDS_CLIENT_BACKOFF_MAX_INTERVAL", "200ms")
}

async fn check(client: &mut RateLimitServiceClient<Channel>, key: &str) -> RateLimitResponse {
    client
        .should_rate_limit(request("x", vec![descriptor(&[(key, "v")])]))
        .await
        .expect("check")
        .into_inner()
}

/// The limit the answer reports for its one descriptor (0 when no rule matched).
fn limit_of(answer: &RateLimitResponse) -> u32 {
    answer.statuses[0]
        .current_limit
        .as_ref()
        .map_or(0, |l| l.requests_per_unit)
}

fn is_ack(r: &Received, version: &str) -> bool {
    r.request.version_info == version
        && !r.request.response_nonce.is_empty()
        && r.request.error_detail.is_none()
}

fn is_nack_keeping(r: &Received, version: &str, reason: &str) -> bool {
    r.request.version_info == version
        && r.request
            .error_detail
            .as_ref()
            .is_some_and(|e| e.code == 3 && e.message.contains(reason))
}

/// Checks `key` until its limit reads `per_hour` (bounded); the time that took.
async fn until_limit(
    client: &mut RateLimitServiceClient<Channel>,
    key: &str,
    per_hour: u32,
) -> Duration {
    let start = Instant::now();
    for _ in 0..20_000 {
        if limit_of(&check(client, key).await) == per_hour {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the limit of {key} never became {per_hour}"
        );
    }
    panic!("the limit of {key} never became {per_hour}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_rules_decide_updates_apply_and_bad_pushes_are_nacked() {
    let mut server = XdsServer::start(0).await;
    server.push("1", &[config("x", "k", 2)]);
    let sluice = sluice(&server).start();

    // The stream identified itself as the reference's client does.
    let first = server
        .wait_for("opening the stream", |r| {
            r.request.response_nonce.is_empty()
        })
        .await;
    let node = first.request.node.as_ref().expect("a node");
    assert_eq!(node.id, "ratelimit-test");
    let meta = &node.metadata.as_ref().expect("metadata").fields;
    assert_eq!(
        format!("{:?}", meta["zone"].kind),
        "Some(StringValue(\"eu1\"))"
    );
    assert_eq!(
        format!("{:?}", meta["role"].kind),
        "Some(StringValue(\"edge\"))"
    );
    assert!(
        first
            .metadata
            .contains(&("x-token".into(), "s3cret".into())),
        "{:?}",
        first.metadata
    );
    assert_eq!(first.request.type_url, TYPE_URL);
    server
        .wait_for("ACKing version 1", |r| is_ack(r, "1"))
        .await;

    // Version 1 decides.
    let mut client = sluice.grpc().await;
    let codes: Vec<i32> = {
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(check(&mut client, "k").await.overall_code);
        }
        codes
    };
    assert_eq!(
        codes,
        [Code::Ok as i32, Code::Ok as i32, Code::OverLimit as i32]
    );

    // Updates apply: from each push to the new rules deciding (printed for the closing note).
    server.push("2", &[config("x", "k", 4), config("y", "other", 1)]);
    let took = until_limit(&mut client, "k", 4).await;
    server.push("3", &[config("x", "k", 5)]);
    let took3 = until_limit(&mut client, "k", 5).await;
    eprintln!("xDS push to deciding: {took:?}, {took3:?}");
    server
        .wait_for("ACKing version 3", |r| is_ack(r, "3"))
        .await;

    // Refused, each NACKed naming version 3, which keeps deciding.
    let mut unknown_unit = config("x", "k", 9);
    unknown_unit.descriptors[0]
        .rate_limit
        .as_mut()
        .expect("limit")
        .unit = RateLimitUnit::Unknown as i32;
    let garbage = Any {
        type_url: TYPE_URL.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let refusals = [
        (
            "an unknown unit",
            Snapshot::of("4", &[unknown_unit]),
            "xds:x:",
        ),
        (
            "an empty domain",
            Snapshot::of("5", &[config("", "k", 9)]),
            "domain",
        ),
        (
            "a duplicate domain",
            Snapshot::of("6", &[config("x", "k", 9), config("x", "k2", 9)]),
            "duplicate domain",
        ),
        (
            "a resource that does not decode",
            Snapshot {
                resources: vec![garbage],
                ..Snapshot::of("7", &[])
            },
            "does not decode",
        ),
        (
            "a response of another type",
            Snapshot {
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                ..Snapshot::of("8", &[])
            },
            "Cluster",
        ),
    ];
    for (what, snapshot, reason) in refusals {
        server.push_raw(snapshot);
        server
            .wait_for(what, |r| is_nack_keeping(r, "3", reason))
            .await;
    }
    assert_eq!(
        limit_of(&check(&mut client, "k").await),
        5,
        "a refused push replaced the rules"
    );
    assert!(sluice.wait_for_log("rule set from xDS refused", Duration::from_secs(5)));
    let refused = sluice
        .metric("sluice_config_loads_total{result=\"error\"}")
        .await;
    assert!(refused >= 5.0, "{refused}");

    // The server crashes and comes back: the stream is opened again, announcing version 3.
    server.stop().await;
    let before = server.received().len();
    server.restart().await;
    server.push("9", &[config("x", "k", 7)]);
    let reopened = server
        .wait_for("reopening the stream", |r| {
            r.request.response_nonce.is_empty() && r.request.version_info == "3"
        })
        .await;
    assert_eq!(reopened.request.node.expect("node").id, "ratelimit-test");
    assert!(server.received().len() > before);
    until_limit(&mut client, "k", 7).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_over_the_size_limit_breaks_the_stream_and_the_last_rules_keep_serving() {
    let mut server = XdsServer::start(0).await;
    server.push("1", &[config("x", "k", 3)]);
    let sluice = sluice(&server)
        .env("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", "65536")
        .start();
    server
        .wait_for("ACKing version 1", |r| is_ack(r, "1"))
        .await;
    let mut client = sluice.grpc().await;
    assert_eq!(limit_of(&check(&mut client, "k").await), 3);

    // 200 KB of descriptors: more than the client reads.
    let mut huge = config("x", "k", 4);
    for i in 0..5_000 {
        huge.descriptors.push(RateLimitDescriptor {
            key: format!("padding_key_number_{i:06}"),
            value: "v".repeat(20),
            ..Default::default()
        });
    }
    let opened = server
        .received()
        .iter()
        .filter(|r| r.request.response_nonce.is_empty())
        .count();
    server.push("2", &[huge]);
    // The client drops the stream and opens another, still on version 1.
    server
        .wait_for("a new stream after the oversized push", |r| {
            r.request.response_nonce.is_empty() && r.request.version_info == "1"
        })
        .await;
    let reopened = server
        .received()
        .iter()
        .filter(|r| r.request.response_nonce.is_empty())
        .count();
    assert!(reopened > opened);
    assert_eq!(limit_of(&check(&mut client, "k").await), 3);
    assert!(sluice.wait_for_log("the xDS stream ended", Duration::from_secs(5)));
    // A push within the limit is taken again.
    server.push("3", &[config("x", "k", 6)]);
    until_limit(&mut client, "k", 6).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_rules_unless_forced() {
    // Forced: serving before any control plane exists, every check OK.
    let port = free_port();
    let mut server = XdsServer::start(port).await;
    server.stop().await;
    let forced = sluice(&server)
        .env("FORCE_START_WITHOUT_INITIAL_CONFIG", "true")
        .start();
    let mut client = forced.grpc().await;
    let answer = check(&mut client, "k").await;
    assert_eq!(answer.overall_code, Code::Ok as i32);
    assert_eq!(limit_of(&answer), 0);
    // The control plane comes up: its rules apply.
    server.push("1", &[config("x", "k", 8)]);
    server.restart().await;
    until_limit(&mut client, "k", 8).await;

    // Not forced: no "listening" until the first rules that load; a refused first push does not
    // count.
    let mut second = XdsServer::start(0).await;
    let mut bad = config("x", "k", 1);
    bad.descriptors[0].rate_limit.as_mut().expect("limit").unit = 99;
    second.push("1", &[bad]);
    let builder = sluice(&second);
    // Started on a thread of its own: it returns only once Sluice is listening.
    let start = std::thread::spawn(move || builder.start());
    second
        .wait_for("NACKing the first push", |r| {
            r.request.error_detail.is_some()
        })
        .await;
    second.push("2", &[config("x", "k", 9)]);
    let started = tokio::task::spawn_blocking(move || start.join().expect("start"))
        .await
        .expect("join");
    let mut client = started.grpc().await;
    assert_eq!(limit_of(&check(&mut client, "k").await), 9);
    assert!(
        started
            .logs()
            .iter()
            .any(|l| l.contains("rule set from xDS refused"))
    );
    second.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_come_over_mutual_tls_from_a_control_plane_that_checks_sluice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = sluice_tests::tls::TestCa::new(dir.path(), "");
    let (server_cert, server_key) = ca.leaf(&["xds.internal"], "xds", false);
    let (client_cert, client_key) = ca.leaf(&["sluice"], "sluice", false);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("PEM file");
    let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_owned();
    let server =
        XdsServer::start_tls(read(&server_cert), read(&server_key), Some(read(&ca.cert))).await;
    server.push("1", &[config("x", "k", 11)]);
    let with_cert = sluice(&server)
        .env("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true")
        .env("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", &path(&ca.cert))
        .env("CONFIG_GRPC_XDS_SERVER_TLS_SAN", "xds.internal")
        .env("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", &path(&client_cert))
        .env("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", &path(&client_key))
        .start();
    server
        .wait_for("ACKing version 1 over mTLS", |r| is_ack(r, "1"))
        .await;
    let mut client = with_cert.grpc().await;
    assert_eq!(limit_of(&check(&mut client, "k").await), 11);

    // Without its client certificate, Sluice cannot get rules from this server.
    let without = sluice(&server)
        .env("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true")
        .env("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", &path(&ca.cert))
        .env("CONFIG_GRPC_XDS_SERVER_TLS_SAN", "xds.internal")
        .env("FORCE_START_WITHOUT_INITIAL_CONFIG", "true")
        .start();
    let refused = |l: &String| {
        l.contains("the xDS stream ended") || l.contains("cannot reach the xDS server")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !without.logs().iter().any(refused) {
        assert!(Instant::now() < deadline, "no failed connection logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut client = without.grpc().await;
    assert_eq!(
        limit_of(&check(&mut client, "k").await),
        0,
        "rules arrived without a client certificate"
    );
}
