//! End-to-end: the real `sluice` binary's HTTP surface, hot reload and `check-config`.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::sluice::{Sluice, run_to_exit, sluice_bin};

const RULES: &str = "domain: edge
descriptors:
  - key: app_id
    rate_limit:
      unit: hour
      requests_per_unit: 2
";

async fn post_json(sluice: &Sluice, body: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = reqwest::Client::new()
        .post(sluice.url("/json"))
        .body(body.to_string())
        .send()
        .await
        .expect("POST /json");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.expect("JSON body");
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn json_endpoint_speaks_the_reference_shape() {
    let sluice = Sluice::builder(RULES).arg("--response-headers").start();
    let req = r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"web"}]}]}"#;
    let (status, headers, body) = post_json(&sluice, req).await;
    assert_eq!(status, 200);
    let reset = body["statuses"][0]["durationUntilReset"]
        .as_str()
        .expect("duration string")
        .to_string();
    assert!(reset.ends_with('s'), "{reset}");
    // The header is the duration in whole seconds, rounded up.
    let reset_secs: f64 = reset.trim_end_matches('s').parse().expect("seconds");
    let reset_header = (reset_secs.ceil() as u64).to_string();
    assert_eq!(
        body,
        json!({
            "overallCode": "OK",
            "statuses": [{
                "code": "OK",
                "currentLimit": {"requestsPerUnit": 2, "unit": "HOUR"},
                "limitRemaining": 1,
                "durationUntilReset": reset,
            }],
            "responseHeadersToAdd": [
                {"key": "RateLimit-Limit", "value": "2"},
                {"key": "RateLimit-Remaining", "value": "1"},
                {"key": "RateLimit-Reset", "value": reset_header},
            ],
        })
    );
    assert_eq!(headers["ratelimit-remaining"], "1");

    // snake_case field names are proto3 JSON too; the last allowed hit leaves 0 remaining, which
    // proto3 JSON omits.
    let snake = r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"web"}]}],"hits_addend":1}"#;
    let (status, _, body) = post_json(&sluice, snake).await;
    assert_eq!(status, 200);
    assert!(
        body["statuses"][0].get("limitRemaining").is_none(),
        "{body}"
    );

    let (status, headers, body) = post_json(&sluice, req).await;
    assert_eq!(status, 429);
    assert_eq!(body["overallCode"], "OVER_LIMIT");
    assert_eq!(body["statuses"][0]["code"], "OVER_LIMIT");
    assert!(headers.contains_key("retry-after"));

    for bad in [
        "not json",
        r#"{"domain":"","descriptors":[{"entries":[{"key":"a","value":"b"}]}]}"#,
        r#"{"domain":"edge","descriptors":[]}"#,
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"a","value":"b"}]}],"bogus":1}"#,
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"a"}],"limit":{"requests_per_unit":1,"unit":"WEEK"}}]}"#,
    ] {
        let (status, _, body) = post_json(&sluice, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_config_and_metrics_endpoints() {
    let sluice = Sluice::builder(RULES).start();
    let get = |path: &str| reqwest::get(sluice.url(path));
    let r = get("/healthcheck").await.expect("GET");
    assert_eq!(r.status(), 200);
    let r = get("/rlconfig").await.expect("GET");
    assert_eq!(r.status(), 200);
    let dump = r.text().await.expect("text");
    assert!(dump.contains("edge.app_id"), "{dump}");

    let req = r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"m"}]}]}"#;
    for _ in 0..3 {
        post_json(&sluice, req).await;
    }
    let metrics = get("/metrics")
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    for line in [
        "sluice_rule_total_hits_total{rule=\"edge.app_id\"} 3",
        "sluice_rule_over_limit_total{rule=\"edge.app_id\"} 1",
        "sluice_rule_within_limit_total{rule=\"edge.app_id\"} 2",
        "sluice_requests_total{transport=\"http\",result=\"over_limit\"} 1",
        "sluice_config_loads_total{result=\"ok\"} 1",
        "sluice_memory_store_evictions_total 0",
        "sluice_memory_store_counters 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("sluice_request_duration_seconds_bucket"));
    // Descriptor values stay out of labels unless a rule opts in.
    assert!(!metrics.contains("app_id_m"));
}

