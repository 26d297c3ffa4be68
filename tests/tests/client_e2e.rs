//! The Rust client (`clients/rust/`, package `sluice-client`) against the real thing: NGINX
//! running `examples/nginx/nginx.conf` in front of the real `sluice`, Sluice's `/json` for a
//! quota, and its lease API. The back-off tests inject time: the client's waits are recorded, not
//! slept, so they prove what it waits without waiting. The pacing test runs in real time (about
//! 15 s), since pacing is about real windows. The reporter posts to Sluice's `/reports` for an
//! adaptive rule, as an app reporting its calls to an upstream would.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{
    Backoff, Client, FixedJitter, LeaseError, Leases, ManualClock, Pacer, Recorded, Reporter,
    ReporterSettings, RetryPolicy, Stop,
};
use sluice_tests::nginx::{EXAMPLE_APP, EXAMPLE_SLUICE, Nginx, Upstream, substitute};
use sluice_tests::sluice::{Sluice, sample_of};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/nginx")
}

fn nginx_in_front(sluice: &Sluice, app: &Upstream) -> Nginx {
    let text = std::fs::read_to_string(examples().join("nginx.conf")).expect("example");
    let text = substitute(
        &text,
        EXAMPLE_SLUICE,
        &format!("server {};", sluice.http_addr),
    );
    let text = substitute(&text, EXAMPLE_APP, &format!("server {};", app.addr));
    Nginx::start(&text)
}

fn example_sluice() -> Sluice {
    let rules = std::fs::read_to_string(examples().join("config/quotas.yaml")).expect("rules");
    Sluice::builder(&rules)
        .arg("--response-headers=ietf")
        .start()
}

