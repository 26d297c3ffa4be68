//! OpenTelemetry tracing against a real OTLP/gRPC receiver (`tests/conformance/otlp_receiver.py`,
//! Python's `opentelemetry-proto` over grpcio): the real `sluice` on a real Redis exports one span
//! per check, continuing the caller's W3C trace context from gRPC metadata and HTTP headers, with
//! the domain, code, deciding rule, algorithm and store latency; a store failure is an error span;
//! a caller's "not sampled" is followed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::Sluice;

/// The receiver process and the spans it has printed so far.
struct Receiver {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/otlp_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with opentelemetry-proto (scripts/test.sh installs it)");
        let stdin = child.stdin.take().expect("stdin");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first: Value = serde_json::from_str(
            &lines
                .next()
                .expect("the receiver's first line")
                .expect("readable"),
        )
        .expect("JSON");
        let port = first["listening"].as_u64().expect("listening port") as u16;
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&spans);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().expect("lock").push(v);
                }
            }
        });
        Receiver {
            child,
            _stdin: stdin,
            port,
            spans,
        }
    }

    /// Waits (bounded) for a span of `trace_id` matching `pred`.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(s) = self.spans.lock().expect("lock").iter().find(|s| pred(s)) {
                return s.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "no span {what} within 20 s; received:\n{:#?}",
            self.spans.lock().expect("lock")
        );
    }

    fn of_trace(&self, trace_id: &str) -> Vec<Value> {
        self.spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s["trace_id"] == trace_id)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const RULES: &str = "domain: traced
descriptors:
  - key: app_id
    rate_limit: { name: per-app, unit: hour, requests_per_unit: 1 }
  - key: team
    rate_limit: { name: per-team, unit: minute, requests_per_unit: 100, algorithm: token_bucket }
";

fn traceparent(trace_id: &str, parent: &str, sampled: bool) -> String {
    format!(
        "00-{trace_id}-{parent}-{}",
        if sampled { "01" } else { "00" }
    )
}

