//! The Rust client's OpenTelemetry (`clients/behaviour.md` §7, feature `opentelemetry` of
//! `sluice-client`, turned on by this crate's dependency): the span and metrics of one
//! `Backoff::run`, read back from the SDK's in-memory exporters. No network: scripted replies
//! and a manual clock that only the sleeper moves.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use opentelemetry::trace::Status;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use sluice_client::{
    Answer, Backoff, Clock, Failed, FixedJitter, ManualClock, Pacer, Reply, RetryPolicy, Stop,
    Telemetry,
};

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused (scripted)")
    }
}

impl std::error::Error for Refused {}

/// A tracer and meter provider that keep what they record.
struct Recorded {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracers: SdkTracerProvider,
    meters: SdkMeterProvider,
}

impl Recorded {
    fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracers = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        Self {
            spans,
            metrics,
            tracers,
            meters,
        }
    }

    fn telemetry(&self) -> Telemetry {
        Telemetry::new(&self.tracers, &self.meters)
    }

    /// The one span recorded.
    fn span(&self) -> SpanData {
        let mut spans = self.spans.get_finished_spans().expect("spans");
        assert_eq!(spans.len(), 1, "one span per call: {spans:?}");
        spans.remove(0)
    }

    /// The metrics recorded so far (cumulative).
    fn metrics(&self) -> Metrics {
        self.meters.force_flush().expect("flush");
        let all = self.metrics.get_finished_metrics().expect("metrics");
        Metrics(all.into_iter().last().expect("an export"))
    }
}

struct Metrics(ResourceMetrics);

impl Metrics {
    fn find(&self, name: &str) -> Option<&AggregatedMetrics> {
        self.0
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
            .map(|m| m.data())
    }

    /// A u64 counter's value per data point, with the point's attributes.
    fn counter(&self, name: &str) -> Vec<(Vec<KeyValue>, u64)> {
        match self.find(name) {
            None => Vec::new(),
            Some(AggregatedMetrics::U64(MetricData::Sum(sum))) => sum
                .data_points()
                .map(|p| (p.attributes().cloned().collect(), p.value()))
                .collect(),
            Some(other) => panic!("{name} is not a u64 counter: {other:?}"),
        }
    }

    fn outcomes(&self) -> Vec<(String, u64)> {
        let mut got: Vec<(String, u64)> = self
            .counter("sluice.client.requests")
            .into_iter()
            .map(|(attrs, n)| {
                assert_eq!(attrs.len(), 1, "only `outcome`: {attrs:?}");
                assert_eq!(attrs[0].key.as_str(), "outcome");
                (attrs[0].value.as_str().into_owned(), n)
            })
            .collect();
        got.sort();
        got
    }

    fn retries(&self) -> u64 {
        self.counter("sluice.client.retries")
            .iter()
            .map(|(_, n)| n)
            .sum()
    }

