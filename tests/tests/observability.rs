//! The Prometheus rules and the Grafana dashboard in `deploy/`: checked and unit-tested by the
//! real `promtool` (Debian's `prometheus` package), and every metric they name cross-checked
//! against what a running `sluice` exports on `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice_tests::redis::RedisServer;
use sluice_tests::sluice::Sluice;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool is installed by scripts/test.sh (Debian's prometheus package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let out = promtool(&["check", "rules", "deploy/prometheus/sluice-rules.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "deploy/prometheus/sluice-rules.test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every `expr` in the dashboard, with Grafana's variables filled in as Prometheus would see them.
fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("deploy/grafana/dashboards/sluice.json"))
        .expect("dashboard");
    let doc: Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut out = Vec::new();
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(
                        e.replace("$__rate_interval", "5m")
                            .replace("$__interval", "1m")
                            .replace("$job", ".*"),
                    );
                }
                stack.extend(m.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(out.len() >= 8, "found only {} queries", out.len());
    out
}

fn rule_expressions() -> Vec<String> {
    let text =
        std::fs::read_to_string(root().join("deploy/prometheus/sluice-rules.yaml")).expect("rules");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules YAML");
    doc["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| r["expr"].as_str().expect("expr").to_owned())
        .collect()
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool has no "check this query"; a rule file holding each query is checked instead.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in dashboard_queries().iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(q).expect("quoted")
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&path, rules).expect("write");
    promtool(&["check", "rules", path.to_str().expect("utf-8")]);
}

/// Names in `text` that start with `prefix` and go on with `[a-z0-9_:]`.
fn names(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

/// Sample names `/metrics` can carry, from its `# TYPE` lines (families exist before their first
/// sample), with the labels seen on each.
fn exported_from(metrics: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                out.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = out.entry(line[..name_end].to_owned()).or_default();
            if let Some(set) = line[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
            {
                for pair in set.0.split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        labels.insert(k.to_owned());
                    }
                }
            }
        }
    }
    out
}

const RULES: &str = "domain: d
descriptors:
  - key: k
    rate_limit: { unit: hour, requests_per_unit: 5 }
  - key: s
    shadow_mode: true
    rate_limit: { unit: hour, requests_per_unit: 1 }
  - key: upload
    rate_limit: { concurrency: 1, lease_ttl: 60 }
";

/// Checks that bring every series to life: within, near the limit (the 5th of 5), over, a shadow
/// rule over its limit, and a concurrency pool of one asked twice (a lease, then a refusal).
async fn traffic(client: &reqwest::Client, sluice: &Sluice) {
    for body in std::iter::repeat_n(
        r#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"v"}]}]}"#,
        6,
    )
    .chain(std::iter::repeat_n(
        r#"{"domain":"d","descriptors":[{"entries":[{"key":"s","value":"v"}]}]}"#,
        2,
    ))
    .chain(std::iter::repeat_n(
        r#"{"domain":"d","descriptors":[{"entries":[{"key":"upload","value":"v"}]}]}"#,
        2,
    )) {
        client
            .post(sluice.url("/json"))
            .body(body)
            .send()
            .await
            .expect("POST /json");
    }
}

async fn scrape(client: &reqwest::Client, sluice: &Sluice) -> String {
    client
        .get(sluice.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text")
}

/// Families appear on `/metrics` with their first series, so two real servers are driven until
/// every one the dashboard and the rules read exists: one on the memory store (its own gauges),
/// one on a real Redis that is then stopped (store errors).
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_and_rules_name_only_what_sluice_exports() {
    let client = reqwest::Client::new();
    let memory = Sluice::builder(RULES).start();
    traffic(&client, &memory).await;
    let mut redis = RedisServer::start();
    let on_redis = Sluice::builder(RULES).redis(&redis.url()).start();
    traffic(&client, &on_redis).await;
    redis.stop();
    let r = client
        .post(on_redis.url("/json"))
        .body(r#"{"domain":"d","descriptors":[{"entries":[{"key":"k","value":"w"}]}]}"#)
        .send()
        .await
        .expect("POST /json");
    assert_eq!(
        r.status(),
        500,
        "a check with Redis stopped is a store failure"
    );
    let mut exported = exported_from(&scrape(&client, &memory).await);
    for (name, labels) in exported_from(&scrape(&client, &on_redis).await) {
        exported.entry(name).or_default().extend(labels);
    }

    let dashboard = dashboard_queries();
    let rules = rule_expressions();
    let rules_text =
        std::fs::read_to_string(root().join("deploy/prometheus/sluice-rules.yaml")).expect("rules");
    let recorded = names(&rules_text, "sluice:");
    let mut checked = 0;
    for (source, exprs) in [("dashboard", &dashboard), ("rules", &rules)] {
        for expr in exprs.iter() {
            for metric in names(expr, "sluice_") {
                assert!(
                    exported.contains_key(&metric),
                    "{source} uses {metric}, which /metrics does not export:\n{expr}"
                );
                checked += 1;
            }
            for series in names(expr, "sluice:") {
                assert!(
                    recorded.contains(&series),
                    "{source}: {series} is never recorded"
                );
            }
            // Label matchers name labels the metric has (Prometheus adds job and instance).
            for (metric, labels) in matchers(expr) {
                let seen = &exported[&metric];
                for label in labels {
                    assert!(
                        ["job", "instance", "le"].contains(&label.as_str())
                            || seen.contains(&label),
                        "{source}: {metric} has no label {label:?} (seen: {seen:?})"
                    );
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} metric references checked");
}

/// `metric{label="…", label2=~"…"}` → (metric, [label, label2]).
fn matchers(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for metric in names(expr, "sluice_") {
        let pattern = format!("{metric}{{");
        for (at, _) in expr.match_indices(&pattern) {
            let inside = &expr[at + pattern.len()..];
            let Some(end) = inside.find('}') else {
                continue;
            };
            let labels = inside[..end]
                .split(',')
                .filter_map(|m| {
                    let name = m.trim().split(['=', '!']).next()?.trim();
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect();
            out.push((metric.clone(), labels));
        }
    }
    out
}
