//! End-to-end: the real `nginx` runs the shipped examples (`examples/nginx/nginx.conf` with
//! `auth_request`, `openresty.conf` with Lua) in front of a small app, asking the real `sluice`
//! with the examples' rules. Requests pass, then the client gets 429 with `Retry-After`, the
//! rate-limit headers and the problem document; with Sluice gone, requests pass (fail open) or
//! get 503 (fail closed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use sluice_tests::nginx::{Nginx, UPSTREAM_BODY, Upstream, point_at, substitute};
use sluice_tests::sluice::Sluice;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx")
}

fn conf(example: &str, sluice: SocketAddr, app: SocketAddr, fail_closed: bool) -> String {
    let text = std::fs::read_to_string(examples().join(example)).expect("example config");
    let text = point_at(&text, sluice, app);
    if fail_closed {
        substitute(&text, "default 0;", "default 1;")
    } else {
        text
    }
}

/// `sluice --config examples/nginx/config`: both of its rule files.
fn start_sluice() -> Sluice {
    let read = |name: &str| {
        std::fs::read_to_string(examples().join("config").join(name)).expect("example rules")
    };
    Sluice::builder(&read("quotas.yaml"))
        .file("uploads.yaml", &read("uploads.yaml"))
        .arg("--response-headers=ietf")
        .start()
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

async fn get(client: &reqwest::Client, nginx: &Nginx, app_id: &str) -> reqwest::Response {
    nginx.get_orders(client, app_id).await
}

async fn passes_then_limits_then_fails_open_or_closed(example: &str) {
    let app = Upstream::start();
    let mut sluice = start_sluice();
    let open = Nginx::start(&conf(example, sluice.http_addr, app.addr, false));
    let closed = Nginx::start(&conf(example, sluice.http_addr, app.addr, true));
    let client = reqwest::Client::new();

    // The example's app limit: a burst of 5, then one a minute.
    for i in 0..5 {
        let r = get(&client, &open, "demo").await;
        assert_eq!(r.status(), 200, "request {i}{}", open.error_log());
        let policy = header(&r, "ratelimit-policy").expect("RateLimit-Policy");
        assert!(
            policy.contains("\"per-app\";q=1;w=60;sluice-burst=5"),
            "{policy}"
        );
        let state = header(&r, "ratelimit").expect("RateLimit");
        assert!(
            state.contains(&format!("\"per-app\";r={}", 4 - i)),
            "{state}"
        );
        assert_eq!(r.text().await.expect("body"), UPSTREAM_BODY);
    }
    assert_eq!(app.hits(), 5);

    let r = get(&client, &open, "demo").await;
    assert_eq!(r.status(), 429, "{}", open.error_log());
    let retry: u64 = header(&r, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("whole seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(header(&r, "ratelimit").is_some_and(|v| v.contains("\"per-app\";r=0")));
    assert!(header(&r, "ratelimit-policy").is_some());
    let problem: Value = r.json().await.expect("problem document");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["kind"], "throttle");
    assert_eq!(problem["rule"], "per-app");
    assert_eq!(problem["level"], "app_id");
    assert_eq!(problem["retry_after"], retry);
    assert_eq!(app.hits(), 5, "a rejected request reached the app");

    // Another app has its own budget; the fail-closed proxy behaves the same while Sluice is up.
    assert_eq!(get(&client, &open, "other").await.status(), 200);
    assert_eq!(get(&client, &closed, "third").await.status(), 200);
    assert_eq!(app.hits(), 7);

    // Sluice gone: the default lets requests through, the fail-closed variant refuses them.
    assert!(
        sluice.terminate(Duration::from_secs(15)).is_some(),
        "sluice did not stop"
    );
    let r = get(&client, &open, "demo").await;
    assert_eq!(r.status(), 200, "fail open{}", open.error_log());
    assert_eq!(r.text().await.expect("body"), UPSTREAM_BODY);
    let r = get(&client, &closed, "demo").await;
    assert_eq!(r.status(), 503, "fail closed{}", closed.error_log());
    assert_eq!(app.hits(), 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_request_example() {
    passes_then_limits_then_fails_open_or_closed("nginx.conf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openresty_example() {
    passes_then_limits_then_fails_open_or_closed("openresty.conf").await;
}

/// `/upload` in nginx.conf: the subrequest carries the body's size as the cost, and a spent byte
/// quota reaches the client with the rule's own status, 402, through the `if` in `@ratelimited`.
#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_metered_in_bytes_and_refused_with_402() {
    let app = Upstream::start();
    let sluice = start_sluice();
    let nginx = Nginx::start(&conf("nginx.conf", sluice.http_addr, app.addr, false));
    let client = reqwest::Client::new();
    let upload = || {
        client
            .post(nginx.url("/upload"))
            .header("x-app-id", "uploader")
            .body(vec![b'x'; 600_000])
            .send()
    };

    let r = upload().await.expect("upload");
    assert_eq!(r.status(), 200, "{}", nginx.error_log());
    let state = header(&r, "ratelimit").expect("RateLimit");
    assert!(state.contains("\"upload-bytes\";r=400000;"), "{state}");

    let r = upload().await.expect("upload");
    assert_eq!(r.status(), 402, "{}", nginx.error_log());
    assert!(header(&r, "retry-after").is_some());
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let problem: Value = r.json().await.expect("problem document");
    assert_eq!(problem["status"], 402);
    assert_eq!(problem["kind"], "quota");
    assert_eq!(problem["rule"], "upload-bytes");
    assert_eq!(app.hits(), 1, "the refused upload reached the app");
}

/// What an attacker sent through the examples to get past its limit: a hundred junk headers
/// (Sluice's 431 became NGINX's 500, then "Sluice unavailable", then allowed), a header byte that
/// is not UTF-8 (400, the same path), both while over the per-app limit and while flooding the
/// per-address limit under fresh app ids. Each is refused now; only a Sluice that cannot answer
/// lets requests through (the first test).
async fn garbage_never_gets_a_client_past_its_limit(example: &str) {
    let app = Upstream::start();
    let sluice = start_sluice();
    let nginx = Nginx::start(&conf(example, sluice.http_addr, app.addr, false));
    let client = reqwest::Client::new();
    let junk = |mut request: reqwest::RequestBuilder| {
        for i in 0..100 {
            request = request.header(format!("x-junk-{i}"), "j".repeat(100));
        }
        request
    };
    for _ in 0..5 {
        assert_eq!(get(&client, &nginx, "spent").await.status(), 200);
    }
    assert_eq!(get(&client, &nginx, "spent").await.status(), 429);

    for _ in 0..5 {
        let r = junk(client.get(nginx.url("/orders")).header("x-app-id", "spent"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 429, "junk headers{}", nginx.error_log());
    }
    let bad = reqwest::header::HeaderValue::from_bytes(b"spent\xff").expect("obs-text");
    let r = client
        .get(nginx.url("/orders"))
        .header("x-app-id", bad)
        .send()
        .await
        .expect("GET");
    assert_eq!(
        r.status(),
        400,
        "a byte that is not UTF-8{}",
        nginx.error_log()
    );
    assert_eq!(app.hits(), 5, "a refused request reached the app");

    // The per-address limit (50 a second), with junk headers and a new app id each time.
    let started = std::time::Instant::now();
    let mut passed = 0u64;
    for i in 0..200 {
        let r = junk(
            client
                .get(nginx.url("/orders"))
                .header("x-app-id", format!("fresh-{i}")),
        )
        .send()
        .await
        .expect("GET");
        match r.status().as_u16() {
            200 => passed += 1,
            429 => {}
            other => panic!("request {i}: {other}{}", nginx.error_log()),
        }
    }
    // One fixed window a second: at most 50 in each window the loop touched.
    let windows = started.elapsed().as_secs() + 2;
    println!(
        "{example}: {passed} of 200 passed the per-address limit in {:?}",
        started.elapsed()
    );
    assert!(
        passed <= 50 * windows,
        "{passed} passed in {windows} windows"
    );
    assert!(passed >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_request_example_refuses_garbage() {
    garbage_never_gets_a_client_past_its_limit("nginx.conf").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openresty_example_refuses_garbage() {
    garbage_never_gets_a_client_past_its_limit("openresty.conf").await;
}
