//! End-to-end: `/auth/{domain}` (descriptors from headers, for NGINX `auth_request`) and bounded
//! request bodies on `/json` and `/auth`, against the real `sluice` binary.

use serde_json::Value;
use sluice_tests::sluice::Sluice;

const RULES: &str = "domain: edge
descriptors:
  - key: app_id
    rate_limit: { unit: hour, requests_per_unit: 2, name: per-app }
  - key: org
    descriptors:
      - key: team
        rate_limit: { unit: hour, requests_per_unit: 100 }
  - key: storage_bytes
    rate_limit: { unit: day, requests_per_unit: 1000, over_limit_status: 402, name: storage }
http_descriptors:
  - entries: [{ key: app_id, header: X-App-Id }]
  - entries: [{ key: org, header: X-Org }, { key: team, header: X-Team }]
  - entries: [{ key: storage_bytes, value: all }]
    hits_addend_header: X-Upload-Bytes
";

async fn auth(sluice: &Sluice, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(sluice.url("/auth/edge"));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("GET /auth/edge")
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_builds_descriptors_from_headers_and_answers_for_nginx() {
    let sluice = Sluice::builder(RULES)
        .arg("--response-headers=ietf")
        .start();

    // Every descriptor whose headers are present is built; the constant one always is.
    let r = auth(
        &sluice,
        &[("x-app-id", "web"), ("x-org", "acme"), ("x-team", "pay")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let policy = header(&r, "ratelimit-policy").expect("RateLimit-Policy");
    assert!(policy.contains("\"per-app\";q=2;w=3600"), "{policy}");
    assert!(policy.contains("\"edge.org.team\";q=100"), "{policy}");
    assert!(policy.contains("\"storage\";q=1000"), "{policy}");
    assert!(header(&r, "retry-after").is_none());

    // A descriptor whose header is missing is left out: no team header, no team limit.
    let r = auth(&sluice, &[("x-app-id", "web"), ("x-org", "acme")]).await;
    assert_eq!(r.status(), 200);
    let policy = header(&r, "ratelimit-policy").expect("RateLimit-Policy");
    assert!(!policy.contains("edge.org.team"), "{policy}");

    // Third request for the app: over its limit of 2. NGINX sees 403 and the reason.
    let r = auth(&sluice, &[("x-app-id", "web")]).await;
    assert_eq!(r.status(), 403);
    let retry: u64 = header(&r, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(header(&r, "sluice-status").as_deref(), Some("429"));
    let problem: Value =
        serde_json::from_str(&header(&r, "sluice-problem").expect("Sluice-Problem"))
            .expect("problem JSON");
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["kind"], "throttle");
    assert_eq!(problem["rule"], "per-app");
    assert_eq!(problem["retry_after"], retry);
    assert_eq!(
        header(&r, "content-type").as_deref(),
        Some("application/problem+json")
    );
    assert!(header(&r, "ratelimit").is_some());

    // The cost of a request can come from a header; the rule's own status travels along. The
    // two allowed requests above cost one byte each; the rejected one cost nothing.
    let r = auth(&sluice, &[("x-upload-bytes", "998")]).await;
    assert_eq!(r.status(), 200);
    let r = auth(&sluice, &[("x-upload-bytes", "5")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "sluice-status").as_deref(), Some("402"));
    // A cost that is not a number is the client's doing: refused, with the status it should see.
    let r = auth(&sluice, &[("x-upload-bytes", "lots")]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "sluice-status").as_deref(), Some("400"));
    let problem: Value =
        serde_json::from_str(&header(&r, "sluice-problem").expect("problem header")).expect("JSON");
    assert_eq!(problem["kind"], "invalid");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("x-upload-bytes"))
    );

    // A domain without a mapping is an error NGINX turns into its failure path.
    let r = reqwest::get(sluice.url("/auth/nowhere"))
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("http_descriptors")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_can_answer_401_and_allows_what_it_cannot_describe() {
    let sluice = Sluice::builder(RULES)
        .file(
            "open.yaml",
            "domain: open\ndescriptors:\n  - key: user\n    rate_limit: { unit: hour, requests_per_unit: 1 }\n\
             http_descriptors:\n  - entries: [{ key: user, header: X-User }]\n",
        )
        .arg("--auth-over-limit-status")
        .arg("401")
        .start();
    for _ in 0..2 {
        assert_eq!(auth(&sluice, &[("x-app-id", "a")]).await.status(), 200);
    }
    assert_eq!(auth(&sluice, &[("x-app-id", "a")]).await.status(), 401);

    // No header, no descriptor: nothing to limit, however often.
    for _ in 0..3 {
        let r = reqwest::get(sluice.url("/auth/open")).await.expect("GET");
        assert_eq!(r.status(), 200);
    }

    // Any method: auth subrequests keep the client's.
    let r = reqwest::Client::new()
        .delete(sluice.url("/auth/open"))
        .header("x-user", "u")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .put(sluice.url("/auth/open"))
        .header("x-user", "u")
        .body("ignored")
        .send()
        .await
        .expect("PUT");
    assert_eq!(r.status(), 401);
}

/// A 20 MB upload used to have its connection cut mid-way, leaving the client with a broken pipe
/// instead of an answer; now it reads a 413 with the reason. `/auth` refuses it (NGINX would turn
/// a 413 into its failure path) and says 413 in `Sluice-Status`.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413_with_a_reason() {
    let sluice = Sluice::builder(RULES).start();
    let client = reqwest::Client::new();
    let big = vec![b'a'; 20 * 1024 * 1024];
    let r = client
        .post(sluice.url("/json"))
        .body(big.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("/json: no answer to a 20 MB body: {e}"));
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("larger than")),
        "{body}"
    );
    let r = client
        .post(sluice.url("/auth/edge"))
        .body(big.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("/auth: no answer to a 20 MB body: {e}"));
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "sluice-status").as_deref(), Some("413"));
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["kind"], "invalid", "{body}");

    // Without a Content-Length (chunked), the bound applies as the body arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b'{'; 4096])).collect();
    let r = client
        .post(sluice.url("/json"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("chunked upload answered");
    assert_eq!(r.status(), 413);

    // The connection pool is still usable, and a malformed body is still a 400.
    let r = client
        .post(sluice.url("/json"))
        .body("{not json")
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 400);
}
