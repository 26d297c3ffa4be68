//! "Why was this request limited?": `POST /admin/explain` against the real binary, for a table of
//! requests over nested descriptors, wildcards, `replaces`, shadow and quota modes and a runtime
//! override. Each explanation is compared with the decision `ShouldRateLimit` makes right after
//! it (they must agree), and explaining charges nothing. Bad input is 400 with the reason.

use std::time::Duration;

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use serde_json::{Value, json};
use sluice_tests::admin::{Admin, token_file};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit};

const RULES: &str = r#"
domain: ex
descriptors:
  - key: app
    value: premium
    rate_limit: {unit: hour, requests_per_unit: 3, name: premium, replaces: [{name: org_hourly}]}
  - key: app
    rate_limit: {unit: hour, requests_per_unit: 2, name: app_default}
  - key: path
    value: /api/*
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: org
    rate_limit: {unit: hour, requests_per_unit: 4, name: org_hourly}
    descriptors:
      - key: team
        rate_limit: {unit: hour, requests_per_unit: 2}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: quota_a
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: quota_b
    quota_mode: true
    rate_limit: {unit: hour, requests_per_unit: 2}
"#;

/// A request as `/json` takes it, and as gRPC sends it.
fn both(descriptors: &[&[(&str, &str)]]) -> (Value, RateLimitRequest) {
    let json = json!({
        "domain": "ex",
        "descriptors": descriptors.iter().map(|d| json!({
            "entries": d.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>()
        })).collect::<Vec<_>>(),
    });
    let grpc = request("ex", descriptors.iter().map(|d| descriptor(d)).collect());
    (json, grpc)
}

fn code_name(code: i32) -> &'static str {
    if code == Code::OverLimit as i32 {
        "OVER_LIMIT"
    } else {
        "OK"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_agree_with_the_checks_that_follow_them_in_memory() {
    agree(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explanations_agree_with_the_checks_that_follow_them_on_redis() {
    let redis = RedisServer::start();
    agree(Some(&redis.url())).await;
    // The dry runs wrote nothing: only the checks' counters (and the override) are in Redis.
    assert!(
        !redis.keys().iter().any(|k| k.contains("fresh")),
        "{:?}",
        redis.keys()
    );
}

async fn agree(redis: Option<&str>) {
    let (_dir, tokens) = token_file();
    let mut builder = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("path"));
    if let Some(url) = redis {
        builder = builder.redis(url);
    }
    let sluice = builder.start();
    let admin = Admin::new(sluice.http_addr);
    let (status, _) = admin
        .put(
            "/overrides",
            json!({"domain": "ex", "descriptor": [{"key": "app", "value": "special"}], "limit": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let mut client = sluice.grpc().await;

    let table: &[&[&[(&str, &str)]]] = &[
        &[&[("app", "a1")]],
        &[&[("app", "special")]],
        &[&[("app", "premium")], &[("org", "acme")]],
        &[&[("org", "acme")], &[("app", "a2")]],
        &[&[("path", "/api/users")]],
        &[&[("path", "/other")]],
        &[&[("org", "acme"), ("team", "core")]],
        &[&[("trial", "t")]],
        &[&[("quota_a", "q")], &[("quota_b", "q")]],
        &[&[("unknown", "x")]],
    ];
    let mut over = 0;
    // Each request three times: every limit here is reached within three.
    for round in 0..3 {
        for descriptors in table {
            let (body, grpc) = both(descriptors);
            // Explaining twice changes nothing: the check still agrees.
            let (_, first) = admin.post("/explain", body.clone()).await;
            let (status, explained) = admin.post("/explain", body).await;
            assert_eq!(status, 200, "{explained}");
            assert_eq!(first["code"], explained["code"]);
            let answer = client
                .should_rate_limit(grpc)
                .await
                .expect("check")
                .into_inner();
            let context = format!("round {round}, {descriptors:?}: {explained:#}");
            assert_eq!(
                explained["code"],
                code_name(answer.overall_code),
                "{context}"
            );
            for (i, status) in answer.statuses.iter().enumerate() {
                assert_eq!(
                    explained["descriptors"][i]["code"],
                    code_name(status.code),
                    "{context}"
                );
            }
            if answer.overall_code == Code::OverLimit as i32 {
                over += 1;
                assert_eq!(explained["status"], 429, "{context}");
                assert!(explained["problem"]["title"].is_string(), "{context}");
            }
        }
    }
    // a1 once, special twice (override: 1), a2, /api/*, team and the quota pair once each.
    assert_eq!(over, 7, "rejections over the three rounds");

    // What an operator reads.
    let (_, e) = admin
        .post("/explain", both(&[&[("path", "/api/users")]]).0)
        .await;
    let d = &e["descriptors"][0];
    assert_eq!(
        d["walk"]["steps"][0]["taken"],
        json!({"by": "wildcard", "pattern": "/api/*"})
    );
    assert_eq!(d["limits"][0]["over"], true);
    let (_, e) = admin
        .post("/explain", both(&[&[("app", "special")]]).0)
        .await;
    assert_eq!(e["descriptors"][0]["rule"]["runtime_override"], true);
    assert_eq!(e["descriptors"][0]["limits"][0]["limit"], 1);
    let (_, e) = admin
        .post(
            "/explain",
            both(&[&[("app", "premium")], &[("org", "x")]]).0,
        )
        .await;
    assert_eq!(e["descriptors"][1]["rule"]["replaced"], true, "{e:#}");
    assert_eq!(e["descriptors"][1]["limits"], json!([]));
    let (_, e) = admin.post("/explain", both(&[&[("trial", "t")]]).0).await;
    assert_eq!(e["code"], "OK");
    assert_eq!(e["descriptors"][0]["limits"][0]["role"], "shadow");
    assert_eq!(e["descriptors"][0]["limits"][0]["over"], true);
    let (_, e) = admin
        .post("/explain", both(&[&[("org", "acme"), ("nope", "x")]]).0)
        .await;
    assert_eq!(e["descriptors"][0]["walk"]["ended"]["result"], "no_match");

    // Explaining charged nothing: a fresh key's counter is still empty after ten explanations.
    for _ in 0..10 {
        admin.post("/explain", both(&[&[("app", "fresh")]]).0).await;
    }
    let (_, counters) = admin
        .post(
            "/counters",
            json!({"domain": "ex", "descriptor": [{"key": "app", "value": "fresh"}]}),
        )
        .await;
    assert_eq!(counters["counters"][0]["used"], 0, "{counters}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_explain_requests_are_refused_with_the_reason() {
    let (_dir, tokens) = token_file();
    let sluice = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("path"))
        .arg("--max-descriptors")
        .arg("2")
        .start();
    let admin = Admin::new(sluice.http_addr);
    let cases = [
        (
            json!({"domain": "nope", "descriptors": [{"entries": [{"key": "a", "value": "b"}]}]}),
            "no domain 'nope'",
        ),
        (
            json!({"domain": "ex", "descriptors": [{"entries": [{"key": "", "value": "b"}]}]}),
            "key",
        ),
        (
            json!({"domain": "ex", "descriptors": [{"entries": "x"}]}),
            "invalid request JSON",
        ),
        (
            json!({"domain": "ex", "descriptors": [{}, {}, {}]}),
            "descriptors",
        ),
    ];
    for (body, reason) in cases {
        let (status, answer) = admin.post("/explain", body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.to_string().contains(reason), "{body}: {answer}");
    }
    // Without the token: refused like every admin endpoint.
    let anonymous = Admin::with_token(sluice.http_addr, None);
    let (status, _) = anonymous.post("/explain", both(&[&[("app", "a")]]).0).await;
    assert_eq!(status, 401);
}

#[test]
fn check_config_explains_offline_against_empty_counters() {
    let dir = tempfile::tempdir().expect("dir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).expect("write rules");
    let path = rules.to_str().expect("path");
    let out = std::process::Command::new(sluice_tests::sluice::sluice_bin())
        .args([
            "check-config",
            path,
            "--explain",
            "ex",
            "org=acme",
            "team=core",
            "+",
            "app=premium",
        ])
        .output()
        .expect("run check-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(e["code"], "OK");
    assert_eq!(e["descriptors"][0]["rule"]["rule"], "ex.org.team");
    assert_eq!(e["descriptors"][0]["limits"][0]["used"], 0);
    assert_eq!(
        e["descriptors"][1]["rule"]["replaces"],
        json!(["org_hourly"])
    );
    let (status, stderr) = run_to_exit(
        &["check-config", path, "--explain", "nope", "a=b"],
        Duration::from_secs(20),
    );
    assert!(!status.expect("exits").success());
    assert!(stderr.contains("no domain 'nope'"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_log_writes_one_debug_line_per_decision_only_when_asked() {
    for on in [true, false] {
        let mut builder = Sluice::builder(RULES).arg("--log-level").arg("debug");
        if on {
            builder = builder.arg("--explain-log");
        }
        let sluice = builder.start();
        let mut client = sluice.grpc().await;
        let (_, grpc) = both(&[
            &[("path", "/api/users")],
            &[("org", "acme"), ("team", "core")],
        ]);
        for _ in 0..3 {
            client.should_rate_limit(grpc.clone()).await.expect("check");
        }
        let explained = |sluice: &Sluice| -> Vec<String> {
            sluice
                .logs()
                .into_iter()
                .filter(|l| l.contains("decision explained"))
                .collect()
        };
        if on {
            let lines = sluice.wait_for_logs("decision explained", 3, Duration::from_secs(10));
            assert_eq!(lines.len(), 3);
            let line: Value = serde_json::from_str(&lines[2]).expect("JSON log line");
            let e: Value = serde_json::from_str(
                line["fields"]["explanation"]
                    .as_str()
                    .expect("the explanation"),
            )
            .expect("JSON explanation");
            assert_eq!(e["code"], "OVER_LIMIT", "{e:#}");
            assert_eq!(e["descriptors"][0]["rule"]["rule"], "ex.path_/api/*");
            assert_eq!(e["descriptors"][1]["limits"][0]["used"], 2);
        } else {
            // The checks were answered (and logged at debug elsewhere); none explained.
            assert!(explained(&sluice).is_empty());
        }
    }
}
