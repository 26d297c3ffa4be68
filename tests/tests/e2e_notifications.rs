//! End-to-end: quota notifications from the real `sluice` binary to a real webhook receiver (an
//! HTTP server in this test, on loopback) and a Redis stream on a real redis-server. Every
//! signature is verified; each event arrives once per window while a client drives descriptors
//! past the near-limit ratio and over a quota and a pool; the breaker's opening and closing and an
//! override about to lapse reach the `--notifications` sinks; a rule reload adds a domain's sinks
//! and refuses a bad block with its position; a receiver that hangs leaves check latency as it was
//! (p99 of the same checks against a Sluice without notifications, interleaved) while its drops
//! are counted; and the throughput of one webhook is measured.
//!
//! The numbers are printed (run with `--nocapture`); docs/notifications.md quotes them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::admin::{Admin, token_file};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, sample_of};
use sluice_tests::tls::{Pki, documented_acl};
use sluice_tests::webhook::{Received, Receiver};

const KEY: &str = "e2e-webhook-signing-key-0123456789";

/// A rule file for domain `api` with `block` as its `notifications`.
fn rules(block: &str) -> String {
    format!(
        "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {{unit: year, requests_per_unit: 10, kind: quota}}\n  \
         - key: job\n    rate_limit: {{concurrency: 1}}\n  - key: free\n    rate_limit: {{unit: year, requests_per_unit: 0, kind: quota}}\n  \
         - key: pilot\n    trial: {{shadow_for: 1d}}\n    rate_limit: {{unit: year, requests_per_unit: 2}}\n{block}"
    )
}

fn webhook_block(receiver: &Receiver, extra: &str) -> String {
    format!(
        "notifications:\n  webhooks:\n    - url: {}\n      signing_key_file: webhook.key\n{extra}",
        receiver.url("/hooks/sluice")
    )
}

/// Checks the signature and the id header of one delivery, and returns its event.
fn verified(r: &Received) -> Value {
    assert_eq!(r.method, "POST");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let signature = r.header("x-sluice-signature").expect("a signature");
    let hex = signature.strip_prefix("sha256=").expect("sha256=…");
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY.as_bytes());
    ring::hmac::verify(&key, &r.body, &tag).expect("the signature verifies");
    let event = r.json();
    assert_eq!(r.header("x-sluice-event-id"), event["id"].as_str());
    assert_eq!(r.header("x-sluice-event-kind"), event["kind"].as_str());
    event
}

/// `(kind, first descriptor value)` of an event, to count them by.
fn about(event: &Value) -> (String, String) {
    let value = event["descriptor"][0]["value"].as_str().unwrap_or_default();
    (
        event["kind"].as_str().unwrap_or_default().to_owned(),
        value.to_owned(),
    )
}

async fn check(client: &mut Client, entries: &[(&str, &str)]) -> i32 {
    client
        .should_rate_limit(request("api", vec![descriptor(entries)]))
        .await
        .expect("a decision")
        .into_inner()
        .overall_code
}

type Client = envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<
    tonic::transport::Channel,
>;

/// The entries of a Redis stream, `XRANGE key - +`, as (id field, event JSON).
fn stream(redis: &RedisServer, key: &str) -> Vec<(String, Value)> {
    let out = redis.cli(&["XRANGE", key, "-", "+"]);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(7)
        .filter(|c| c.len() == 7)
        .map(|c| {
            assert_eq!((c[1], c[3], c[5]), ("id", "kind", "event"), "{c:?}");
            let event: Value = serde_json::from_str(c[6]).expect("JSON event");
            assert_eq!(event["id"], c[2]);
            assert_eq!(event["kind"], c[4]);
            (c[2].to_owned(), event)
        })
        .collect()
}

