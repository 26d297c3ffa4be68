//! End-to-end: the real `nginx` runs `examples/nginx/openresty.conf` as shipped, whose log phase
//! (`examples/nginx/lua/sluice_reports.lua`) reports each response of the app to the real
//! `sluice`'s `POST /reports`, which steers the example's adaptive limit on `upstream=app`.
//!
//! The rules are `examples/nginx/config/quotas.yaml` with the adaptive interval cut to 1 s and
//! `min_reports` to 5 (and, for the status test, the errors signal), so a decision comes within
//! seconds. Every wait is a bounded poll of `/metrics` or the admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::admin::{Admin, token_file};
use sluice_tests::nginx::{Nginx, Upstream, point_at, substitute};
use sluice_tests::redis::free_port;
use sluice_tests::sluice::{Sluice, sample_of};

/// The example's adaptive limit, in `/metrics`'s `rule` label.
const RULE: &str = "nginx-edge.upstream_app";
/// The example's limit before any adaptive override.
const CONFIGURED: u64 = 200;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx")
}

/// The example's rules, with `adaptive` changed by the `(from, to)` substitutions.
fn start_sluice(changes: &[(&str, &str)]) -> (Sluice, tempfile::TempDir) {
    let mut rules = std::fs::read_to_string(examples().join("config/quotas.yaml")).expect("rules");
    for (from, to) in changes {
        rules = substitute(&rules, from, to);
    }
    let (dir, tokens) = token_file();
    let sluice = Sluice::builder(&rules)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("utf-8"))
        .start();
    (sluice, dir)
}

fn openresty(sluice: SocketAddr, app: SocketAddr) -> String {
    let text = std::fs::read_to_string(examples().join("openresty.conf")).expect("example");
    point_at(&text, sluice, app)
}

async fn get(client: &reqwest::Client, nginx: &Nginx, app_id: &str) -> u16 {
    nginx.get_orders(client, app_id).await.status().as_u16()
}

/// `sluice_adaptive_reports_total{result}` and friends, in one scrape.
struct Tally {
    accepted: f64,
    unmatched: f64,
    dropped: f64,
    refused: f64,
}

async fn tally(sluice: &Sluice) -> Tally {
    let m = sluice.metrics().await;
    let of = |result: &str| {
        sample_of(
            &m,
            &format!("sluice_adaptive_reports_total{{result=\"{result}\"}}"),
        )
    };
    Tally {
        accepted: of("accepted"),
        unmatched: of("unmatched"),
        dropped: of("dropped"),
        refused: of("refused"),
    }
}