async fn grpc_check(
    sluice: &Sluice,
    key: &str,
    value: &str,
    traceparent: Option<&str>,
) -> Result<i32, tonic::Status> {
    let mut req = tonic::Request::new(request("traced", vec![descriptor(&[(key, value)])]));
    if let Some(tp) = traceparent {
        req.metadata_mut()
            .insert("traceparent", tp.parse().expect("ASCII"));
    }
    let mut client = sluice.grpc().await;
    client
        .should_rate_limit(req)
        .await
        .map(|r| r.into_inner().overall_code)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_span_per_check_continues_the_callers_trace() {
    let receiver = Receiver::start();
    let mut redis = RedisServer::start();
    let sluice = Sluice::builder(RULES)
        .redis(&redis.url())
        .arg("--otlp-endpoint")
        .arg(&format!("http://127.0.0.1:{}", receiver.port))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .start();

    // A caller's trace through gRPC: one allowed check, one refused.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let tp = traceparent(trace, parent, true);
    grpc_check(&sluice, "app_id", "a", Some(&tp))
        .await
        .expect("check");
    let refused = grpc_check(&sluice, "app_id", "a", Some(&tp))
        .await
        .expect("check");
    assert_eq!(refused, OVER_LIMIT);
    let ok = receiver.wait_for("for the allowed check", |s| {
        s["trace_id"] == trace && s["attributes"]["rate_limit.code"] == "OK"
    });
    let over = receiver.wait_for("for the refused check", |s| {
        s["trace_id"] == trace && s["attributes"]["rate_limit.code"] == "OVER_LIMIT"
    });
    for span in [&ok, &over] {
        assert_eq!(span["parent_span_id"], parent, "{span:#}");
        assert_eq!(
            span["name"],
            "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        );
        assert_eq!(span["kind"], 2, "SPAN_KIND_SERVER: {span:#}");
        assert_eq!(span["resource"]["service.name"], "sluice");
        let a = &span["attributes"];
        assert_eq!(a["rate_limit.domain"], "traced");
        assert_eq!(a["rate_limit.rule"], "per-app");
        assert_eq!(a["rate_limit.algorithm"], "fixed_window");
        assert_eq!(a["rate_limit.descriptors"], 1);
        // A Redis round trip takes time: at least a microsecond, under the 1 s store timeout.
        let store = a["rate_limit.store_latency_us"]
            .as_i64()
            .expect("store latency");
        assert!((1..1_000_000).contains(&store), "{store}");
        // Descriptor values never reach attributes.
        assert!(!span.to_string().contains("\"a\""), "{span:#}");
    }
    assert_ne!(ok["span_id"], over["span_id"]);

    // The HTTP endpoint continues a trace from the traceparent header.
    let http_trace = "0af7651916cd43dd8448eb211c80319c";
    let r = reqwest::Client::new()
        .post(sluice.url("/json"))
        .header(
            "traceparent",
            traceparent(http_trace, "b7ad6b7169203331", true),
        )
        .body(r#"{"domain":"traced","descriptors":[{"entries":[{"key":"team","value":"t"}]}]}"#)
        .send()
        .await
        .expect("POST /json");
    assert_eq!(r.status(), 200);
    let http = receiver.wait_for("for /json", |s| s["trace_id"] == http_trace);
    assert_eq!(http["name"], "POST /json");
    assert_eq!(http["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(http["attributes"]["rate_limit.algorithm"], "token_bucket");
    assert_eq!(http["attributes"]["rate_limit.rule"], "per-team");

    // A caller that did not sample is followed: no span for its trace.
    let unsampled = "11111111111111111111111111111111";
    grpc_check(
        &sluice,
        "team",
        "u",
        Some(&traceparent(unsampled, "2222222222222222", false)),
    )
    .await
    .expect("check");

    // The counter store fails: the span is an error, and the call UNAVAILABLE.
    redis.stop();
    let failed_trace = "33333333333333333333333333333333";
    let status = grpc_check(
        &sluice,
        "team",
        "v",
        Some(&traceparent(failed_trace, "4444444444444444", true)),
    )
    .await
    .expect_err("the store is down");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let failed = receiver.wait_for("for the failed check", |s| s["trace_id"] == failed_trace);
    assert_eq!(failed["status_code"], 2, "STATUS_CODE_ERROR: {failed:#}");
    assert_eq!(failed["attributes"]["error.type"], "store_unavailable");

    // Spans are exported in the order they end: the unsampled check ended before the failed one,
    // whose span has arrived, so its absence is final.
    assert!(receiver.of_trace(unsampled).is_empty());
}

/// Spans still buffered when SIGTERM arrives are exported before the process exits: the batch
/// delay here is a minute, so only the shutdown flush can deliver the span in time.
#[tokio::test(flavor = "multi_thread")]
async fn buffered_spans_are_flushed_on_shutdown() {
    let receiver = Receiver::start();
    let mut sluice = Sluice::builder(RULES)
        .arg("--otlp-endpoint")
        .arg(&format!("http://127.0.0.1:{}", receiver.port))
        .arg("--trace-sample-ratio")
        .arg("1")
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .start();
    // No caller context: a root span, sampled at ratio 1.
    grpc_check(&sluice, "team", "t", None).await.expect("check");
    let status = sluice.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "sluice did not exit cleanly"
    );
    let span = receiver.wait_for("flushed at shutdown", |s| {
        s["attributes"]["rate_limit.domain"] == "traced"
    });
    assert_eq!(span["parent_span_id"], "", "a root span: {span:#}");
}

/// A collector that accepts connections and never answers must not hold up a shutdown: the last
/// flush gets what is left of the grace period, then the process exits without it.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_collector_does_not_hold_up_shutdown() {
    let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = hung.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let held: Vec<_> = hung.incoming().take(8).map_while(Result::ok).collect();
        held
    });
    let mut sluice = Sluice::builder(RULES)
        .arg("--otlp-endpoint")
        .arg(&format!("http://127.0.0.1:{port}"))
        .arg("--trace-sample-ratio")
        .arg("1")
        .arg("--shutdown-grace-secs")
        .arg("1")
        .env("OTEL_BSP_SCHEDULE_DELAY", "60000")
        .start();
    grpc_check(&sluice, "team", "t", None).await.expect("check");
    let started = Instant::now();
    let status = sluice.terminate(Duration::from_secs(15));
    let took = started.elapsed();
    println!("SIGTERM to exit with a hung collector: {took:?}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    // The exporter's own timeout is 5 s; the grace period is 1 s.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    drop(holder);
}
