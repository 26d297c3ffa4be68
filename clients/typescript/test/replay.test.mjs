// Replays every case of the shared fixture (../fixtures/behaviour.json) that the Rust and Python
// clients replay too. Times are ms on an injected clock; waits match within 1 ms.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import {
  parseRetryAfter, parseProblem, parseRateLimit, RetryBudget, Backoff, ManualClock, Pacer, WorkQueue,
  QueueFullError, CircuitBreaker, Reporter,
} from "../dist/index.js";

const path = fileURLToPath(new URL("../../fixtures/behaviour.json", import.meta.url));
const fixture = JSON.parse(readFileSync(path, "utf8"));

const SECTIONS = ["retry_after", "problem", "rate_headers", "budget", "retry", "pacer", "queue", "breaker", "reports"];
const close = (actual, expected, what) =>
  assert.ok(Math.abs(actual - expected) <= 1, `${what}: ${actual} is not within 1 ms of ${expected}`);

test("the fixture has every section, none empty", () => {
  for (const s of SECTIONS) assert.ok(Array.isArray(fixture[s]) && fixture[s].length > 0, s);
  for (const key of Object.keys(fixture)) {
    if (Array.isArray(fixture[key])) assert.ok(SECTIONS.includes(key), `unknown section ${key}: not replayed`);
  }
});

const pacerSettings = (s = {}) => ({
  safety: s.safety, minFactor: s.min_factor, decrease: s.decrease, increase: s.increase,
});
const budgetSettings = (s) => ({ ratio: s.ratio, perSecond: s.per_second, max: s.max });

for (const c of fixture.retry_after ?? []) {
  test(`retry_after: ${c.name}`, () => {
    const got = parseRetryAfter(c.value, c.now_epoch_s);
    if (c.expect_ms === null) assert.equal(got, null);
    else close(got, c.expect_ms, c.name);
  });
}

for (const c of fixture.problem ?? []) {
  test(`problem: ${c.name}`, () => {
    assert.deepEqual(parseProblem(c.content_type, c.body), c.expect);
  });
}

for (const c of fixture.rate_headers ?? []) {
  test(`rate_headers: ${c.name}`, () => {
    assert.deepEqual(parseRateLimit(c.headers), c.expect);
    // The same through a real Headers object.
    const h = new Headers();
    for (const [k, v] of c.headers) h.append(k, v);
    assert.deepEqual(parseRateLimit(h), c.expect);
  });
}

for (const c of fixture.budget ?? []) {
  test(`budget: ${c.name}`, () => {
    const b = new RetryBudget(budgetSettings(c.settings));
    c.steps.forEach((s, i) => {
      if (s.op === "deposit") b.deposit(s.at_ms);
      else if (s.op === "withdraw") assert.equal(b.withdraw(s.at_ms), s.expect, `step ${i}`);
      else assert.fail(`unknown op ${s.op}`);
    });
  });
}

for (const c of fixture.retry ?? []) {
  test(`retry: ${c.name}`, async () => {
    const clock = new ManualClock(0);
    const p = c.policy;
    const backoff = new Backoff({
      policy: { maxAttempts: p.max_attempts, baseMs: p.base_ms, capMs: p.cap_ms, maxWaitMs: p.max_wait_ms },
      budget: c.budget === null ? new RetryBudget() : new RetryBudget(budgetSettings(c.budget)),
      clock,
      sleep: clock.sleep,
      wallClock: () => c.now_epoch_s + clock.now() / 1000,
      jitter: (bound) => c.jitter * bound,
    });
    let sent = 0;
    const outcome = await backoff.run(async () => {
      const r = c.replies[sent++];
      assert.ok(r, "more attempts than scripted replies");
      if (r.transport_error) throw new TypeError("scripted transport error");
      return { status: r.status, headers: r.headers, body: r.body };
    });
    const e = c.expect;
    assert.equal(outcome.attempts, e.attempts, "attempts");
    assert.equal(sent, e.attempts, "sent");
    assert.equal(outcome.waits.length, e.waits_ms.length, `waits ${outcome.waits}`);
    outcome.waits.forEach((w, i) => close(w, e.waits_ms[i], `wait ${i}`));
    assert.equal(outcome.status, e.status, "status");
    assert.equal(outcome.stopped, e.stopped, "stopped");
    assert.equal(outcome.error !== null, e.error, "error");
    close(clock.now(), e.waits_ms.reduce((a, b) => a + b, 0), "slept in all");
  });
}