/// Poll `/rlconfig` (bounded) until it satisfies `pred`.
async fn wait_for_rules(sluice: &Sluice, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let dump = reqwest::get(sluice.url("/rlconfig"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        if pred(&dump) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_swaps_valid_rules_and_keeps_old_ones_on_error() {
    let sluice = Sluice::builder(RULES).start();
    sluice.write_rules(
        "rules.yaml",
        "domain: edge\ndescriptors:\n  - key: team\n    rate_limit:\n      unit: second\n      requests_per_unit: 7\n",
    );
    assert!(
        wait_for_rules(&sluice, |d| d.contains("edge.team")).await,
        "the valid change was not picked up"
    );
    let (_, _, body) = post_json(
        &sluice,
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"team","value":"t"}]}]}"#,
    )
    .await;
    assert_eq!(body["statuses"][0]["currentLimit"]["requestsPerUnit"], 7);

    // An invalid change is rejected and counted; the previous rules keep serving.
    sluice.write_rules(
        "rules.yaml",
        "domain: edge\ndescriptors:\n  - key: team\n    rate_limit:\n      unit: fortnight\n      requests_per_unit: 1\n",
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut counted = false;
    while Instant::now() < deadline && !counted {
        let metrics = reqwest::get(sluice.url("/metrics"))
            .await
            .expect("GET")
            .text()
            .await
            .expect("text");
        counted = metrics.contains("sluice_config_loads_total{result=\"error\"} 1");
        if !counted {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(counted, "the rejected reload was not counted");
    // The metric moves before the log line has come through the process's output.
    assert!(
        sluice.wait_for_log("rules.yaml:5", Duration::from_secs(10)),
        "error names file and line"
    );
    let (_, _, body) = post_json(
        &sluice,
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"team","value":"t"}]}]}"#,
    )
    .await;
    assert_eq!(body["statuses"][0]["currentLimit"]["requestsPerUnit"], 7);
}

#[test]
fn check_config_reports_errors_with_positions() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, RULES).expect("write");
    let out = Command::new(sluice_bin())
        .args(["check-config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "domain: edge\ndescriptors:\n  - key: app_id\n    rate_limit:\n      unit: hour\n      requests_per_unit: -1\n",
    )
    .expect("write");
    let out = Command::new(sluice_bin())
        .args(["check-config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:6:", bad.display())),
        "error names file and line: {stderr}"
    );
}

#[test]
fn example_config_is_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config");
    let out = Command::new(sluice_bin())
        .args(["check-config", root])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn startup_refuses_an_invalid_rule_set_with_its_position() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("rules.yaml");
    std::fs::write(
        &bad,
        "domain: edge\ndescriptors:\n  - key: app_id\n    requests_per_unit: 5\n",
    )
    .expect("write");
    let config = dir.path().to_str().expect("utf-8 path");
    let (status, stderr) = run_to_exit(
        &[
            "--config",
            config,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        Duration::from_secs(20),
    );
    let status = status.expect("exits by itself");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:4:", bad.display())),
        "names file and line: {stderr}"
    );
}

/// An unreachable Redis does not keep Sluice from serving: it starts, answers under the failure
/// policy, reports not ready, and connects by itself once Redis is there.
#[tokio::test(flavor = "multi_thread")]
async fn startup_serves_without_redis_then_connects_by_itself() {
    let mut redis = sluice_tests::redis::RedisServer::start();
    redis.stop();
    let sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--failure-mode")
        .arg("allow")
        .arg("--redis-timeout-ms")
        .arg("300")
        .start();
    let req = r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"boot"}]}]}"#;
    for _ in 0..3 {
        let (status, _, body) = post_json(&sluice, req).await;
        assert_eq!((status, body["overallCode"].as_str()), (200, Some("OK")));
    }
    let health = reqwest::get(sluice.url("/healthcheck")).await.expect("GET");
    assert_eq!(health.status(), 500, "not ready without Redis");

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::get(sluice.url("/healthcheck"))
        .await
        .expect("GET")
        .status()
        != 200
    {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counted in Redis from now on: the limit of 2 holds.
    let codes: Vec<u16> = futures_codes(&sluice, req, 3).await;
    assert_eq!(codes, [200, 200, 429]);
}

async fn futures_codes(sluice: &Sluice, body: &str, n: usize) -> Vec<u16> {
    let mut codes = Vec::new();
    for _ in 0..n {
        codes.push(post_json(sluice, body).await.0);
    }
    codes
}
