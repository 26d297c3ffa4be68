//! End-to-end: trial periods (`trial: {shadow_for, max_new_per_hour}`) in the real `sluice`
//! binary. A value seen for the first time is decided in shadow mode for `shadow_for` (counted as
//! "would reject", answered OK), then enforced; the admin API and CLI end or extend a trial as
//! audited overrides; each replica starts a bounded number of trials an hour; replicas sharing a
//! Redis agree on when a value was first seen; `check-config` refuses bad trial blocks with their
//! position.
//!
//! Trials here last 2–3 s: a test waits for one to end by polling, bounded, never by sleeping for
//! its length.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use serde_json::{Value, json};
use sluice_tests::admin::{Admin, token_file};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit, sample_of};
use tonic::transport::Channel;

const WOULD_REJECT: &str = "sluice_trial_would_reject_total{rule=\"t.app\"}";
const STARTED: &str = "sluice_trials_started_total{rule=\"t.app\"}";
/// Between two checks of a value waiting for its trial to end.
const POLL: Duration = Duration::from_millis(50);
/// How late past its end a trial may still be seen running (a loaded machine's scheduling).
const LATE: Duration = Duration::from_secs(5);

/// One request an hour per value, each new value in trial for `shadow_for`.
fn rules(shadow_for: &str, max_new_per_hour: u64) -> String {
    format!(
        "domain: t
descriptors:
  - key: app
    trial: {{shadow_for: {shadow_for}, max_new_per_hour: {max_new_per_hour}}}
    rate_limit: {{unit: hour, requests_per_unit: 1}}
"
    )
}

/// A replica with the admin API on (the helpers' token, named `ops`).
fn start(yaml: &str, redis: Option<&RedisServer>) -> (Sluice, tempfile::TempDir, String) {
    let (dir, tokens) = token_file();
    let tokens = tokens.to_str().expect("utf-8").to_owned();
    let mut builder = Sluice::builder(yaml).arg("--admin-token-file").arg(&tokens);
    if let Some(redis) = redis {
        builder = builder.redis(&redis.url());
    }
    (builder.start(), dir, tokens)
}

async fn check(client: &mut RateLimitServiceClient<Channel>, app: &str) -> i32 {
    client
        .should_rate_limit(request("t", vec![descriptor(&[("app", app)])]))
        .await
        .expect("a decision")
        .into_inner()
        .overall_code
}

async fn codes(client: &mut RateLimitServiceClient<Channel>, app: &str, n: usize) -> Vec<i32> {
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(check(client, app).await);
    }
    codes
}

