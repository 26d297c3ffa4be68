import { test } from "node:test";
import assert from "node:assert/strict";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { MeterProvider, InMemoryMetricExporter, PeriodicExportingMetricReader, AggregationTemporality } from "@opentelemetry/sdk-metrics";
import { SluiceClient, ManualClock, RetryBudget } from "../dist/index.js";

function setup() {
  const spans = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
  const metrics = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter: metrics, exportIntervalMillis: 3_600_000 });
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    spans, metrics, reader,
    telemetry: { tracer: tracerProvider.getTracer("test"), meter: meterProvider.getMeter("test") },
  };
}

function points(metrics, name) {
  const out = [];
  for (const rm of metrics.getMetrics()) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) {
    if (m.descriptor.name === name) out.push(...m.dataPoints);
  }
  return out;
}

test("one span per call with identity, attempts, stopped and status; counters and the wait histogram", async () => {
  const { spans, metrics, reader, telemetry } = setup();
  const clock = new ManualClock();
  const script = [
    new Response("", { status: 429, headers: { "retry-after": "1" } }),
    new Response("ok", { status: 200 }),
    new Response('{"kind":"quota"}', { status: 429, headers: { "content-type": "application/problem+json" } }),
  ];
  let i = 0;
  const client = new SluiceClient({
    fetch: async () => script[i++],
    clock, sleep: clock.sleep, jitter: () => 0, budget: new RetryBudget(),
    appId: "app-7", tenantId: "tenant-1", telemetry,
  });
  await client.send("http://api.test/", { sluice: { leaseId: "lease-9" } });
  await client.send("http://api.test/");
  const failing = new SluiceClient({ fetch: async () => { throw new TypeError("down"); }, clock, sleep: clock.sleep, jitter: () => 0,
    budget: new RetryBudget(), policy: { maxAttempts: 1 }, telemetry });
  await assert.rejects(failing.send("http://api.test/"));

  const finished = spans.getFinishedSpans();
  assert.equal(finished.length, 3);
  assert.ok(finished.every((s) => s.name === "sluice.client.request"));
  assert.deepEqual(finished[0].attributes, {
    "sluice.app_id": "app-7", "sluice.tenant_id": "tenant-1", "sluice.lease_id": "lease-9",
    "sluice.attempts": 2, "http.response.status_code": 200,
  });
  assert.deepEqual(finished[1].attributes, {
    "sluice.app_id": "app-7", "sluice.tenant_id": "tenant-1",
    "sluice.attempts": 1, "sluice.stopped": "quota", "http.response.status_code": 429,
  });
  assert.deepEqual(finished[2].attributes, { "sluice.attempts": 1, "sluice.stopped": "attempts" });
  assert.equal(finished[2].status.code, 2);

  await reader.forceFlush();
  const requests = points(metrics, "sluice.client.requests");
  const by = Object.fromEntries(requests.map((p) => [p.attributes.outcome, p.value]));
  assert.deepEqual(by, { ok: 1, refused: 1, error: 1 });
  assert.equal(points(metrics, "sluice.client.retries")[0].value, 1);
  const wait = points(metrics, "sluice.client.wait")[0].value;
  assert.equal(wait.count, 1);
  assert.equal(wait.sum, 1, "seconds slept");
  await reader.shutdown();
});

test("without telemetry nothing is recorded and nothing breaks", async () => {
  const client = new SluiceClient({ fetch: async () => new Response("", { status: 200 }), budget: new RetryBudget() });
  const { outcome } = await client.send("http://api.test/");
  assert.equal(outcome.attempts, 1);
  const broken = { tracer: { startSpan() { throw new Error("x"); } }, meter: { createCounter: () => ({ add() { throw new Error("y"); } }), createHistogram: () => ({ record() {} }) } };
  const c2 = new SluiceClient({ fetch: async () => new Response("", { status: 200 }), budget: new RetryBudget(), telemetry: broken });
  assert.equal((await c2.send("http://api.test/")).response.status, 200, "a broken exporter never breaks a call");
});