fn client(time: &Arc<ManualClock>, policy: RetryPolicy) -> Client {
    let backoff = Backoff::new(policy)
        .with_sleeper(time.clone())
        .with_clock(time.clone())
        .with_jitter(Arc::new(FixedJitter(0.5)));
    Client::new(reqwest::Client::new(), backoff)
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_at_least_what_nginx_and_sluice_ask_then_gives_up() {
    let app = Upstream::start();
    let sluice = example_sluice();
    let nginx = nginx_in_front(&sluice, &app);
    let time = Arc::new(ManualClock::default());
    let policy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(100),
        cap: Duration::from_secs(1),
        max_wait: Duration::from_secs(120),
    };
    let client = client(&time, policy);
    let url = nginx.url("/orders");
    let send = || client.send(|http| http.get(&url).header("x-app-id", "backoff"));

    for _ in 0..5 {
        let answer = send().await.expect("answer");
        assert_eq!((answer.reply.status, answer.attempts), (200, 1));
    }
    let answer = send().await.expect("answer");
    assert_eq!(answer.reply.status, 429, "{}", nginx.error_log());
    assert_eq!(answer.attempts, 3);
    assert_eq!(answer.stopped, Some(Stop::Attempts));
    let retry_after: u64 = answer.reply.headers["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    let problem = answer
        .problem
        .expect("the problem document NGINX forwarded");
    assert_eq!(problem.rule.as_deref(), Some("per-app"));
    // Each wait is the server's Retry-After (which cannot grow while no real time passes) plus
    // half the back-off bound: 50 ms before the first retry, 100 ms before the second.
    let slept = time.slept();
    assert_eq!(slept.len(), 2);
    for (wait, jitter) in slept.iter().zip([50, 100]) {
        let asked = wait.saturating_sub(Duration::from_millis(jitter));
        assert!(
            asked >= Duration::from_secs(retry_after) && asked <= Duration::from_secs(60),
            "waited {wait:?} for Retry-After {retry_after}"
        );
    }
    assert_eq!(answer.waits, slept);
    assert_eq!(app.hits(), 5, "no retry reached the app");
}

#[tokio::test(flavor = "multi_thread")]
async fn never_retries_a_quota() {
    // A daily limit is a quota by default: its problem document says `kind: quota`.
    let sluice = Sluice::builder(
        "domain: d\ndescriptors:\n  - key: org\n    rate_limit: { unit: day, requests_per_unit: 1, name: org-daily }\n",
    )
    .start();
    let time = Arc::new(ManualClock::default());
    let client = client(&time, RetryPolicy::default());
    let body = r#"{"domain":"d","descriptors":[{"entries":[{"key":"org","value":"acme"}]}]}"#;
    let url = sluice.url("/json");
    let send = || client.send(|http| http.post(&url).body(body));

    assert_eq!(send().await.expect("answer").reply.status, 200);
    let answer = send().await.expect("answer");
    assert_eq!(answer.reply.status, 429);
    assert_eq!(answer.attempts, 1);
    assert_eq!(answer.stopped, Some(Stop::Quota));
    assert!(answer.reply.headers.contains_key("retry-after"));
    assert_eq!(
        answer.problem.and_then(|p| p.kind),
        Some(sluice_client::Kind::Quota)
    );
    assert!(time.slept().is_empty(), "it waited");
}

/// `clients/rust/examples/backoff.rs`, built by `cargo test --workspace --all-targets`, run as a reader
/// would against NGINX and Sluice. Its longest wait is 1 s, so the refusals it reports (a
/// Retry-After near a minute) take no time.
#[tokio::test(flavor = "multi_thread")]
async fn the_example_program_runs_through_nginx() {
    let app = Upstream::start();
    let sluice = example_sluice();
    let nginx = nginx_in_front(&sluice, &app);
    let exe = std::env::current_exe().expect("test path");
    let example = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("examples/backoff");
    assert!(
        example.exists(),
        "{} is missing: build it with `cargo build -p sluice-client --examples` (the README's \
         test command does)",
        example.display()
    );
    let out = Command::new(&example)
        .args([&nginx.url("/orders"), "example", "7", "1"])
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for line in &lines[..5] {
        assert!(line.ends_with(": 200 after 1 attempt(s)"), "{stdout}");
    }
    for line in &lines[5..] {
        assert!(
            line.contains(": 429 after 1 attempt(s), stopped: WaitTooLong"),
            "{stdout}"
        );
        assert!(line.contains("app_id is over its limit"), "{stdout}");
    }
}

/// The NGINX example's domain with a per-second limit, so pacing shows within seconds.
const EDGE_RULES: &str = "domain: nginx-edge
descriptors:
  - key: app_id
    rate_limit: {name: per-app, unit: second, requests_per_unit: 10}
http_descriptors:
  - entries:
      - { key: app_id, header: X-App-Id }
";

/// Sends `count` requests due at 30 a second (three times the limit), each as soon as it is
/// due, through `client`; returns (attempts, 429s received, every retry's wait with the
/// Retry-After that preceded it).
async fn three_times_the_limit(
    client: &Client,
    url: &str,
    app_id: &str,
    count: u32,
) -> (u32, u32, Vec<(Duration, Duration)>) {
    let start = Instant::now();
    let (mut attempts, mut refused, mut waits) = (0, 0, Vec::new());
    for i in 0..count {
        let due = start + Duration::from_secs_f64(f64::from(i) / 30.0);
        tokio::time::sleep_until(due.into()).await;
        let answer = client
            .send(|http| http.get(url).header("x-app-id", app_id))
            .await
            .expect("an answer");
        assert_eq!(answer.reply.status, 200, "{:?}", answer.stopped);
        attempts += answer.attempts;
        // Every attempt before the last was refused: nothing else is retried here.
        refused += answer.attempts - 1;
        for (wait, asked) in answer.waits.iter().zip(&answer.asked) {
            waits.push((*wait, asked.expect("a 429 with Retry-After")));
        }
    }
    (attempts, refused, waits)
}

/// An app sending three times its limit: with pacing on it is spaced below the limit and
/// (almost) never refused; with pacing off it is refused and each retry waits at least the
/// Retry-After. In both, the app behind NGINX never sees more than the limit in a second.
#[tokio::test(flavor = "multi_thread")]
async fn pacing_keeps_an_app_at_three_times_its_limit_from_being_refused() {
    let app = Upstream::start();
    let sluice = Sluice::builder(EDGE_RULES)
        .arg("--response-headers=ietf")
        .start();
    let nginx = nginx_in_front(&sluice, &app);
    let url = nginx.url("/orders");
    let policy = RetryPolicy {
        max_attempts: 10,
        max_wait: Duration::from_secs(5),
        ..RetryPolicy::default()
    };

    let paced = Client::new(
        reqwest::Client::new(),
        Backoff::new(policy.clone()).with_pacer(std::sync::Arc::new(Pacer::default())),
    );
    let started = Instant::now();
    let (attempts, refused, _) = three_times_the_limit(&paced, &url, "paced-rust", 90).await;
    let paced_secs = started.elapsed().as_secs_f64();
    assert!(
        refused * 50 < attempts,
        "{refused} of {attempts} attempts refused with pacing on"
    );
    println!(
        "SDK-E2E rust {{\"mode\":\"paced\",\"requests\":90,\"attempts\":{attempts},\"refused\":{refused},\"elapsed_s\":{paced_secs:.2}}}"
    );

    let unpaced = Client::new(reqwest::Client::new(), Backoff::new(policy));
    let started = Instant::now();
    let (attempts, refused, waits) =
        three_times_the_limit(&unpaced, &url, "unpaced-rust", 45).await;
    assert!(refused > 0, "three times the limit was never refused");
    // No retry came earlier than the Retry-After of the refusal before it.
    for (wait, asked) in &waits {
        assert!(wait >= asked, "waited {wait:?}, asked {asked:?}");
    }
    println!(
        "SDK-E2E rust {{\"mode\":\"unpaced\",\"requests\":45,\"attempts\":{attempts},\"refused\":{refused},\"elapsed_s\":{:.2}}}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(app.hits(), 135, "every request reached the app once");
    for app_id in ["paced-rust", "unpaced-rust"] {
        let busiest = app.busiest_second(app_id, 10, Duration::from_millis(5));
        assert!(busiest <= 10, "{app_id}: {busiest} requests in one second");
    }
}

/// A lease held for a piece of work that fails is released all the same, and the work's own
/// error is what the caller sees.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_released_when_its_work_fails() {
    let sluice = Sluice::builder(
        "domain: sdk\ndescriptors:\n  - key: uploads\n    rate_limit: {name: uploads, concurrency: 1, lease_ttl: 60}\n",
    )
    .start();
    let base = sluice.url("");
    let leases = Leases::new(reqwest::Client::new(), base.trim_end_matches('/'));
    let descriptors = || vec![vec![("uploads".to_owned(), "report-7".to_owned())]];
    let outcome: Result<(), &str> = leases
        .hold("sdk", descriptors(), Duration::ZERO, async |lease| {
            assert_eq!(lease.ttl, Duration::from_secs(60));
            // The pool of one is full while the work runs.
            let second = leases
                .acquire("sdk", descriptors(), Duration::ZERO)
                .await
                .expect_err("a second holder");
            assert!(matches!(second, LeaseError::Refused { .. }), "{second}");
            Err("the upload failed")
        })
        .await
        .expect("acquired and released");
    assert_eq!(outcome, Err("the upload failed"));
    let holders: serde_json::Value = reqwest::Client::new()
        .post(sluice.url("/leases/holders"))
        .body(r#"{"domain":"sdk","descriptors":[{"entries":[{"key":"uploads","value":"report-7"}]}]}"#)
        .send()
        .await
        .expect("holders")
        .json()
        .await
        .expect("JSON");
    assert_eq!(holders["pools"][0]["in_use"], 0, "{holders}");
    let again = leases
        .acquire("sdk", descriptors(), Duration::ZERO)
        .await
        .expect("the slot is free again");
    leases.release(&again).await.expect("released");
}

/// Reports recorded by an app reach Sluice's adaptive rule: the matching ones are counted as
/// accepted (in the flush's counts, from Sluice's answers, and on `/metrics`), the one matching
/// no adaptive rule as unmatched, the impossible one never leaves the app (Sluice refuses no
/// batch), and a batch that gets no answer (Sluice stopped) is counted as failed, not retried.
#[tokio::test(flavor = "multi_thread")]
async fn reports_reach_the_adaptive_rule() {
    let mut sluice = Sluice::builder(
        "domain: sdk
descriptors:
  - key: upstream
    value: payments
    rate_limit:
      concurrency: 50
      adaptive: {signal: latency, target: 200ms, quantile: 0.99, min: 5, max: 100, interval: 1s}
",
    )
    .start();
    let settings = ReporterSettings {
        max_batch: 4,
        ..ReporterSettings::default()
    };
    let reporter = Reporter::new(reqwest::Client::new(), sluice.url(""), "sdk", settings);
    for i in 0..10u16 {
        let got = reporter.record(
            [("upstream", "payments")],
            Duration::from_millis(20 + u64::from(i)),
            if i == 9 { 503 } else { 200 },
        );
        assert_eq!(got, Recorded::Pending);
    }
    assert_eq!(
        reporter.record([("upstream", "search")], Duration::from_millis(5), 200),
        Recorded::Pending
    );
    assert_eq!(
        reporter.record_ms([("upstream", "payments")], -1.0, 200),
        Recorded::Invalid
    );
    let flushed = reporter.flush().await;
    assert_eq!(
        (
            flushed.sent,
            flushed.accepted,
            flushed.unmatched,
            flushed.failed
        ),
        (11, 10, 1, 0),
        "{flushed:?}"
    );
    let scrape = sluice.metrics().await;
    assert_eq!(
        sample_of(
            &scrape,
            "sluice_adaptive_reports_total{result=\"accepted\"}"
        ),
        10.0
    );
    // Three batches of at most 4, and none refused: the invalid report never left.
    assert_eq!(
        sample_of(&scrape, "sluice_adaptive_reports_total{result=\"refused\"}"),
        0.0
    );

    sluice.terminate(Duration::from_secs(10));
    reporter.record([("upstream", "payments")], Duration::from_millis(20), 200);
    let flushed = reporter.flush().await;
    assert_eq!((flushed.sent, flushed.failed), (0, 1));
    let totals = reporter.counts();
    assert_eq!(
        (totals.sent, totals.failed, totals.invalid, totals.pending),
        (11, 1, 1, 0)
    );
}
