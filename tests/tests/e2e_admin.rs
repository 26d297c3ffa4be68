//! End-to-end: the admin API of the real `sluice` binary: authentication (refused and logged,
//! nothing changed), counters, resets, top consumers, lease holders, overrides and the audit log,
//! bad input, and `sluice admin` over the same API.

use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::admin::{Admin, TOKEN, token_file};
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit, sample_of};

const RULES: &str = r#"
domain: edge
descriptors:
  - key: app_id
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: tenant
    rate_limit: {unit: hour, capacity: 100}
  - key: uploads
    rate_limit: {concurrency: 2, lease_ttl: 300}
"#;

fn app(id: &str) -> Value {
    json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": id}]})
}

async fn check(sluice: &Sluice, app_id: &str) -> i32 {
    let mut client = sluice.grpc().await;
    client
        .should_rate_limit(request("edge", vec![descriptor(&[("app_id", app_id)])]))
        .await
        .expect("check")
        .into_inner()
        .overall_code
}

#[tokio::test]
async fn requests_without_the_right_token_are_refused_logged_and_change_nothing() {
    let (_dir, tokens) = token_file();
    let sluice = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("utf-8"))
        .start();
    let admin = Admin::new(sluice.http_addr);
    assert_eq!(check(&sluice, "a").await, OK);

    for who in [
        Admin::with_token(sluice.http_addr, None),
        Admin::with_token(sluice.http_addr, Some("wrong-token-0123456789")),
        Admin::with_token(sluice.http_addr, Some(&TOKEN[..TOKEN.len() - 1])),
    ] {
        let (status, body) = who
            .put(
                "/overrides",
                json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "limit": 100}),
            )
            .await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(who.post("/counters/reset", app("a")).await.0, 401);
        assert_eq!(who.get("/audit").await.0, 401);
        assert_eq!(
            who.get("/no-such-endpoint").await.0,
            401,
            "unknown paths too"
        );
    }
    // Every refusal is counted; the log has one line per 10 s (anyone who can reach the port
    // can send these), with the peer and the reason.
    let scrape = sluice.metrics().await;
    let refused = sample_of(
        &scrape,
        "sluice_admin_refused_total{reason=\"no bearer token\"}",
    ) + sample_of(
        &scrape,
        "sluice_admin_refused_total{reason=\"wrong token\"}",
    );
    assert_eq!(refused, 12.0, "{scrape}");
    assert_eq!(
        sample_of(
            &scrape,
            "sluice_admin_refused_total{reason=\"no bearer token\"}"
        ),
        4.0
    );
    // The helper's token file has the default mode (0644): Sluice says so at start-up.
    assert!(
        sluice.wait_for_log("readable by others than its owner", Duration::from_secs(5)),
        "no warning about a world-readable token file"
    );
    let logged = sluice.wait_for_logs("admin request refused", 1, Duration::from_secs(10));
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].contains("127.0.0.1"), "with the peer: {logged:?}");
    assert!(logged[0].contains("no bearer token"), "{logged:?}");

    // Nothing changed: no override, no audit entry, the counter still at 1.
    let (status, list) = admin.get("/overrides").await;
    assert_eq!(status, 200);
    assert_eq!(list["overrides"], json!([]));
    assert_eq!(admin.get("/audit").await.1["entries"], json!([]));
    let (_, counters) = admin.post("/counters", app("a")).await;
    assert_eq!(counters["counters"][0]["used"], 1);
}

#[tokio::test]
async fn the_admin_api_is_off_without_tokens() {
    let sluice = Sluice::builder(RULES).start();
    let admin = Admin::new(sluice.http_addr);
    assert_eq!(admin.post("/counters", app("a")).await.0, 404);
}