    /// `sluice.client.wait`: (count, sum in seconds).
    fn waits(&self) -> (u64, f64) {
        match self.find("sluice.client.wait") {
            None => (0, 0.0),
            Some(AggregatedMetrics::F64(MetricData::Histogram(h))) => h
                .data_points()
                .fold((0, 0.0), |(c, s), p| (c + p.count(), s + p.sum())),
            Some(other) => panic!("sluice.client.wait is not an f64 histogram: {other:?}"),
        }
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn reply(status: u16, headers: &[(header::HeaderName, &'static str)], body: &str) -> Reply {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(name.clone(), HeaderValue::from_static(value));
    }
    Reply {
        status,
        headers: map,
        body: Bytes::from(body.to_owned()),
    }
}

/// Runs `backoff` over the scripted outcomes, on a manual clock.
async fn run(
    backoff: Backoff,
    script: Vec<Result<Reply, Refused>>,
) -> (Result<Answer, Failed<Refused>>, Arc<ManualClock>) {
    let time = Arc::new(ManualClock::default());
    let backoff = backoff
        .with_sleeper(time.clone())
        .with_clock(time.clone())
        .with_jitter(Arc::new(FixedJitter(0.5)));
    let script = Mutex::new(VecDeque::from(script));
    let result = backoff
        .run(|| {
            let next = script
                .lock()
                .expect("lock")
                .pop_front()
                .expect("a scripted outcome");
            std::future::ready(next)
        })
        .await;
    (result, time)
}

#[tokio::test]
async fn a_429_then_200_is_one_ok_call_with_one_retry_and_its_waits() {
    let rec = Recorded::new();
    // Pacing holds the first attempt 2 s (an earlier refusal), then the 429 asks for 1 s: the
    // back-off waits 1 s + half of the 100 ms jitter bound.
    let pacer = Arc::new(Pacer::default());
    pacer.refused(Some(Duration::from_secs(2)), Duration::ZERO);
    let backoff = Backoff::new(RetryPolicy::default())
        .with_pacer(pacer)
        .with_telemetry(rec.telemetry().with_app_id("orders"));
    let (result, time) = run(
        backoff,
        vec![
            Ok(reply(429, &[(header::RETRY_AFTER, "1")], "")),
            Ok(reply(200, &[], "ok")),
        ],
    )
    .await;
    let answer = result.expect("an answer");
    assert_eq!((answer.reply.status, answer.attempts), (200, 2));
    assert_eq!(answer.waits, [Duration::from_millis(1050)]);
    assert_eq!(answer.paced, Duration::from_secs(2));
    assert_eq!(time.now(), Duration::from_millis(3050));

    let span = rec.span();
    assert_eq!(span.name, "sluice.client.request");
    assert_eq!(span.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(span.instrumentation_scope.name(), "sluice_client");
    assert_eq!(attribute(&span, "sluice.app_id"), Some("orders".into()));
    assert_eq!(attribute(&span, "sluice.tenant_id"), None);
    assert_eq!(attribute(&span, "sluice.lease_id"), None);
    assert_eq!(attribute(&span, "sluice.attempts"), Some(2_i64.into()));
    assert_eq!(attribute(&span, "sluice.stopped"), None);
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(200_i64.into())
    );
    assert_eq!(span.status, Status::Unset);

    let m = rec.metrics();
    assert_eq!(m.outcomes(), [("ok".to_owned(), 1)]);
    assert_eq!(m.retries(), 1);
    let (count, sum) = m.waits();
    assert_eq!(count, 2, "the pacing sleep and the back-off");
    assert!((sum - 3.05).abs() < 1e-9, "slept {sum} s");
}

#[tokio::test]
async fn a_quota_refusal_is_refused_at_once() {
    let rec = Recorded::new();
    let telemetry = rec
        .telemetry()
        .with_app_id("billing")
        .with_tenant_id("acme")
        .with_lease_id("lease-7");
    let backoff = Backoff::new(RetryPolicy::default()).with_telemetry(telemetry);
    let body = r#"{"type":"about:blank","title":"Quota spent","status":429,"kind":"quota","retry_after":3600}"#;
    let (result, time) = run(
        backoff,
        vec![Ok(reply(
            429,
            &[
                (header::CONTENT_TYPE, "application/problem+json"),
                (header::RETRY_AFTER, "3600"),
            ],
            body,
        ))],
    )
    .await;
    let answer = result.expect("the refusal is handed back");
    assert_eq!(answer.stopped, Some(Stop::Quota));
    assert_eq!(time.now(), Duration::ZERO, "a quota is never waited for");

    let span = rec.span();
    assert_eq!(span.name, "sluice.client.request");
    assert_eq!(attribute(&span, "sluice.app_id"), Some("billing".into()));
    assert_eq!(attribute(&span, "sluice.tenant_id"), Some("acme".into()));
    assert_eq!(attribute(&span, "sluice.lease_id"), Some("lease-7".into()));
    assert_eq!(attribute(&span, "sluice.attempts"), Some(1_i64.into()));
    assert_eq!(attribute(&span, "sluice.stopped"), Some("quota".into()));
    assert_eq!(
        attribute(&span, "http.response.status_code"),
        Some(429_i64.into())
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );

    let m = rec.metrics();
    assert_eq!(m.outcomes(), [("refused".to_owned(), 1)]);
    assert_eq!(m.retries(), 0);
    assert_eq!(m.waits(), (0, 0.0));
}

#[tokio::test]
async fn a_transport_failure_is_an_error_after_every_attempt() {
    let rec = Recorded::new();
    let policy = RetryPolicy {
        max_attempts: 3,
        ..RetryPolicy::default()
    };
    let backoff = Backoff::new(policy).with_telemetry(rec.telemetry().with_app_id("orders"));
    let (result, _) = run(backoff, vec![Err(Refused), Err(Refused), Err(Refused)]).await;
    let failed = result.expect_err("no answer");
    assert_eq!((failed.attempts, failed.stop), (3, Stop::Attempts));
    // Half of 100 ms, then half of 200 ms.
    assert_eq!(
        failed.waits,
        [Duration::from_millis(50), Duration::from_millis(100)]
    );

    let span = rec.span();
    assert_eq!(span.name, "sluice.client.request");
    assert_eq!(attribute(&span, "sluice.app_id"), Some("orders".into()));
    assert_eq!(attribute(&span, "sluice.attempts"), Some(3_i64.into()));
    assert_eq!(attribute(&span, "sluice.stopped"), Some("attempts".into()));
    assert_eq!(attribute(&span, "http.response.status_code"), None);
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert_eq!(
        span.events.iter().filter(|e| e.name == "exception").count(),
        1,
        "the last transport error is recorded"
    );

    let m = rec.metrics();
    assert_eq!(m.outcomes(), [("error".to_owned(), 1)]);
    assert_eq!(m.retries(), 2);
    let (count, sum) = m.waits();
    assert_eq!(count, 2);
    assert!((sum - 0.15).abs() < 1e-9, "slept {sum} s");
}

#[tokio::test]
async fn calls_add_up_and_each_has_its_own_span() {
    let rec = Recorded::new();
    let backoff = Backoff::new(RetryPolicy::default()).with_telemetry(rec.telemetry());
    for status in [200, 204, 404] {
        let (result, _) = run(backoff.clone(), vec![Ok(reply(status, &[], ""))]).await;
        assert_eq!(result.expect("an answer").reply.status, status);
    }
    let spans = rec.spans.get_finished_spans().expect("spans");
    assert_eq!(spans.len(), 3);
    assert!(
        spans
            .iter()
            .all(|s| attribute(s, "sluice.app_id").is_none())
    );
    let m = rec.metrics();
    assert_eq!(
        m.outcomes(),
        [("ok".to_owned(), 2), ("refused".to_owned(), 1)]
    );
    assert_eq!(m.retries(), 0);
}

#[tokio::test]
async fn the_call_stays_send_and_the_global_providers_work() {
    // No provider installed: the global no-ops record nothing and change nothing.
    let backoff = Backoff::new(RetryPolicy::default()).with_telemetry(Telemetry::global());
    let call = run(backoff, vec![Ok(reply(200, &[], ""))]);
    fn send<T: Send>(t: T) -> T {
        t
    }
    let (result, _) = tokio::spawn(send(call)).await.expect("joined");
    assert_eq!(result.expect("an answer").attempts, 1);
}