/// Checks `app` until it is refused (its trial over), for at most `within`; when it was.
async fn until_refused(
    client: &mut RateLimitServiceClient<Channel>,
    app: &str,
    within: Duration,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if check(client, app).await == OVER_LIMIT {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{app} still allowed over its limit {within:?} on"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `POST /admin/trials` for the value `app` of `t.app`.
async fn trial(admin: &Admin, app: &str, action: &str, ttl_seconds: Option<u64>) -> (u16, Value) {
    let mut body = json!({
        "domain": "t",
        "descriptor": [{"key": "app", "value": app}],
        "action": action,
    });
    if let Some(ttl) = ttl_seconds {
        body["ttl_seconds"] = ttl.into();
    }
    admin.post("/trials", body).await
}

/// The `trial` object of a status answer.
async fn status(admin: &Admin, app: &str) -> Value {
    let (code, body) = trial(admin, app, "status", None).await;
    assert_eq!(code, 200, "{body}");
    body["trial"].clone()
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit in u64")
}

#[tokio::test]
async fn a_new_value_is_shadowed_for_its_trial_then_enforced_for_good() {
    let (sluice, _tokens, _) = start(&rules("2s", 100), None);
    let admin = Admin::new(sluice.http_addr);
    let mut client = sluice.grpc().await;

    // Before any request, the value has no trial, and nothing is counted.
    let never = status(&admin, "new").await;
    assert_eq!(
        (&never["first_seen_ms"], &never["left_seconds"]),
        (&Value::Null, &json!(0)),
        "{never}"
    );

    let first_check = Instant::now();
    let asked_at = now_ms();
    assert_eq!(codes(&mut client, "new", 3).await, [OK, OK, OK]);
    assert_eq!(
        sluice.metric(WOULD_REJECT).await,
        2.0,
        "two hits over 1/hour"
    );
    assert_eq!(sluice.metric(STARTED).await, 1.0);

    let running = status(&admin, "new").await;
    assert_eq!(running["rule"], "t.app", "{running}");
    assert_eq!(running["shadow_for_seconds"], 2, "{running}");
    let first_seen = running["first_seen_ms"].as_u64().expect("first_seen_ms");
    assert!(
        first_seen + 1_000 >= asked_at && first_seen <= now_ms(),
        "first seen at {first_seen}, asked at {asked_at}: {running}"
    );
    assert_eq!(running["ends_ms"].as_u64(), Some(first_seen + 2_000));
    assert!(
        running["left_seconds"]
            .as_u64()
            .is_some_and(|s| (1..=2).contains(&s)),
        "{running}"
    );

    // Enforced once the trial is over, and not before.
    let refused_at = until_refused(&mut client, "new", Duration::from_secs(2) + LATE).await;
    assert!(
        refused_at + Duration::from_millis(100) >= first_check + Duration::from_secs(2),
        "refused {:?} after the first check, before the 2 s trial ended",
        refused_at - first_check
    );

    // It stays enforced: no new trial, no more "would reject", and nothing to end.
    let counted = sluice.metric(WOULD_REJECT).await;
    assert_eq!(
        codes(&mut client, "new", 3).await,
        [OVER_LIMIT, OVER_LIMIT, OVER_LIMIT]
    );
    assert_eq!(sluice.metric(WOULD_REJECT).await, counted);
    assert_eq!(sluice.metric(STARTED).await, 1.0);
    let over = status(&admin, "new").await;
    assert_eq!(over["first_seen_ms"].as_u64(), Some(first_seen), "{over}");
    assert_eq!(over["left_seconds"], 0, "{over}");
    let (code, body) = trial(&admin, "new", "end", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("enforced already")),
        "{body}"
    );

    // Another value starts its own trial meanwhile.
    assert_eq!(codes(&mut client, "newer", 2).await, [OK, OK]);
    assert_eq!(sluice.metric(STARTED).await, 2.0);
}

#[tokio::test]
async fn ending_and_extending_a_trial_are_audited_overrides() {
    let (sluice, _tokens, token_path) = start(&rules("2s", 100), None);
    let admin = Admin::new(sluice.http_addr);
    let mut client = sluice.grpc().await;

    // Ended: enforced at the next request, the audit log says who ended it.
    assert_eq!(codes(&mut client, "ended", 2).await, [OK, OK]);
    let (code, ended) = trial(&admin, "ended", "end", None).await;
    assert_eq!(code, 200, "{ended}");
    assert_eq!(ended["override"]["mode"], "enforce", "{ended}");
    assert_eq!(check(&mut client, "ended").await, OVER_LIMIT);
    let (_, audit) = admin.get("/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (&entry["action"], &entry["who"]),
        (&json!("trial.end"), &json!("ops")),
        "{audit}"
    );
    assert_eq!(
        entry["target"]["descriptor"],
        json!([{"key": "app", "value": "ended"}]),
        "{entry}"
    );

    // Extended (through the CLI) past the trial's end: still in shadow mode after it.
    assert_eq!(codes(&mut client, "extended", 2).await, [OK, OK]);
    let url = format!("http://{}", sluice.http_addr);
    let cli = |args: &[&str]| {
        let mut all = vec!["admin", "--url", &url, "--token-file", &token_path];
        all.extend_from_slice(args);
        run_to_exit(&all, Duration::from_secs(20))
    };
    let (exit, err) = cli(&["trial", "t", "app=extended", "--extend", "60"]);
    assert!(exit.is_some_and(|s| s.success()), "{err}");
    let (_, audit) = admin.get("/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (&entry["action"], &entry["who"]),
        (&json!("trial.extend"), &json!("ops")),
        "{audit}"
    );
    assert_eq!(entry["after"]["mode"], "shadow", "{entry}");
    // The store's trial ends as it would have; the override outlasts it.
    let deadline = Instant::now() + Duration::from_secs(2) + LATE;
    while status(&admin, "extended").await["left_seconds"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the trial of `extended` never ended"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        codes(&mut client, "extended", 3).await,
        [OK, OK, OK],
        "extended past the trial's end"
    );

    // A value never seen has no trial to end, through the API or the CLI; nothing changes.
    let (code, body) = trial(&admin, "never", "end", None).await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("has not been seen")),
        "{body}"
    );
    let (exit, err) = cli(&["trial", "t", "app=never", "--end"]);
    assert_eq!(exit.and_then(|s| s.code()), Some(1), "{err}");
    assert!(err.contains("400"), "{err}");
    let (code, body) = trial(&admin, "extended", "extend", None).await;
    assert_eq!(code, 400, "`extend` without `ttl_seconds`: {body}");
    let (_, list) = admin.get("/overrides").await;
    assert_eq!(
        list["overrides"].as_array().map(Vec::len),
        Some(2),
        "{list}"
    );
    let (_, audit) = admin.get("/audit?limit=10").await;
    assert_eq!(
        audit["entries"].as_array().map(Vec::len),
        Some(2),
        "{audit}"
    );
    assert_eq!(sluice.metric(STARTED).await, 2.0);
}

