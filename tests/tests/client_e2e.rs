//! The back-off client (`client/`, package `sluice-client`) against the real thing: NGINX running
//! `examples/nginx/nginx.conf` in front of the real `sluice`, and Sluice's `/json` for a quota.
//! Time is injected: the client's waits are recorded, not slept, so the test proves what it
//! waits without waiting.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_client::{Backoff, Client, Clock, Jitter, RetryPolicy, Sleep, Sleeper, Stop};
use sluice_tests::nginx::{EXAMPLE_APP, EXAMPLE_SLUICE, Nginx, Upstream, substitute};
use sluice_tests::sluice::Sluice;

/// Records sleeps and moves its clock by them; never blocks.
#[derive(Default)]
struct RecordedTime {
    now: Mutex<Duration>,
    slept: Mutex<Vec<Duration>>,
}

impl Clock for RecordedTime {
    fn now(&self) -> Duration {
        *self.now.lock().expect("lock")
    }
}

impl Sleeper for RecordedTime {
    fn sleep(&self, d: Duration) -> Sleep<'_> {
        *self.now.lock().expect("lock") += d;
        self.slept.lock().expect("lock").push(d);
        Box::pin(std::future::ready(()))
    }
}

struct Half;

impl Jitter for Half {
    fn uniform(&self, upto: Duration) -> Duration {
        upto / 2
    }
}

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

fn client(time: &Arc<RecordedTime>, policy: RetryPolicy) -> Client {
    let backoff = Backoff::new(policy)
        .with_sleeper(time.clone())
        .with_clock(time.clone())
        .with_jitter(Arc::new(Half));
    Client::new(reqwest::Client::new(), backoff)
}

#[tokio::test(flavor = "multi_thread")]
async fn waits_at_least_what_nginx_and_sluice_ask_then_gives_up() {
    let app = Upstream::start();
    let sluice = example_sluice();
    let nginx = nginx_in_front(&sluice, &app);
    let time = Arc::new(RecordedTime::default());
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
    let slept = time.slept.lock().expect("lock").clone();
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
    let time = Arc::new(RecordedTime::default());
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
    assert!(time.slept.lock().expect("lock").is_empty(), "it waited");
}

/// `client/examples/backoff.rs`, built by `cargo test --workspace --all-targets`, run as a reader
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