#[tokio::test]
async fn counters_reset_top_and_holders() {
    let (_dir, tokens) = token_file();
    let sluice = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("utf-8"))
        .start();
    let admin = Admin::new(sluice.http_addr);
    for _ in 0..3 {
        assert_eq!(check(&sluice, "hog").await, OK);
    }
    assert_eq!(check(&sluice, "hog").await, OVER_LIMIT);
    assert_eq!(check(&sluice, "mouse").await, OK);

    let (status, c) = admin.post("/counters", app("hog")).await;
    assert_eq!(status, 200, "{c}");
    let counter = &c["counters"][0];
    assert_eq!(
        (
            &counter["used"],
            &counter["remaining"],
            &counter["limit"],
            &counter["algorithm"]
        ),
        (&json!(3), &json!(0), &json!(3), &json!("fixed_window"))
    );
    assert!(
        counter["reset_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0 && s <= 3600.0)
    );

    let (status, top) = admin.get("/top?rule=edge.app_id&limit=1").await;
    assert_eq!(status, 200, "{top}");
    assert_eq!(top["consumers"][0]["descriptor"], "app_id=hog");
    assert_eq!(top["consumers"].as_array().map(Vec::len), Some(1));
    assert_eq!(admin.get("/top").await.1["rules"], json!(["edge.app_id"]));

    let (status, reset) = admin
        .call("POST", "/counters/reset", Some(app("hog")))
        .await;
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["before"][0]["used"], 3);
    assert_eq!(reset["after"][0]["used"], 0);
    assert_eq!(check(&sluice, "hog").await, OK, "the quota is back");
    let (_, audit) = admin.get("/audit").await;
    let entry = &audit["entries"][0];
    assert_eq!(
        (&entry["action"], &entry["who"]),
        (&json!("counters.reset"), &json!("ops"))
    );
    assert_eq!(entry["before"][0]["used"], 3);
    assert!(sluice.wait_for_log("admin change", Duration::from_secs(5)));

    // Lease holders, with full ids for the admin.
    let mut client = sluice.grpc().await;
    let lease = client
        .should_rate_limit(request("edge", vec![descriptor(&[("uploads", "u")])]))
        .await
        .expect("acquire")
        .into_inner();
    let id = lease
        .response_headers_to_add
        .iter()
        .find(|h| h.key == "x-sluice-lease-id")
        .map(|h| h.value.clone())
        .expect("lease");
    let (status, pools) = admin
        .post(
            "/leases",
            json!({"domain": "edge", "descriptor": [{"key": "uploads", "value": "u"}]}),
        )
        .await;
    assert_eq!(status, 200, "{pools}");
    assert_eq!(pools["pools"][0]["holders"][0]["lease_id"], json!(id));

    // Bad input is 400 with the reason.
    for (path, body, why) in [
        (
            "/counters",
            json!({"domain": "nope", "descriptor": [{"key": "app_id", "value": "a"}]}),
            "no domain",
        ),
        (
            "/counters",
            json!({"domain": "edge", "descriptor": [{"key": "zzz", "value": "a"}]}),
            "matches no limited rule",
        ),
        ("/counters", json!({"domain": "edge"}), "missing field"),
        (
            "/counters/reset",
            json!({"domain": "edge", "descriptor": "app_id"}),
            "invalid type",
        ),
    ] {
        let (status, body) = admin.post(path, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(why)),
            "{why}: {body}"
        );
    }
    assert_eq!(admin.get("/top?limit=many").await.0, 400);
    assert_eq!(admin.get("/top?rule=edge.nothing").await.0, 404);
}