/// Sluice's ACL user on `redis` as docs/operations.md documents it: the base line, overrides
/// (the default store on one Redis) and the notification stream's line; its URL.
fn documented_user(redis: &RedisServer) -> String {
    let password = "notifications-e2e-password";
    for line in documented_acl(password, &["sluice-overrides", "+xadd"]) {
        let words: Vec<&str> = line.iter().map(String::as_str).collect();
        assert_eq!(redis.cli(&words).trim(), "OK", "{words:?}");
    }
    format!("redis://sluice:{password}@127.0.0.1:{}", redis.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_a_redis_stream_see_each_event_once_per_window() {
    let redis = RedisServer::start();
    let url = documented_user(&redis);
    let receiver = Receiver::start();
    let block = webhook_block(
        &receiver,
        "  redis_stream: {key: \"sluice:events\", max_len: 1000}\n",
    );
    let sluice = Sluice::builder(&rules(&block))
        .file("webhook.key", &format!("{KEY}\n"))
        .redis(&url)
        .start();
    sluice.wait_ready(Duration::from_secs(10)).await;
    let mut client = sluice.grpc().await;

    // 10 a year: the 8th crosses 80 %, the 11th and later are refused by the quota.
    let mut codes = Vec::new();
    for _ in 0..15 {
        codes.push(check(&mut client, &[("tenant", "acme")]).await);
    }
    assert_eq!(codes.iter().filter(|c| **c == OVER_LIMIT).count(), 5);
    // A pool of one: the first lease crosses 80 % of it, the others are refused.
    for i in 0..5 {
        let want = if i == 0 { OK } else { OVER_LIMIT };
        assert_eq!(check(&mut client, &[("job", "export")]).await, want);
    }
    // An app in its trial: 2 a year, the 2nd crosses 80 %, the 3rd and 4th would be refused
    // and are let through: one trial_would_block for the window.
    for _ in 0..4 {
        assert_eq!(check(&mut client, &[("pilot", "new-app")]).await, OK);
    }
    // Last, a tenant of its own: once its refusal arrives, everything before it has (one task
    // delivers each sink's events in order).
    for _ in 0..11 {
        check(&mut client, &[("tenant", "zz-last")]).await;
    }
    let last = ("quota_exhausted".to_owned(), "zz-last".to_owned());
    let received = receiver.wait_for(Duration::from_secs(20), |r| {
        r.iter().any(|r| about(&r.json()) == last)
    });
    let events: Vec<Value> = received.iter().map(verified).collect();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &events {
        *counts.entry(about(e)).or_default() += 1;
    }
    let want: BTreeMap<(String, String), usize> = [
        ("near_limit", "acme"),
        ("quota_exhausted", "acme"),
        ("near_limit", "export"),
        ("pool_full", "export"),
        ("near_limit", "new-app"),
        ("trial_would_block", "new-app"),
        ("near_limit", "zz-last"),
        ("quota_exhausted", "zz-last"),
    ]
    .into_iter()
    .map(|(k, v)| ((k.to_owned(), v.to_owned()), 1))
    .collect();
    assert_eq!(counts, want, "each event once: {events:#?}");
    assert!(received.iter().all(|r| r.path == "/hooks/sluice"));

    let near = events
        .iter()
        .find(|e| about(e) == ("near_limit".into(), "acme".into()))
        .expect("near_limit");
    let mut near = near.clone();
    for volatile in ["id", "time", "instance"] {
        assert!(near[volatile].is_string(), "{volatile}");
        near[volatile] = Value::Null;
    }
    assert_eq!(
        near,
        json!({
            "id": null, "time": null, "instance": null,
            "kind": "near_limit", "domain": "api", "rule": "api.tenant",
            "descriptor": [{"key": "tenant", "value": "acme"}],
            "limit": {"requests_per_unit": 10, "capacity": 10, "window": "year",
                      "window_secs": 31_536_000, "algorithm": "fixed_window", "kind": "quota"},
            "used": 8, "remaining": 2,
            "detail": "near the limit: 8 of 10 per year used"
        })
    );
    let exhausted = events
        .iter()
        .find(|e| about(e) == ("quota_exhausted".into(), "acme".into()))
        .expect("quota_exhausted");
    assert_eq!(
        (exhausted["used"].as_u64(), exhausted["remaining"].as_u64()),
        (Some(10), Some(0))
    );

    // The stream holds the same events, with the same ids.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut entries = stream(&redis, "sluice:events");
    while entries.len() < events.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        entries = stream(&redis, "sluice:events");
    }
    let mut stream_ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let mut webhook_ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    stream_ids.sort_unstable();
    webhook_ids.sort_unstable();
    assert_eq!(stream_ids, webhook_ids);
    assert!(entries.iter().all(|(_, e)| events.contains(e)));

    signature_snippets_verify(&received[0]);

    let metrics = sluice.metrics().await;
    let sent = |sink: &str| {
        sample_of(
            &metrics,
            &format!("sluice_notifications_sent_total{{sink=\"{sink}\",result=\"delivered\"}}"),
        )
    };
    assert_eq!(sent(&format!("webhook:{}", receiver.authority())), 8.0);
    assert_eq!(sent("redis_stream:sluice:events"), 8.0);
    assert_eq!(
        sample_of(
            &metrics,
            "sluice_notifications_dropped_total{reason=\"queue_full\"}"
        ),
        0.0
    );
    // The documented ACL user was enough for all of it.
    let denied = redis.cli(&["ACL", "LOG"]);
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");
}

/// The fenced block of `lang` in docs/notifications.md.
fn doc_snippet(lang: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/notifications.md");
    let doc = std::fs::read_to_string(path).expect("docs/notifications.md");
    let start = doc
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("no {lang} block"))
        + lang.len()
        + 4;
    let end = start + doc[start..].find("```").expect("end of the block");
    doc[start..end].to_owned()
}

