//! OpenTelemetry tracing, off by default: with `--otlp-endpoint`, one span per check, exported over
//! OTLP/gRPC in batches, continuing the caller's W3C trace context (`traceparent` in the gRPC
//! metadata or the HTTP headers).
//!
//! A check's span carries `rate_limit.domain`, `rate_limit.code`, the deciding limit's
//! `rate_limit.rule` and `rate_limit.algorithm`, `rate_limit.descriptors` and the store round
//! trip in `rate_limit.store_latency_us`; a failed check has an error status. Descriptor values
//! never become attributes: they may be credentials.
//!
//! When tracing is off nothing here allocates: [`enabled`] is one atomic load, and the adapters
//! and the limiter skip every span step behind it.
//!
//! Boundary: reads the limiter's decision types only; the limiter is told whether tracing is on
//! ([`crate::limiter::LimiterOptions`]) and never imports this module.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::limiter::{CheckError, Code, Decision};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Whether checks are traced.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporter pipeline; flush it with [`Tracing::shutdown`] before the process exits.
pub struct Tracing {
    provider: SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct TracingError {
    endpoint: String,
    reason: String,
}

/// Starts exporting to `endpoint` (`http://host:4317`). Requests without a sampled parent are
/// sampled at `ratio`; a caller's sampling decision is followed. Call inside the runtime: the
/// exporter's gRPC channel lives on it.
pub fn init(endpoint: &str, ratio: f64) -> Result<Tracing, TracingError> {
    let error = |reason: String| TracingError {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| error(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(Resource::builder().with_service_name("sluice").build())
        .build();
    let tracer = provider.tracer("sluice");
    TRACER
        .set(tracer)
        .map_err(|_| error("tracing was already set up".into()))?;
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Tracing { provider })
}

impl Tracing {
    /// Exports what is buffered and stops. Blocks: call off the runtime's worker threads.
    pub fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "flushing the last spans failed");
        }
    }
}

/// A check's span: a no-op when tracing is off.
pub struct CheckSpan(Option<opentelemetry_sdk::trace::Span>);

impl CheckSpan {
    /// Starts the span of a check named `name`, as a child of the trace context in `carrier`.
    pub fn start(name: &'static str, carrier: &dyn Extractor, domain: &str) -> CheckSpan {
        let Some(tracer) = TRACER.get().filter(|_| enabled()) else {
            return CheckSpan(None);
        };
        let parent = TraceContextPropagator::new().extract_with_context(&Context::new(), carrier);
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("rate_limit.domain", domain.to_owned())])
            .start_with_context(tracer, &parent);
        CheckSpan(Some(span))
    }

    /// Records a check's outcome and ends the span.
    pub fn finish(self, result: &Result<Decision, CheckError>) {
        match result {
            Ok(decision) => self.decided(decision),
            Err(e) => self.failed(e),
        }
    }

    /// Records the decision and ends the span.
    pub fn decided(self, decision: &Decision) {
        let Some(mut span) = self.0 else { return };
        let code = match decision.overall {
            Code::Ok => "OK",
            Code::OverLimit => "OVER_LIMIT",
        };
        span.set_attribute(KeyValue::new("rate_limit.code", code));
        span.set_attribute(KeyValue::new(
            "rate_limit.descriptors",
            decision.statuses.len() as i64,
        ));
        if let Some(facts) = &decision.trace {
            span.set_attribute(KeyValue::new("rate_limit.rule", facts.rule.clone()));
            span.set_attribute(KeyValue::new("rate_limit.algorithm", facts.algorithm));
            span.set_attribute(KeyValue::new(
                "rate_limit.store_latency_us",
                facts.store_latency.as_micros() as i64,
            ));
        }
        span.end();
    }

    /// Records a failed check and ends the span.
    pub fn failed(self, e: &CheckError) {
        let Some(mut span) = self.0 else { return };
        let kind = match e {
            CheckError::Invalid(_) => "invalid_argument",
            CheckError::Unusable(_) => "unusable",
            CheckError::Store(_) => "store_unavailable",
        };
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error(e.to_string()));
        span.end();
    }
}

/// W3C trace context from HTTP headers (also what gRPC metadata is underneath).
pub struct HeaderCarrier<'a>(pub &'a http::HeaderMap);

impl Extractor for HeaderCarrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::settings::{ServeArgs, Settings};

    #[test]
    fn off_unless_an_endpoint_is_given() {
        let args = || ServeArgs {
            config: Some("rules.yaml".into()),
            ..ServeArgs::default()
        };
        let off = Settings::resolve(args(), |_| None).unwrap();
        assert_eq!(off.otlp_endpoint, None);
        assert_eq!(off.trace_sample_ratio, 0.01);
        // OpenTelemetry's standard variables, the traces-specific one first.
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4317".to_owned()),
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" => Some("http://traces:4317".to_owned()),
            _ => None,
        };
        let on = Settings::resolve(args(), env).unwrap();
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://traces:4317"));
        let bad = ServeArgs {
            trace_sample_ratio: Some(1.5),
            ..args()
        };
        assert!(Settings::resolve(bad, |_| None).is_err());
        assert!(!super::enabled());
    }
}