#[tokio::test]
async fn overrides_win_show_in_rlconfig_and_are_audited() {
    let (_dir, tokens) = token_file();
    let sluice = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(tokens.to_str().expect("utf-8"))
        .start();
    let admin = Admin::new(sluice.http_addr);
    for _ in 0..3 {
        check(&sluice, "bot").await;
    }
    assert_eq!(check(&sluice, "bot").await, OVER_LIMIT);

    let mut request_body = app("bot");
    request_body["limit"] = json!(5);
    request_body["reason"] = json!("launch");
    let (status, set) = admin
        .call("PUT", "/overrides", Some(request_body.clone()))
        .await;
    assert_eq!(status, 200, "{set}");
    let id = set["override"]["id"].as_str().expect("id").to_owned();
    assert_eq!(set["before"], Value::Null);
    // The counter keeps its count: two more fit under the new limit.
    assert_eq!(check(&sluice, "bot").await, OK);
    assert_eq!(check(&sluice, "bot").await, OK);
    assert_eq!(check(&sluice, "bot").await, OVER_LIMIT);
    // Anyone sees that an override is in force; only an admin sees whom it names, and who set it.
    let rlconfig = |token: Option<&str>| {
        let mut request = reqwest::Client::new().get(sluice.url("/rlconfig"));
        if let Some(token) = token {
            request = request.header("authorization", format!("bEaReR {token}"));
        }
        async move {
            request
                .send()
                .await
                .expect("rlconfig")
                .text()
                .await
                .expect("text")
        }
    };
    let public = rlconfig(None).await;
    assert!(
        public.contains("# runtime overrides: 1 in force"),
        "{public}"
    );
    assert!(!public.contains("bot") && !public.contains("ops") && !public.contains("launch"));
    assert_eq!(rlconfig(Some("not-the-token-0123456789")).await, public);
    let full = rlconfig(Some(sluice_tests::admin::TOKEN)).await;
    assert!(
        full.contains("edge.app_id: override [app_id=bot] limit=5"),
        "{full}"
    );
    assert!(full.contains("by ops"), "{full}");

    // Bad overrides change nothing.
    for body in [
        json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "bot"}], "limit": "lots"}),
        json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "bot"}], "weight": 3}),
        json!({"domain": "mars", "descriptor": [{"key": "app_id", "value": "bot"}], "limit": 1}),
        json!({"domain": "edge", "descriptor": [{"key": "nope", "value": "bot"}], "limit": 1}),
    ] {
        let (status, why) = admin.put("/overrides", body).await;
        assert_eq!(status, 400, "{why}");
    }
    let (_, list) = admin.get("/overrides").await;
    assert_eq!(list["overrides"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["overrides"][0]["limit"], 5);

    // Replacing and deleting, each audited with before and after.
    request_body["limit"] = json!(6);
    let (_, replaced) = admin.put("/overrides", request_body).await;
    assert_eq!(replaced["before"]["limit"], 5);
    let (status, deleted) = admin.delete(&format!("/overrides/{id}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(admin.delete(&format!("/overrides/{id}")).await.0, 404);
    assert_eq!(
        check(&sluice, "bot").await,
        OVER_LIMIT,
        "back to the rule's 3"
    );
    let (_, audit) = admin.get("/audit?limit=10").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(actions, ["override.delete", "override.set", "override.set"]);
    let delete = &audit["entries"][0];
    assert_eq!(
        (&delete["before"]["limit"], &delete["after"]),
        (&json!(6), &Value::Null)
    );
    assert_eq!(audit["entries"][1]["before"]["limit"], 5);
    assert_eq!(audit["entries"][1]["after"]["limit"], 6);
}

#[tokio::test]
async fn the_cli_speaks_the_admin_api() {
    let (_dir, tokens) = token_file();
    let token_path = tokens.to_str().expect("utf-8").to_owned();
    let sluice = Sluice::builder(RULES)
        .arg("--admin-token-file")
        .arg(&token_path)
        .start();
    let url = format!("http://{}", sluice.http_addr);
    let cli = |args: &[&str]| {
        let mut all = vec![
            "admin",
            "--url",
            &url,
            "--token-file",
            &token_path,
            "--as",
            "alice",
        ];
        all.extend_from_slice(args);
        run_to_exit(&all, Duration::from_secs(20))
    };
    let (status, out) = cli(&[
        "set",
        "edge",
        "app_id^=beta-",
        "--limit",
        "9",
        "--ttl",
        "600",
    ]);
    assert!(status.is_some_and(|s| s.success()), "{out}");
    let (status, _) = cli(&["overrides"]);
    assert!(status.is_some_and(|s| s.success()));
    let admin = Admin::new(sluice.http_addr);
    let (_, list) = admin.get("/overrides").await;
    let o = &list["overrides"][0];
    assert_eq!((&o["limit"], &o["by"]), (&json!(9), &json!("ops (alice)")));
    assert_eq!(
        o["descriptor"],
        json!([{"key": "app_id", "prefix": "beta-"}])
    );
    for _ in 0..9 {
        assert_eq!(check(&sluice, "beta-1").await, OK);
    }
    assert_eq!(check(&sluice, "beta-1").await, OVER_LIMIT);
    let (status, _) = cli(&["counters", "edge", "app_id=beta-1"]);
    assert!(status.is_some_and(|s| s.success()));
    let (status, err) = cli(&["set", "edge", "app_id=x", "--weight", "2"]);
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    assert!(
        err.contains("400") && err.contains("not a fair-share pool"),
        "{err}"
    );
    let (status, err) = run_to_exit(
        &[
            "admin",
            "--url",
            &url,
            "--token",
            "not-the-token-at-all",
            "overrides",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1));
    assert!(err.contains("401"), "{err}");
    let id = o["id"].as_str().expect("id");
    let (status, out) = cli(&["unset", id]);
    assert!(status.is_some_and(|s| s.success()), "{out}");
    let (status, _) = cli(&["audit", "-n", "5"]);
    assert!(status.is_some_and(|s| s.success()));
}
