//! Optional OpenTelemetry (`clients/behaviour.md` §7), compiled only with the `opentelemetry`
//! feature and recorded only once a [`Backoff`](crate::Backoff) is given a [`Telemetry`]
//! ([`Backoff::with_telemetry`](crate::Backoff::with_telemetry)).
//!
//! Each [`Backoff::run`](crate::Backoff::run) is one span `sluice.client.request` (kind
//! client, the current span while the attempts run) with `sluice.app_id`, `sluice.tenant_id` and
//! `sluice.lease_id` when they were set, `sluice.attempts`, `sluice.stopped` (when the client
//! stopped: `quota`, `not_retryable`, `attempts`, `budget`, `wait_too_long`, `circuit_open`) and
//! `http.response.status_code` (when there was an answer). A call handed back an answer below 400
//! counts as `ok`, any other answer as `refused`, no answer ([`Failed`]) as `error`: the counter
//! `sluice.client.requests` (attribute `outcome`). `sluice.client.retries` counts the attempts
//! after the first; the histogram `sluice.client.wait` records every sleep, pacing and back-off,
//! in seconds. A call dropped before it ends ends its span and counts nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::global::{self, BoxedTracer, ObjectSafeTracerProvider};
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider};
use opentelemetry::trace::{FutureExt, SpanBuilder, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, InstrumentationScope, KeyValue};

use crate::policy::Stop;
use crate::retry::{Answer, Failed};

/// Bucket bounds of `sluice.client.wait`, in seconds, up to the default `max_wait` of 60 s.
const WAIT_BOUNDS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A tracer, the client's instruments, and who is calling. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    tracer: Arc<BoxedTracer>,
    requests: Counter<u64>,
    retries: Counter<u64>,
    wait: Histogram<f64>,
    /// `sluice.app_id`, `sluice.tenant_id`, `sluice.lease_id`, those set.
    labels: Vec<KeyValue>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// On the global tracer and meter providers (`opentelemetry::global`): whatever the
    /// application installed, or no-ops.
    pub fn global() -> Self {
        let scope = scope();
        Self::build(
            global::tracer_with_scope(scope.clone()),
            &global::meter_with_scope(scope),
        )
    }

    /// On these providers (an SDK's, or a test's).
    pub fn new(tracers: &impl ObjectSafeTracerProvider, meters: &impl MeterProvider) -> Self {
        let scope = scope();
        Self::build(
            BoxedTracer::new(tracers.boxed_tracer(scope.clone())),
            &meters.meter_with_scope(scope),
        )
    }

    fn build(tracer: BoxedTracer, meter: &Meter) -> Self {
        Self {
            tracer: Arc::new(tracer),
            requests: meter
                .u64_counter("sluice.client.requests")
                .with_unit("{request}")
                .with_description("Calls made, by outcome")
                .build(),
            retries: meter
                .u64_counter("sluice.client.retries")
                .with_unit("{retry}")
                .with_description("Retries made")
                .build(),
            wait: meter
                .f64_histogram("sluice.client.wait")
                .with_unit("s")
                .with_description("Time slept, pacing and back-off")
                .with_boundaries(WAIT_BOUNDS.to_vec())
                .build(),
            labels: Vec::new(),
        }
    }

    /// Records `sluice.app_id` on every span.
    pub fn with_app_id(self, app_id: impl Into<String>) -> Self {
        self.label("sluice.app_id", app_id.into())
    }

    /// Records `sluice.tenant_id` on every span.
    pub fn with_tenant_id(self, tenant_id: impl Into<String>) -> Self {
        self.label("sluice.tenant_id", tenant_id.into())
    }

    /// Records `sluice.lease_id` on every span (a clone per lease is cheap).
    pub fn with_lease_id(self, lease_id: impl Into<String>) -> Self {
        self.label("sluice.lease_id", lease_id.into())
    }

    fn label(mut self, key: &'static str, value: String) -> Self {
        self.labels.retain(|kv| kv.key.as_str() != key);
        self.labels.push(KeyValue::new(key, value));
        self
    }

    /// One sleep before an attempt, pacing or back-off.
    pub(crate) fn slept(&self, wait: Duration) {
        self.wait.record(wait.as_secs_f64(), &[]);
    }

    /// Runs one call (`Backoff::run`'s loop) inside its span, then records how it ended.
    pub(crate) async fn record<E>(
        &self,
        call: impl Future<Output = Result<Answer, Failed<E>>>,
    ) -> Result<Answer, Failed<E>>
    where
        E: std::error::Error + 'static,
    {
        let span = SpanBuilder::from_name("sluice.client.request")
            .with_kind(SpanKind::Client)
            .with_attributes(self.labels.clone())
            .start(&*self.tracer);
        let cx = Context::current_with_span(span);
        let result = call.with_context(cx.clone()).await;
        let span = cx.span();
        let (attempts, stopped, outcome) = match &result {
            Ok(answer) => {
                let status = answer.reply.status;
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    span.set_status(Status::error(format!("HTTP {status}")));
                }
                let outcome = if status < 400 { "ok" } else { "refused" };
                (answer.attempts, answer.stopped, outcome)
            }
            Err(failed) => {
                if let Some(source) = &failed.source {
                    span.record_error(source);
                }
                span.set_status(Status::error(failed.to_string()));
                (failed.attempts, Some(failed.stop), "error")
            }
        };
        span.set_attribute(KeyValue::new("sluice.attempts", i64::from(attempts)));
        if let Some(stop) = stopped {
            span.set_attribute(KeyValue::new("sluice.stopped", Stop::name(stop)));
        }
        span.end();
        self.requests.add(1, &[KeyValue::new("outcome", outcome)]);
        if attempts > 1 {
            self.retries.add(u64::from(attempts - 1), &[]);
        }
        result
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("sluice_client")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