for (const c of fixture.pacer ?? []) {
  test(`pacer: ${c.name}`, () => {
    const pacer = new Pacer(pacerSettings(c.settings));
    c.steps.forEach((s, i) => {
      if ("observe" in s) pacer.observe(s.observe, s.at_ms);
      else if ("refused" in s) pacer.refused(s.refused, s.at_ms);
      else if ("reserve" in s) close(pacer.reserve(s.at_ms), s.reserve, `step ${i} reserve`);
      else if ("peek" in s) close(pacer.peek(s.at_ms), s.peek, `step ${i} peek`);
      else assert.fail(`unknown step ${JSON.stringify(s)}`);
    });
  });
}

for (const c of fixture.queue ?? []) {
  test(`queue: ${c.name}`, () => {
    const pacer = new Pacer(pacerSettings(c.pacer_settings));
    if (c.observe) pacer.observe(c.observe, 0);
    const q = new WorkQueue(pacer, c.max_depth);
    c.steps.forEach((s, i) => {
      if ("push" in s) {
        let got = "queued";
        try {
          q.push(s.push, s.deadline_at);
        } catch (e) {
          assert.ok(e instanceof QueueFullError);
          got = "full";
        }
        assert.equal(got, s.expect, `step ${i}`);
      } else if ("take" in s) {
        const t = q.take(s.at_ms);
        assert.equal(t.item, s.take.item, `step ${i} item`);
        close(t.waitMs, s.take.wait_ms, `step ${i} wait`);
        assert.deepEqual(t.expired, s.take.expired, `step ${i} expired`);
      } else assert.fail(`unknown step ${JSON.stringify(s)}`);
    });
  });
}

for (const c of fixture.breaker ?? []) {
  test(`breaker: ${c.name}`, () => {
    const changes = [];
    const b = new CircuitBreaker({
      threshold: c.settings.threshold,
      openMs: c.settings.open_ms,
      onChange: (from, to) => changes.push([from, to]),
    });
    c.steps.forEach((s, i) => {
      if (s.op === "allow") assert.equal(b.allow(s.at_ms), s.expect, `step ${i}`);
      else if (s.op === "success") b.success(s.at_ms);
      else if (s.op === "failure") b.failure(s.at_ms);
      else assert.fail(`unknown op ${s.op}`);
      assert.equal(b.state, s.state, `step ${i} state`);
    });
    assert.deepEqual(changes, c.changes);
  });
}

// Records and the batches a flush cuts, without HTTP. JSON cannot spell NaN or Infinity: the
// fixture writes them as strings.
const latency = (v) => (typeof v === "string" ? Number(v) : v);
const pairs = (d) => ({ entries: d.map(([key, value]) => ({ key, value })) });

for (const c of fixture.reports) {
  test(`reports: ${c.name}`, () => {
    const s = c.settings;
    const reporter = new Reporter("http://sluice.invalid", c.domain, {
      maxPending: s.max_pending, maxBatch: s.max_batch, maxBatchBytes: s.max_batch_bytes,
      fetch: () => { throw new Error("no HTTP in the replay"); },
    });
    c.steps.forEach((step, i) => {
      const r = step.record ?? step.record_many;
      if (r) {
        for (let n = 0; n < (r.times ?? 1); n++) {
          assert.equal(reporter.record(pairs(r.descriptor), latency(r.latency_ms), r.status), step.expect, `step ${i}`);
        }
      } else if (step.counts) {
        const got = reporter.counts();
        assert.deepEqual({ invalid: got.invalid, overflow: got.overflow, pending: got.pending }, step.counts, `step ${i}`);
      } else {
        const batches = reporter.takeBatches();
        assert.deepEqual(batches.map((b) => b.length), step.take, `step ${i}`);
        if (step.first) assert.deepEqual(JSON.parse(reporter.body(batches[0])), step.first, `step ${i}`);
      }
    });
  });
}
