//! End-to-end: runtime overrides shared by three `sluice` replicas, through a real redis-server
//! (pub/sub, with polling as the fallback) and through a real etcd (watch): every replica applies
//! an override set on any one of them within a second, and drops it when it lapses or is deleted.

use std::time::{Duration, Instant};

use serde_json::json;
use sluice_tests::admin::{Admin, rlconfig, token_file};
use sluice_tests::etcd::EtcdServer;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

const RULES: &str = r#"
domain: edge
descriptors:
  - key: app_id
    rate_limit: {unit: hour, requests_per_unit: 1}
"#;

/// How long a replica may take to apply a change made on another.
const WITHIN: Duration = Duration::from_secs(1);

/// Polls every replica until `done` holds for its `/rlconfig`; returns how long the slowest took.
async fn until_all(replicas: &[Sluice], bound: Duration, done: impl Fn(&str) -> bool) -> Duration {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for r in replicas {
        loop {
            if done(&rlconfig(r).await) {
                slowest = slowest.max(started.elapsed());
                break;
            }
            assert!(
                started.elapsed() < bound,
                "a replica did not follow within {bound:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    slowest
}

async fn check(s: &Sluice, app: &str) -> i32 {
    let mut client = s.grpc().await;
    client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", app)])]))
        .await
        .expect("check")
        .into_inner()
        .overall_code
}

async fn three_replicas_follow(replicas: &[Sluice], store: &str) {
    let admin = Admin::new(replicas[0].http_addr);
    // One per hour: this uses it up (for every replica, when they share Redis's counters).
    assert_eq!(check(&replicas[0], "bot").await, OK);
    let (status, set) = admin
        .put(
            "/overrides",
            json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "bot"}], "limit": 100}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let line = "edge.app_id: override [app_id=bot] limit=100";
    let took = until_all(&replicas[1..], Duration::from_secs(5), |c| c.contains(line)).await;
    eprintln!("{store}: an override reached every replica in {took:?}");
    assert!(took <= WITHIN, "{store}: {took:?}");
    // The replicas decide with it: each admits more than the rule's one per hour.
    for r in replicas {
        assert_eq!(check(r, "bot").await, OK);
    }
    let (_, list) = Admin::new(replicas[2].http_addr).get("/overrides").await;
    assert_eq!(list["store"], store);
    assert_eq!(list["overrides"][0]["in_force"], true);

    // Deleted on another replica: gone everywhere.
    let id = set["override"]["id"].as_str().expect("id");
    let (status, _) = Admin::new(replicas[1].http_addr)
        .delete(&format!("/overrides/{id}"))
        .await;
    assert_eq!(status, 200);
    let took = until_all(replicas, Duration::from_secs(5), |c| !c.contains(line)).await;
    eprintln!("{store}: a deletion reached every replica in {took:?}");
    assert!(took <= WITHIN, "{store}: {took:?}");
    for r in replicas {
        assert_eq!(check(r, "bot").await, OVER_LIMIT);
    }

    // An override with an expiry lapses on every replica.
    let (status, _) = admin
        .put(
            "/overrides",
            json!({"domain": "edge", "descriptor": [{"key": "app_id", "prefix": "tmp-"}], "limit": 50, "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(status, 200);
    until_all(replicas, Duration::from_secs(5), |c| {
        c.contains("[app_id=tmp-*]")
    })
    .await;
    until_all(replicas, Duration::from_secs(5), |c| {
        !c.contains("[app_id=tmp-*]")
    })
    .await;
    let (_, audit) = Admin::new(replicas[2].http_addr).get("/audit").await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(3),
        "{audit}"
    );
}

fn replica(configure: impl Fn() -> Vec<String>, tokens: &str) -> Sluice {
    let mut b = Sluice::builder(RULES).arg("--admin-token-file").arg(tokens);
    for a in configure() {
        b = b.arg(&a);
    }
    b.start()
}

#[tokio::test]
async fn three_replicas_share_overrides_through_redis() {
    let redis = RedisServer::start();
    let (_dir, tokens) = token_file();
    let tokens = tokens.to_str().expect("utf-8");
    // A short poll, so the fallback below also stays within the second.
    let args = || {
        vec![
            "--backend".into(),
            "redis".into(),
            "--redis-url".into(),
            redis.url(),
            "--override-poll-ms".into(),
            "250".into(),
        ]
    };
    let replicas: Vec<Sluice> = (0..3).map(|_| replica(args, tokens)).collect();
    three_replicas_follow(&replicas, "redis").await;

    // A change that reaches Redis without its notification (as if the message were lost) still
    // reaches every replica: by the poll.
    let o = json!({
        "id": "lost-message", "domain": "edge",
        "descriptor": [{"key": "app_id", "value": "quiet"}], "limit": 7,
        "by": "ops", "set_at": 1
    });
    redis.cli(&["HSET", "{sluice-overrides}", "lost-message", &o.to_string()]);
    let took = until_all(&replicas, Duration::from_secs(5), |c| {
        c.contains("[app_id=quiet]")
    })
    .await;
    eprintln!("redis: a change without its message reached every replica in {took:?}");
    assert!(took <= WITHIN, "{took:?}");
}

#[tokio::test]
async fn three_replicas_share_overrides_through_etcd() {
    let etcd = EtcdServer::start();
    let (_dir, tokens) = token_file();
    let tokens = tokens.to_str().expect("utf-8");
    let args = || {
        vec![
            "--override-store".into(),
            "etcd".into(),
            "--etcd-endpoints".into(),
            etcd.url(),
        ]
    };
    let replicas: Vec<Sluice> = (0..3).map(|_| replica(args, tokens)).collect();
    three_replicas_follow(&replicas, "etcd").await;

    // A replica started later loads what is there.
    let late = replica(args, tokens);
    let (status, _) = Admin::new(late.http_addr)
        .put(
            "/overrides",
            json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "x"}], "mode": "shadow"}),
        )
        .await;
    assert_eq!(status, 200);
    let fresh = replica(args, tokens);
    assert!(rlconfig(&fresh).await.contains("[app_id=x] mode=shadow"));
}

#[tokio::test]
async fn an_override_store_that_cannot_be_used_stops_start_up_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).expect("write rules");
    let rules = rules.to_str().expect("utf-8");
    let run = |extra: &[&str]| {
        let mut args = vec!["--config", rules, "--override-store", "etcd"];
        args.extend_from_slice(extra);
        sluice_tests::sluice::run_to_exit(&args, Duration::from_secs(30))
    };
    let (status, stderr) = run(&[]);
    assert_eq!(status.and_then(|s| s.code()), Some(2));
    assert!(stderr.contains("--etcd-endpoints"), "{stderr}");
    // Nothing listens on port 1.
    let (status, stderr) = run(&["--etcd-endpoints", "http://127.0.0.1:1"]);
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    assert!(
        stderr.contains("cannot open the override store"),
        "{stderr}"
    );
}