/// The verification snippets docs/notifications.md shows, run on a delivery as received.
fn signature_snippets_verify(delivery: &Received) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let body = file("body.json", &delivery.body);
    let signature = delivery.header("x-sluice-signature").expect("signed");
    // The key as Sluice reads it: the file's bytes, less one trailing newline.
    file("webhook.key", format!("{KEY}\n").as_bytes());
    let key = file("bare.key", KEY.as_bytes());
    let python = format!(
        "{}\nimport sys\nok = verify(open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read(), sys.argv[3])\nprint('valid' if ok else 'INVALID')\n",
        doc_snippet("python")
    );
    let run = |program: &str, args: Vec<&std::ffi::OsStr>| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(dir.path())
            .env("X_SLUICE_SIGNATURE", signature)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let python_says = run(
        "python3",
        vec![
            "-c".as_ref(),
            python.as_ref(),
            key.as_os_str(),
            body.as_os_str(),
            signature.as_ref(),
        ],
    );
    assert_eq!(python_says, "valid");
    let shell = doc_snippet("sh");
    assert_eq!(run("sh", vec!["-c".as_ref(), shell.as_ref()]), "valid");
    // And a tampered body does not verify.
    std::fs::write(&body, b"{}").expect("write");
    assert_eq!(run("sh", vec!["-c".as_ref(), shell.as_ref()]), "INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_and_a_lapsing_override_reach_the_global_sinks() {
    let mut redis = RedisServer::start();
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hook.key"), KEY).expect("key");
    let global = dir.path().join("notifications.yaml");
    std::fs::write(
        &global,
        format!(
            "notifications:\n  events: [breaker_open, breaker_closed, override_expiring]\n  \
             webhooks:\n    - url: {}\n      signing_key_file: hook.key\n      timeout_ms: 1000\n",
            receiver.url("/global")
        ),
    )
    .expect("notifications file");
    let (_tokens, token_path) = token_file();
    let sluice = Sluice::builder(&rules(""))
        .redis(&redis.url())
        .arg("--notifications")
        .arg(global.to_str().expect("utf-8"))
        .arg("--admin-token-file")
        .arg(token_path.to_str().expect("utf-8"))
        .start();
    sluice.wait_ready(Duration::from_secs(10)).await;

    // An override lapsing in two minutes is within the default ten minutes' lead.
    let (status, set) = Admin::new(sluice.http_addr)
        .put(
            "/overrides",
            json!({"domain": "api", "descriptor": [{"key": "tenant", "value": "acme"}],
                   "limit": 50, "ttl_seconds": 120, "reason": "launch week"}),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let kind_is = |k: &'static str| move |r: &Received| r.json()["kind"] == k;
    let received = receiver.wait_for(Duration::from_secs(10), |r| {
        r.iter().any(kind_is("override_expiring"))
    });
    let lapse = received
        .iter()
        .find(|r| kind_is("override_expiring")(r))
        .map(verified)
        .expect("override_expiring within the scan interval");
    assert_eq!(lapse["domain"], "api");
    assert_eq!(lapse["override"]["id"], set["override"]["id"]);
    assert_eq!(lapse["override"]["reason"], "launch week");
    assert!(
        lapse["override"]["expires_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // Redis goes away: checks fail until the breaker opens.
    redis.stop();
    let mut client = sluice.grpc().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !receiver.received().iter().any(kind_is("breaker_open")) {
        assert!(
            Instant::now() < deadline,
            "no breaker_open: {:?}",
            sluice.logs()
        );
        let _ = client
            .should_rate_limit(request("api", vec![descriptor(&[("tenant", "x")])]))
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It comes back: the breaker's probes close it, no traffic needed.
    redis.restart();
    let received = receiver.wait_for(Duration::from_secs(20), |r| {
        r.iter().any(kind_is("breaker_closed"))
    });
    let kinds: Vec<String> = received
        .iter()
        .map(|r| verified(r)["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    // Seconds of scans later, the override was still raised once.
    assert_eq!(
        kinds,
        ["override_expiring", "breaker_open", "breaker_closed"],
        "{received:#?}"
    );
    let closed = received.last().map(Received::json).unwrap_or_default();
    assert!(closed.get("domain").is_none() && closed.get("descriptor").is_none());
    assert!(
        closed["detail"]
            .as_str()
            .unwrap()
            .contains("breaker closed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_a_domains_sinks_and_refuses_a_bad_block_where_it_stands() {
    let receiver = Receiver::start();
    let sluice = Sluice::builder(&rules("")).file("webhook.key", KEY).start();
    let mut client = sluice.grpc().await;
    sluice.write_rules(
        "rules.yaml",
        &rules(
            "notifications:\n  events: [quota_exhausted, over_quota]\n  redis_stream: {key: e}\n",
        ),
    );
    let rejected = sluice.wait_for_logs("rule set change rejected", 1, Duration::from_secs(15));
    assert_eq!(rejected.len(), 1, "{:?}", sluice.logs());
    assert!(
        rejected[0].contains("rules.yaml:13:29: unknown event `over_quota`"),
        "{}",
        rejected[0]
    );
    // A memory store cannot serve a stream: refused too, with its position.
    sluice.write_rules(
        "rules.yaml",
        &rules("notifications:\n  redis_stream: {key: e}\n"),
    );
    let rejected = sluice.wait_for_logs("rule set change rejected", 2, Duration::from_secs(15));
    assert!(
        rejected.last().is_some_and(
            |l| l.contains("rules.yaml:13:17: `redis_stream` needs the Redis counter store")
        ),
        "{rejected:?}"
    );
    assert_eq!(check(&mut client, &[("free", "a")]).await, OVER_LIMIT);

    sluice.write_rules("rules.yaml", &rules(&webhook_block(&receiver, "")));
    assert!(sluice.wait_for_log("rule set reloaded", Duration::from_secs(15)));
    assert_eq!(check(&mut client, &[("free", "b")]).await, OVER_LIMIT);
    let received = receiver.wait_for(Duration::from_secs(10), |r| !r.is_empty());
    let events: Vec<Value> = received.iter().map(verified).collect();
    assert_eq!(
        events.len(),
        1,
        "only the check after the reload: {events:?}"
    );
    assert_eq!(about(&events[0]), ("quota_exhausted".into(), "b".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_webhook_is_verified_against_the_platform_roots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::generate(dir.path(), "hook-");
    let receiver = Receiver::start_tls(&pki.server.0, &pki.server.1);
    let block = format!(
        "notifications:\n  webhooks:\n    - url: https://localhost:{}/hook\n      \
         signing_key_file: webhook.key\n      max_attempts: 1\n",
        receiver.port()
    );
    // The platform's roots, as rustls-native-certs reads them: here only the test's CA...
    let trusting = Sluice::builder(&rules(&block))
        .file("webhook.key", KEY)
        .env("SSL_CERT_FILE", pki.ca.to_str().expect("utf-8"))
        .start();
    // ... and here the machine's own, which do not know it.
    let distrusting = Sluice::builder(&rules(&block))
        .file("webhook.key", KEY)
        .start();
    let mut client = trusting.grpc().await;
    assert_eq!(check(&mut client, &[("free", "trusted")]).await, OVER_LIMIT);
    let mut client = distrusting.grpc().await;
    assert_eq!(check(&mut client, &[("free", "refused")]).await, OVER_LIMIT);

    let received = receiver.wait_for(Duration::from_secs(10), |r| !r.is_empty());
    let events: Vec<Value> = received.iter().map(verified).collect();
    assert_eq!(
        about(&events[0]),
        ("quota_exhausted".into(), "trusted".into())
    );
    let failed = format!(
        "sluice_notifications_sent_total{{sink=\"webhook:localhost:{}\",result=\"failed\"}}",
        receiver.port()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while distrusting.metric(&failed).await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the untrusted delivery was not given up"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Counted once its only attempt failed: the receiver never got it.
    assert_eq!(receiver.received().len(), 1);
}

/// The `q`-quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

async fn timed(client: &mut Client, entries: &[(&str, &str)]) -> Duration {
    let started = Instant::now();
    assert_eq!(check(client, entries).await, OVER_LIMIT);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_receiver_leaves_check_latency_unchanged_and_its_drops_are_counted() {
    const CHECKS: usize = 2_000;
    const QUEUE: usize = 16;
    // Accepts, reads, never answers: the first event's attempt waits out its minute.
    let hung = Receiver::held();
    let block = webhook_block(
        &hung,
        &format!("      timeout_ms: 60000\n      max_attempts: 20\n      queue_size: {QUEUE}\n"),
    );
    let with = Sluice::builder(&rules(&block))
        .file("webhook.key", KEY)
        .start();
    let without = Sluice::builder(&rules("")).start();
    let (mut a, mut b) = (without.grpc().await, with.grpc().await);
    // Warm both up (connections, first allocations) before measuring.
    for i in 0..100 {
        let tenant = format!("warm-{i}");
        timed(&mut a, &[("free", &tenant)]).await;
        timed(&mut b, &[("free", &tenant)]).await;
    }
    // Every check is refused by a quota for a new tenant: every one raises an event for the
    // hung webhook. The two servers are asked in turn, so both see the same machine.
    let (mut base, mut hanging) = (Vec::with_capacity(CHECKS), Vec::with_capacity(CHECKS));
    let started = Instant::now();
    for i in 0..CHECKS {
        let tenant = format!("t-{i}");
        base.push(timed(&mut a, &[("free", &tenant)]).await);
        hanging.push(timed(&mut b, &[("free", &tenant)]).await);
    }
    let elapsed = started.elapsed();
    let (p50_base, p99_base) = (quantile(&mut base, 0.5), quantile(&mut base, 0.99));
    let (p50_hung, p99_hung) = (quantile(&mut hanging, 0.5), quantile(&mut hanging, 0.99));
    eprintln!(
        "check latency over {CHECKS} checks each ({elapsed:.1?}): without notifications p50 \
         {p50_base:?} p99 {p99_base:?}; with a hung webhook p50 {p50_hung:?} p99 {p99_hung:?}"
    );
    assert!(
        p99_hung <= (p99_base * 3).max(p99_base + Duration::from_millis(10)),
        "a hung receiver slowed checks: p99 {p99_hung:?} against {p99_base:?}"
    );
    assert!(hung.connections() >= 1, "the webhook was never called");

    // Everything raised was queued, held by the hung attempt, or dropped and counted.
    let raised = (CHECKS + 100) as f64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut emitted, mut dropped);
    loop {
        let metrics = with.metrics().await;
        emitted = sample_of(
            &metrics,
            "sluice_notifications_emitted_total{kind=\"quota_exhausted\"}",
        );
        dropped = sample_of(
            &metrics,
            "sluice_notifications_dropped_total{reason=\"sink_queue_full\"}",
        );
        if dropped == raised - (QUEUE + 1) as f64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emitted, raised);
    assert_eq!(
        dropped,
        raised - (QUEUE + 1) as f64,
        "queue {QUEUE} + 1 in flight"
    );
    eprintln!("hung webhook: {emitted} events raised, {dropped} dropped and counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_throughput() {
    const EVENTS: usize = 2_000;
    let receiver = Receiver::held();
    let block = webhook_block(
        &receiver,
        &format!("      timeout_ms: 60000\n      queue_size: {EVENTS}\n"),
    );
    let sluice = Sluice::builder(&rules(&block))
        .file("webhook.key", KEY)
        .start();
    let mut client = sluice.grpc().await;
    let started = Instant::now();
    for i in 0..EVENTS {
        assert_eq!(
            check(&mut client, &[("free", &format!("t-{i}"))]).await,
            OVER_LIMIT
        );
    }
    let raised_in = started.elapsed();
    // All but the first wait in the sink's queue; then the receiver answers as fast as it can.
    let first = receiver.wait_for(Duration::from_secs(10), |r| !r.is_empty());
    assert_eq!(first.len(), 1);
    let started = Instant::now();
    receiver.release();
    let received = receiver.wait_for(Duration::from_secs(60), |r| r.len() >= EVENTS);
    let drained_in = started.elapsed();
    assert_eq!(received.len(), EVENTS);
    let rate = EVENTS as f64 / drained_in.as_secs_f64();
    eprintln!(
        "webhook throughput: {EVENTS} events raised by {EVENTS} checks in {raised_in:.1?}, then \
         delivered in {drained_in:.1?}: {rate:.0} events/s on one kept-alive connection \
         ({} connections)",
        receiver.connections()
    );
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| verified(r)["id"].to_string())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), EVENTS, "each event once");
}
