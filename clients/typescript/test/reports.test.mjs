// Reporter.flush over a fake fetch: batches in order, a failed batch dropped and counted (never
// retried), flushes one after another, the unref'd timer. Records and batch cuts are replayed from
// the shared fixture (replay.test.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Reporter } from "../dist/index.js";

// A fake `/reports` answering each post with the next status of `script` (then 200); 0 throws.
function fakeSluice(...script) {
  const bodies = [];
  const fetch = async (url, init) => {
    assert.equal(url, "http://sluice.test/reports");
    assert.equal(init.headers["content-type"], "application/json");
    const body = JSON.parse(init.body);
    bodies.push(body);
    const status = script.length ? script.shift() : 200;
    if (status === 0) throw new TypeError("fetch failed");
    const n = body.reports.length;
    await new Promise((r) => setTimeout(r, 5));
    return new Response(JSON.stringify({ accepted: n - 1, unmatched: 1, dropped: 0 }), { status });
  };
  return { fetch, bodies, latencies: () => bodies.map((b) => b.reports.map((r) => r.latency_ms)) };
}

test("reports: batches in order; a failed one dropped, counted, not retried", async () => {
  const sluice = fakeSluice(200, 503, 0, 200);
  const reporter = new Reporter("http://sluice.test/", "api", { fetch: sluice.fetch, maxBatch: 2 });
  for (let ms = 1; ms <= 7; ms++) assert.equal(reporter.record({ upstream: "pay" }, ms, 200), "pending");
  assert.equal(reporter.record({ upstream: "pay" }, 5, 700), "invalid");
  const flushed = await reporter.flush();
  assert.deepEqual(sluice.latencies(), [[1, 2], [3, 4], [5, 6], [7]]);
  assert.deepEqual(flushed, { sent: 3, failed: 4, accepted: 1, unmatched: 2 });
  assert.deepEqual(sluice.bodies[0], {
    domain: "api",
    reports: [
      { descriptor: [{ key: "upstream", value: "pay" }], latency_ms: 1, status: 200 },
      { descriptor: [{ key: "upstream", value: "pay" }], latency_ms: 2, status: 200 },
    ],
  });
  assert.equal((await reporter.flush()).sent, 0, "nothing pending, nothing posted");
  assert.equal(sluice.bodies.length, 4);
  const t = reporter.counts();
  assert.deepEqual([t.sent, t.failed, t.invalid, t.pending], [3, 4, 1, 0]);
});

test("reports: nonsense is invalid, never thrown", () => {
  const reporter = new Reporter("http://sluice.test", "api", { fetch: fakeSluice().fetch });
  assert.equal(reporter.record({ upstream: "pay" }, "fast", 200), "invalid");
  assert.equal(reporter.record({ upstream: "pay" }, 1, 200.5), "invalid");
  assert.equal(reporter.record(null, 1, 200), "invalid");
  assert.equal(reporter.record({}, 1, 200), "invalid");
  assert.equal(reporter.counts().invalid, 4);
});

test("reports: flushes never overlap", async () => {
  const sluice = fakeSluice();
  const reporter = new Reporter("http://sluice.test", "api", { fetch: sluice.fetch, maxBatch: 1 });
  reporter.record({ upstream: "pay" }, 1, 200);
  reporter.record({ upstream: "pay" }, 2, 200);
  const first = reporter.flush();
  // The first flush has taken its two and is posting; the third waits for the second flush,
  // which waits for the first to end.
  await new Promise((r) => setTimeout(r, 0));
  reporter.record({ upstream: "pay" }, 3, 200);
  const second = reporter.flush();
  assert.deepEqual([(await first).sent, (await second).sent], [2, 1]);
  assert.deepEqual(sluice.latencies(), [[1], [2], [3]]);
});

test("reports: start() flushes on a timer; stop() flushes the rest", async () => {
  const sluice = fakeSluice();
  const reporter = new Reporter("http://sluice.test", "api", { fetch: sluice.fetch, flushIntervalMs: 20 }).start();
  reporter.record({ upstream: "pay" }, 7.5, 504);
  const deadline = Date.now() + 10_000;
  while (reporter.counts().sent === 0) {
    assert.ok(Date.now() < deadline, "never flushed");
    await new Promise((r) => setTimeout(r, 5));
  }
  reporter.record({ upstream: "pay" }, 8.5, 200);
  await reporter.stop();
  assert.deepEqual(sluice.bodies.flatMap((b) => b.reports.map((r) => r.status)), [504, 200]);
});