/// Waits (bounded) until Sluice accepted `expected` reports, failing at once on more, on a
/// report it could not match or on a batch it refused.
async fn wait_accepted(sluice: &Sluice, nginx: &Nginx, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = tally(sluice).await;
        assert!(
            t.unmatched == 0.0 && t.dropped == 0.0 && t.refused == 0.0,
            "unmatched {}, dropped {}, refused batches {}{}",
            t.unmatched,
            t.dropped,
            t.refused,
            nginx.error_log()
        );
        assert!(
            t.accepted <= expected as f64,
            "{} reports accepted for {expected} responses of the app",
            t.accepted
        );
        if t.accepted == expected as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {expected} reports arrived{}",
            t.accepted,
            nginx.error_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The adaptive override of `upstream=app`, once one whose reason contains `needle` is there
/// (bounded); `load` runs meanwhile.
async fn wait_for_override(sluice: &Sluice, needle: &str) -> Value {
    let admin = Admin::new(sluice.http_addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = admin.get("/overrides").await;
        assert_eq!(status, 200, "{answer}");
        let found = answer["overrides"].as_array().and_then(|list| {
            list.iter()
                .find(|o| {
                    o["by"] == "adaptive"
                        && o["reason"].as_str().is_some_and(|r| r.contains(needle))
                })
                .cloned()
        });
        if let Some(o) = found {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "no adaptive override with {needle:?}: {answer}\n{}",
            sluice.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `workers` clients of the premium app (100 a second) looping through NGINX until `stop`.
fn load(
    nginx: &Nginx,
    workers: usize,
    pause: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::new();
    (0..workers)
        .map(|_| {
            let (client, url, stop) = (client.clone(), nginx.url("/orders"), Arc::clone(stop));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client.get(&url).header("x-app-id", "premium").send().await;
                    tokio::time::sleep(pause).await;
                }
            })
        })
        .collect()
}

async fn finish(stop: &AtomicBool, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}

/// One report per response of the app, none for what Sluice refused; a slow app lowers the limit,
/// with its latency in milliseconds.
#[tokio::test(flavor = "multi_thread")]
async fn responses_of_the_app_are_reported_and_a_slow_app_lowers_the_limit() {
    let app = Upstream::start();
    let (sluice, _tokens) = start_sluice(&[("interval: 10s}", "interval: 1s, min_reports: 5}")]);
    let nginx = Nginx::start(&openresty(sluice.http_addr, app.addr));
    let client = reqwest::Client::new();

    // The app's burst of 5, then two requests Sluice refuses in the access phase, then one more
    // that reaches the app. This worker posts its reports in order, so once the last is counted
    // the refused ones would have been too.
    for _ in 0..5 {
        assert_eq!(
            get(&client, &nginx, "demo").await,
            200,
            "{}",
            nginx.error_log()
        );
    }
    for _ in 0..2 {
        assert_eq!(get(&client, &nginx, "demo").await, 429);
    }
    assert_eq!(get(&client, &nginx, "other").await, 200);
    assert_eq!(app.hits(), 6, "a refused request reached the app");
    wait_accepted(&sluice, &nginx, 6).await;

    // The app now answers in 400 ms, over the example's 250 ms target: the next intervals
    // measure that and the limit comes down.
    app.set_delay(Duration::from_millis(400));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&nginx, 8, Duration::ZERO, &stop);
    let o = wait_for_override(&sluice, "adaptive: decrease").await;
    finish(&stop, tasks).await;
    let reason = o["reason"].as_str().expect("a reason");
    println!("{reason}");
    // `adaptive: decrease 250 -> 148: latency q0.99 404.1ms against target 250ms (37 reports)`
    let moved: Vec<u64> = reason
        .split(':')
        .nth(1)
        .and_then(|s| s.trim().strip_prefix("decrease "))
        .expect("before -> after")
        .split(" -> ")
        .map(|n| n.trim().parse().expect("a limit"))
        .collect();
    assert!(moved[1] < moved[0], "{reason}");
    assert_eq!(o["limit"].as_u64(), Some(moved[1]), "{o}");
    let ms: f64 = reason
        .split("latency q0.99 ")
        .nth(1)
        .and_then(|s| s.split("ms").next())
        .expect("the measured latency")
        .parse()
        .expect("a number of ms");
    // The histogram is within 2 %; the proxy adds a little; a busy machine may add more.
    assert!((390.0..1000.0).contains(&ms), "{reason}");
    assert!(
        sluice
            .metric(&format!("sluice_adaptive_limit{{rule=\"{RULE}\"}}"))
            .await
            > 0.0
    );

    // Every response of the app was reported once; the requests the per-address and adaptive
    // limits refused during the load were not.
    wait_accepted(&sluice, &nginx, app.hits()).await;
}

/// The status reported is the app's, from the last attempt: a retry past a dead server does not
/// count as an error, and the app's own 503s do.
#[tokio::test(flavor = "multi_thread")]
async fn the_apps_status_is_reported_from_the_last_attempt() {
    let app = Upstream::start();
    let (sluice, _tokens) = start_sluice(&[
        (
            "adaptive: {signal: latency, target: 250ms, quantile: 0.99,",
            "adaptive: {signal: errors, target: 0.1,",
        ),
        ("interval: 10s}", "interval: 1s, min_reports: 5}"),
    ]);
    // A server that refuses connections before the app, never taken out of the rotation: every
    // other request is tried there first (502), then on the app.
    let conf = substitute(
        &openresty(sluice.http_addr, app.addr),
        &format!("server {};", app.addr),
        &format!(
            "server 127.0.0.1:{} max_fails=0; server {};",
            free_port(),
            app.addr
        ),
    );
    let nginx = Nginx::start(&conf);
    let decisions = |m: &str, result: &str| {
        sample_of(
            m,
            &format!("sluice_adaptive_decisions_total{{result=\"{result}\"}}"),
        )
    };

    // The app answers 200: an interval is decided with an error rate of 0 (the first attempts'
    // 502s would make it a half), and the limit goes up.
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&nginx, 1, Duration::from_millis(30), &stop);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = sluice.metrics().await;
        if decisions(&m, "increase") + decisions(&m, "decrease") >= 1.0 {
            assert_eq!(decisions(&m, "decrease"), 0.0, "{m}");
            assert_eq!(
                sample_of(&m, &format!("sluice_adaptive_signal{{rule=\"{RULE}\"}}")),
                0.0,
                "{m}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no interval decided: {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let o = wait_for_override(&sluice, "adaptive: increase").await;
    assert!(o["limit"].as_u64().is_some_and(|l| l > CONFIGURED), "{o}");
    assert!(
        nginx.error_log().contains("connect() failed"),
        "no request was retried{}",
        nginx.error_log()
    );

    // The app answers 503: an interval of nothing but errors.
    app.set_status(503);
    let o = wait_for_override(&sluice, "error rate 1.0000").await;
    finish(&stop, tasks).await;
    assert!(
        o["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("adaptive: decrease")),
        "{o}"
    );
    // One report per request that reached the app, not one per attempt.
    wait_accepted(&sluice, &nginx, app.hits()).await;
}
