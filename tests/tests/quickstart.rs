//! `docs/quickstart.md`'s bare-binary section, replayed: Sluice on `examples/config` answers the
//! three `curl` commands as the page says, and the 25-request loop on one `/api/v1` path gives
//! what the page promises whenever it is run: at least twenty 200s, and 429s only once a second
//! has had its 20 (each refusal lasting at most until that second ends). The Docker Compose
//! section cannot run here (no Docker engine); its files are checked by `deploy_files.rs`. The
//! NGINX section's six requests are `nginx_e2e.rs`.

use serde_json::Value;
use sluice_tests::sluice::Sluice;

fn quotas() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join("examples/config/quotas.yaml")).expect("the example rules")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bare_binary_section_holds() {
    let sluice = Sluice::builder(&quotas()).start();
    let client = reqwest::Client::new();
    let answer = client
        .post(sluice.url("/json"))
        .body(r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"demo"}]}]}"#)
        .send()
        .await
        .expect("POST /json");
    assert_eq!(answer.status(), 200);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body["overallCode"], "OK", "{body}");
    let rules = client
        .get(sluice.url("/rlconfig"))
        .send()
        .await
        .expect("rlconfig")
        .text()
        .await
        .expect("text");
    assert!(rules.contains("edge.app_id"), "{rules}");
    let metrics = sluice.metrics().await;
    assert!(metrics.contains("sluice_requests_total"), "{metrics}");

    // for i in $(seq 25); do curl … /api/v1/orders; done — through /json with the descriptor
    // Envoy builds for that path.
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let answer = client
            .post(sluice.url("/json"))
            .body(r#"{"domain":"edge","descriptors":[{"entries":[{"key":"path","value":"/api/v1/orders"}]}]}"#)
            .send()
            .await
            .expect("POST /json");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.expect("JSON");
        if status == 429 {
            // Refused only within a second that has had its 20: free again when it ends.
            let reset = body["statuses"][0]["durationUntilReset"]
                .as_str()
                .expect("durationUntilReset");
            let seconds: f64 = reset.trim_end_matches('s').parse().expect("a duration");
            assert!(seconds <= 1.0, "{body}");
        }
        statuses.push(status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 25, "{statuses:?}");
    assert!(ok >= 20, "{statuses:?}");
}