#[tokio::test]
async fn a_replica_starts_at_most_max_new_per_hour_trials() {
    let (sluice, _tokens, _) = start(&rules("1h", 3), None);
    let admin = Admin::new(sluice.http_addr);
    let mut client = sluice.grpc().await;
    for app in ["one", "two", "three"] {
        assert_eq!(codes(&mut client, app, 2).await, [OK, OK], "{app}");
    }
    // The fourth new value this hour is enforced from its first request.
    assert_eq!(codes(&mut client, "four", 2).await, [OK, OVER_LIMIT]);
    let scrape = sluice.metrics().await;
    assert_eq!(sample_of(&scrape, STARTED), 3.0, "{scrape}");
    assert_eq!(sample_of(&scrape, WOULD_REJECT), 3.0, "{scrape}");
    let four = status(&admin, "four").await;
    assert_eq!(
        (&four["first_seen_ms"], &four["left_seconds"]),
        (&Value::Null, &json!(0)),
        "recorded nowhere: {four}"
    );
    // The three trials already started go on.
    assert_eq!(check(&mut client, "one").await, OK);
}

#[tokio::test]
async fn replicas_sharing_redis_agree_on_a_trial() {
    let redis = RedisServer::start();
    let yaml = rules("3s", 100);
    let (a, _tokens_a, _) = start(&yaml, Some(&redis));
    let (b, _tokens_b, _) = start(&yaml, Some(&redis));
    a.wait_ready(Duration::from_secs(10)).await;
    b.wait_ready(Duration::from_secs(10)).await;
    let mut on_a = a.grpc().await;
    let mut on_b = b.grpc().await;

    let first_check = Instant::now();
    assert_eq!(check(&mut on_a, "shared").await, OK);
    // B never saw it, yet it is in the trial A started: over the shared limit and still OK.
    assert_eq!(codes(&mut on_b, "shared", 2).await, [OK, OK]);
    let running = status(&Admin::new(b.http_addr), "shared").await;
    assert!(
        running["left_seconds"].as_u64().is_some_and(|s| s > 0),
        "B's checks ran while A's trial did: {running}"
    );
    assert_eq!(a.metric(STARTED).await, 1.0);
    assert_eq!(
        b.metric(STARTED).await,
        0.0,
        "B started no trial of its own"
    );
    assert_eq!(b.metric(WOULD_REJECT).await, 2.0);

    // The first sighting is one key, with an expiry.
    let trial_keys: Vec<String> = redis
        .keys()
        .into_iter()
        .filter(|k| k.ends_with("|T"))
        .collect();
    assert_eq!(trial_keys.len(), 1, "{:?}", redis.keys());
    let pttl: i64 = redis
        .cli(&["PTTL", &trial_keys[0]])
        .trim()
        .parse()
        .expect("PTTL");
    assert!(
        pttl > 3_000,
        "kept past the trial, then dropped: PTTL {pttl}"
    );

    // Both enforce once it is over, and stay so.
    let within = Duration::from_secs(3) + LATE;
    let refused_on_a = until_refused(&mut on_a, "shared", within).await;
    let refused_on_b = until_refused(&mut on_b, "shared", within).await;
    for refused in [refused_on_a, refused_on_b] {
        assert!(
            refused + Duration::from_millis(100) >= first_check + Duration::from_secs(3),
            "refused {:?} after the first check, before the 3 s trial ended",
            refused - first_check
        );
    }
    assert_eq!(check(&mut on_a, "shared").await, OVER_LIMIT);
    assert_eq!(check(&mut on_b, "shared").await, OVER_LIMIT);
    assert_eq!(b.metric(STARTED).await, 0.0);
}

#[test]
fn check_config_refuses_bad_trial_blocks_with_their_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, rules("7d", 3)).expect("write");
    let good = good.to_str().expect("utf-8");
    let (exit, err) = run_to_exit(&["check-config", good], Duration::from_secs(20));
    assert!(exit.is_some_and(|s| s.success()), "{err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "domain: t
descriptors:
  - key: no_limit
    trial: {shadow_for: 1h}
  - key: unknown_field
    trial: {shadow_for: 1h, max_new: 4}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: zero
    trial: {shadow_for: 0s}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: too_long
    trial: {shadow_for: 366d}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: scalar
    trial: 7d
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: shadowed
    shadow_mode: true
    trial: {shadow_for: 1h}
    rate_limit: {unit: hour, requests_per_unit: 1}
",
    )
    .expect("write");
    let bad = bad.to_str().expect("utf-8");
    let (exit, err) = run_to_exit(&["check-config", bad], Duration::from_secs(20));
    assert_eq!(exit.and_then(|s| s.code()), Some(1), "{err}");
    for (at, says) in [
        ("4:12", "`trial` needs a `rate_limit`"),
        ("6:29", "unknown field `max_new` in `trial`"),
        ("9:25", "between 1s and 365d, found '0s'"),
        ("12:25", "between 1s and 365d, found '366d'"),
        ("15:12", "`trial` must be a mapping"),
        ("19:12", "in `shadow_mode` changes nothing"),
    ] {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("{bad}:{at}:")))
            .unwrap_or_else(|| panic!("nothing at {at}: {err}"));
        assert!(line.contains(says), "{at} should say {says}: {line}");
    }
}
