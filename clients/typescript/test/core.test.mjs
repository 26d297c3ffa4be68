import { test } from "node:test";
import assert from "node:assert/strict";
import {
  RetryBudget, sharedBudget, Pacer, WorkQueue, QueueFullError, CircuitBreaker, CircuitOpenError,
  Backoff, ManualClock, verdict, backoffBound, retryWait, retryPolicy,
} from "../dist/index.js";

const near = (a, b, msg) => assert.ok(Math.abs(a - b) < 1e-6, `${msg ?? ""} ${a} != ${b}`);

test("budget: ratio, per-second refill, cap, owed time", () => {
  const b = new RetryBudget({ ratio: 0.25, perSecond: 0, max: 2 });
  assert.ok(b.withdraw(0) && b.withdraw(0), "starts full");
  assert.ok(!b.withdraw(0));
  for (let i = 0; i < 3; i++) b.deposit(0);
  assert.ok(!b.withdraw(0), "0.75 of a retry");
  b.deposit(0);
  assert.ok(b.withdraw(0));

  const t = new RetryBudget({ ratio: 0, perSecond: 2, max: 3 });
  assert.ok(t.withdraw(0) && t.withdraw(0) && t.withdraw(0));
  assert.ok(!t.withdraw(400), "0.8 earned");
  assert.ok(t.withdraw(500));
  assert.ok([0, 1, 2].every(() => t.withdraw(3_600_000)), "a quiet hour saves max");
  assert.ok(!t.withdraw(3_600_000));

  // Whole milli-tokens only; the remainder of time stays owed.
  const o = new RetryBudget({ ratio: 0, perSecond: 0.3, max: 1 });
  assert.ok(o.withdraw(0));
  assert.ok(!o.withdraw(3332), "0.9996 earned");
  assert.ok(o.withdraw(3334), "1.0002 earned");
  assert.equal(sharedBudget(), sharedBudget());
});

test("verdict and waits", () => {
  assert.deepEqual(verdict(200, null, null), { action: "done" });
  assert.deepEqual(verdict(304, 5000, null), { action: "done" });
  assert.deepEqual(verdict(429, 3000, null), { action: "retry", serverMs: 3000 });
  assert.deepEqual(verdict(503, null, null), { action: "retry", serverMs: null });
  const doc = (kind, ra) => ({ status: 429, title: null, detail: null, rule: null, retry_after: ra, kind });
  assert.deepEqual(verdict(429, 3000, doc("throttle", 5)), { action: "retry", serverMs: 5000 });
  assert.deepEqual(verdict(429, 7000, doc("throttle", 5)), { action: "retry", serverMs: 7000 });
  assert.deepEqual(verdict(429, 5000, doc("quota", 5)), { action: "stop", reason: "quota" });
  assert.deepEqual(verdict(200, null, doc("quota", 5)), { action: "done" });
  assert.deepEqual(verdict(402, null, null), { action: "stop", reason: "quota" });
  assert.deepEqual(verdict(404, 1000, null), { action: "stop", reason: "not_retryable" });
  assert.deepEqual(verdict(500, null, null), { action: "stop", reason: "not_retryable" });
  const p = retryPolicy({ baseMs: 100, capMs: 500 });
  assert.deepEqual([1, 2, 3, 4, 40, 5000].map((n) => backoffBound(p, n)), [100, 200, 400, 500, 500, 500]);
  assert.equal(retryWait(p, 2, null, (x) => x * 9), 200, "a jitter above its bound is cut");
  assert.equal(retryWait(p, 2, null, () => -5), 0);
  assert.equal(retryWait(p, 2, null, () => NaN), 0);
  assert.equal(retryWait(p, 1, 2000, (x) => x * 0.3), 2030);
  assert.deepEqual(retryPolicy({ maxAttempts: -1, baseMs: NaN }), retryPolicy());
});

function harness(replies, opts = {}) {
  const clock = new ManualClock();
  const slept = [];
  const sleep = async (ms) => { slept.push(ms); clock.advance(ms); };
  const sent = [];
  const b = new Backoff({ clock, sleep, jitter: (x) => x * 0.5, wallClock: () => 1796000000 + clock.now() / 1000,
    budget: opts.budget ?? new RetryBudget(), ...opts });
  const attempt = async (n) => {
    sent.push(clock.now());
    const r = replies[Math.min(n - 1, replies.length - 1)];
    if (r instanceof Error) throw r;
    return r;
  };
  return { clock, slept, sent, b, attempt };
}

const r429 = (ra) => ({ status: 429, headers: ra == null ? [] : [["Retry-After", String(ra)]], body: "" });

test("loop: retries after Retry-After plus jitter, then succeeds", async () => {
  const h = harness([r429(2), r429(null), { status: 200 }]);
  const o = await h.b.run(h.attempt);
  assert.equal(o.status, 200);
  assert.equal(o.attempts, 3);
  assert.deepEqual(o.waits, [2050, 100]);
  assert.deepEqual(o.retryAfters, [2000, null, null]);
  assert.equal(o.stopped, null);
  assert.deepEqual(h.sent, [0, 2050, 2150]);
});

test("loop: stops on attempts, quota, not retryable, wait too long, budget", async () => {
  let h = harness([r429(0)]);
  let o = await h.b.run(h.attempt);
  assert.deepEqual([o.attempts, o.stopped, o.status, o.waits], [4, "attempts", 429, [50, 100, 200]]);

  const quota = { status: 429, headers: { "content-type": "application/problem+json", "retry-after": "86400" }, body: '{"kind":"quota","retry_after":86400}' };
  h = harness([quota]);
  o = await h.b.run(h.attempt);
  assert.deepEqual([o.attempts, o.stopped, o.waits, h.slept], [1, "quota", [], []]);
  assert.equal(o.problem.kind, "quota");

  h = harness([{ status: 404 }]);
  o = await h.b.run(h.attempt);
  assert.deepEqual([o.attempts, o.stopped], [1, "not_retryable"]);

  // The server asks for longer than maxWait: handed back at once, nothing slept.
  for (const ra of ["61", "1000000000", "99999999999999999999"]) {
    h = harness([r429(ra)]);
    o = await h.b.run(h.attempt);
    assert.deepEqual([o.attempts, o.stopped, h.slept], [1, "wait_too_long", []], ra);
  }
  // Garbage Retry-After falls back to the client's own back-off.
  for (const ra of ["-5", "soon", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT"]) {
    h = harness([r429(ra), { status: 200 }]);
    o = await h.b.run(h.attempt);
    const expect = ra.startsWith("Wed") ? [50] : [50];
    assert.deepEqual([o.attempts, o.waits], [2, expect], ra);
  }
  // A date in the past is a minimum of 0 (plus jitter).
  h = harness([r429("Wed, 21 Oct 2015 07:28:00 GMT"), { status: 200 }]);
  o = await h.b.run(h.attempt);
  assert.deepEqual(o.waits, [50]);
  // A date ahead of the wall clock.
  h = harness([r429(new Date((1796000000 + 3) * 1000).toUTCString()), { status: 200 }]);
  o = await h.b.run(h.attempt);
  assert.deepEqual(o.waits, [3050]);

  const budget = new RetryBudget({ ratio: 0, perSecond: 0, max: 1 });
  h = harness([r429(0)], { budget });
  o = await h.b.run(h.attempt);
  assert.deepEqual([o.attempts, o.stopped, o.waits], [2, "budget", [50]]);
  h = harness([r429(0)], { budget });
  o = await h.b.run(h.attempt);
  assert.deepEqual([o.attempts, o.stopped, o.waits], [1, "budget", []], "the budget is shared");
});

test("loop: transport errors end in outcome.error with attempts and waits", async () => {
  const h = harness([new TypeError("fetch failed")], { policy: { maxAttempts: 3 } });
  const o = await h.b.run(h.attempt);
  assert.equal(o.reply, null);
  assert.equal(o.status, null);
  assert.ok(o.error instanceof TypeError);
  assert.deepEqual([o.attempts, o.stopped, o.waits], [3, "attempts", [50, 100]]);
});

test("loop: never sleeps longer than maxWait, whatever the server says", async () => {
  const bad = ["0", "59", "60", "61", "-1", "abc", "", "1e9", "Thu, 01 Jan 2099 00:00:00 GMT", "Fri, 01 Jan 2027 00:00:00 GMT"];
  for (const ra of bad) {
    for (const body of ['{"retry_after":59}', '{"retry_after":"x"}', "{", '{"retry_after":100000}']) {
      const reply = { status: 503, headers: { "retry-after": ra, "content-type": "application/problem+json", ratelimit: '"a";r=0;t=999999999' }, body };
      const h = harness([reply], { policy: { maxAttempts: 10, maxWaitMs: 60000 }, pacer: new Pacer() });
      const o = await h.b.run(h.attempt);
      for (const s of h.slept) assert.ok(s <= 60000, `${ra} ${body}: slept ${s}`);
      assert.ok(o.attempts >= 1);
    }
  }
});

test("loop: pacing reserves before every attempt; a pacing wait above maxWait sends nothing", async () => {
  const pacer = new Pacer();
  pacer.observe({ limit: 9, remaining: null, reset_s: null, window_s: 1 }, 0);
  // interval = 1000 / (9 × 0.9) = 123.46 ms
  const h = harness([{ status: 200 }], { pacer });
  for (let i = 0; i < 3; i++) await h.b.run(h.attempt);
  near(h.sent[1] - h.sent[0], 1000 / 8.1);
  near(h.sent[2] - h.sent[1], 1000 / 8.1);

  const p2 = new Pacer();
  p2.observe({ limit: 1, remaining: 0, reset_s: 3600, window_s: 3600 }, 0);
  const h2 = harness([{ status: 200 }], { pacer: p2 });
  const o = await h2.b.run(h2.attempt);
  assert.deepEqual([o.attempts, o.stopped, o.reply, h2.sent, h2.slept], [0, "wait_too_long", null, [], []]);
});

test("loop: a 429 feeds the pacer's hold and factor", async () => {
  const pacer = new Pacer();
  const reply = { status: 429, headers: { "retry-after": "2", ratelimit: '"a";r=0;t=2', "ratelimit-policy": '"a";q=10;w=1' } };
  const h = harness([reply, { status: 200 }], { pacer, pacing: true });
  const o = await h.b.run(h.attempt);
  assert.equal(o.status, 200);
  assert.deepEqual(o.waits, [2050]);
  assert.equal(pacer.state().holdUntil, 2000);
  // Halved by the refusal, then two whole windows relaxed it by 0.2 at the retry's reservation.
  near(pacer.state().factor, 0.7);
  assert.deepEqual(h.sent, [0, 2050]);
});

test("pacer: interval, remaining, hold, decrease and recovery", () => {
  const p = new Pacer();
  assert.equal(p.reserve(0), 0, "knows nothing: no wait");
  assert.equal(p.interval(0), 0);
  p.observe({ limit: 10, remaining: null, reset_s: null, window_s: 1 }, 0);
  near(p.interval(0), 1000 / 9);
  assert.equal(p.reserve(0), 0);
  near(p.reserve(0), 1000 / 9);
  near(p.peek(0), 2000 / 9);
  near(p.reserve(0), 2000 / 9);
  p.refused(1000, 300);
  assert.equal(p.state().factor, 0.5);
  near(p.peek(300), 1000, "held until 1300");
  near(p.reserve(300), 1000);
  near(p.reserve(300), 1000 + 2000 / 9, "interval doubled");
  p.refused(null, 300);
  p.refused(null, 300);
  p.refused(null, 300);
  assert.equal(p.state().factor, 0.1, "min factor");
  near(p.interval(2350), 1000 / (9 * 0.3), "two windows later: +0.2");
  assert.equal(p.state().factorSince, 2300);
  near(p.interval(100000), 1000 / 9);

  // remaining/reset: the window's last slot, then wait for the reset.
  const q = new Pacer();
  q.observe({ limit: null, remaining: 1, reset_s: 5, window_s: null }, 0);
  assert.equal(q.state().windowMs, 5000, "a reset is never longer than its window");
  assert.equal(q.reserve(0), 0);
  assert.equal(q.reserve(0), 5000, "spent: wait for the reset");
  assert.equal(q.state().remaining, null);
  q.observe({ limit: null, remaining: 0, reset_s: 2, window_s: null }, 1000);
  assert.equal(q.state().windowMs, 5000);
  assert.equal(q.reserve(4000), 1000, "next_at from before still holds");
});

test("queue: FIFO, bounded, deadlines expire before release", async () => {
  const pacer = new Pacer();
  pacer.observe({ limit: 10, remaining: null, reset_s: null, window_s: 1 }, 0);
  const q = new WorkQueue(pacer, 3);
  q.push("a");
  q.push("b", 50);
  q.push("c", 500);
  assert.throws(() => q.push("d"), QueueFullError);
  assert.equal(q.size, 3);
  let t = q.take(0);
  assert.deepEqual([t.item, t.waitMs, t.expired], ["a", 0, []]);
  t = q.take(0);
  assert.deepEqual([t.item, t.expired], ["c", ["b"]], "b's release (111 ms) is after its deadline");
  near(t.waitMs, 1000 / 9);
  t = q.take(0);
  assert.deepEqual([t.item, t.found, t.expired], [null, false, []]);
});

test("queue: pop waits for a push and for the pacer, on an injected clock", async () => {
  const clock = new ManualClock();
  const pacer = new Pacer();
  pacer.observe({ limit: 10, remaining: null, reset_s: null, window_s: 1 }, 0);
  const expired = [];
  const q = new WorkQueue(pacer, 10, { clock, sleep: clock.sleep, onExpired: (x) => expired.push(x) });
  const first = q.pop();
  q.push(1);
  assert.deepEqual(await first, { item: 1, waitMs: 0, expired: [] });
  q.push(2);
  q.push(3, 10);
  q.push(4);
  const second = await q.pop();
  assert.equal(second.item, 2);
  near(clock.now(), 1000 / 9);
  const third = await q.pop();
  assert.deepEqual([third.item, third.expired, expired], [4, [3], [3]]);
  near(clock.now(), 2000 / 9);
  const ac = new AbortController();
  const pending = q.pop(ac.signal);
  ac.abort(new Error("stop"));
  await assert.rejects(pending, /stop/);
});

test("breaker: opens at threshold, half-open trial, hook sees every change", () => {
  const changes = [];
  const b = new CircuitBreaker({ threshold: 3, openMs: 1000, onChange: (f, t) => changes.push([f, t]) });
  assert.ok(b.allow(0));
  b.failure(0); b.failure(1);
  b.success(2);
  b.failure(3); b.failure(4);
  assert.equal(b.state, "closed");
  b.failure(5);
  assert.equal(b.state, "open");
  assert.ok(!b.allow(1004));
  assert.ok(b.allow(1005));
  assert.equal(b.state, "half_open");
  assert.ok(!b.allow(1006), "the trial is out");
  b.failure(1100);
  assert.equal(b.state, "open");
  assert.ok(!b.allow(2099));
  assert.ok(b.allow(2100));
  b.success(2101);
  assert.equal(b.state, "closed");
  assert.deepEqual(changes, [["closed", "open"], ["open", "half_open"], ["half_open", "open"], ["open", "half_open"], ["half_open", "closed"]]);
  const quiet = new CircuitBreaker({ onChange: () => { throw new Error("hook"); } });
  for (let i = 0; i < 5; i++) quiet.failure(0);
  assert.equal(quiet.state, "open", "a throwing hook does not break it");
});

test("loop + breaker: refused calls fail at once, nothing sent", async () => {
  const breaker = new CircuitBreaker({ threshold: 2, openMs: 5000 });
  const h = harness([new Error("down")], { breaker, policy: { maxAttempts: 5 } });
  const o = await h.b.run(h.attempt);
  assert.ok(o.error instanceof CircuitOpenError);
  assert.equal(o.attempts, 2);
  assert.equal(h.sent.length, 2);
  const o2 = await h.b.run(h.attempt);
  assert.ok(o2.error instanceof CircuitOpenError);
  assert.equal(o2.attempts, 0);
  assert.equal(h.sent.length, 2);
});

test("loop: an abort during a wait rejects with the abort reason", async () => {
  const ac = new AbortController();
  const b = new Backoff({ budget: new RetryBudget(), jitter: () => 0, sleep: async (ms, signal) => { ac.abort(new Error("cancelled")); throw signal.reason; } });
  await assert.rejects(b.run(async () => r429(1), { signal: ac.signal }), /cancelled/);
});

test("queue: an abort while waiting for the slot puts the item back in front", async () => {
  const pacer = new Pacer();
  pacer.observe({ limit: 1, remaining: null, reset_s: null, window_s: 10 }, 0);
  const ac = new AbortController();
  const q = new WorkQueue(pacer, 5, {
    clock: { now: () => 0 },
    sleep: async (ms, signal) => { ac.abort(new Error("shutdown")); throw signal.reason; },
  });
  pacer.reserve(0); // the next slot is 11.1 s away
  q.push("a");
  q.push("b");
  await assert.rejects(q.pop(ac.signal), /shutdown/);
  assert.equal(q.size, 2);
  assert.equal(q.take(100000).item, "a");
});

test("pacer: a zero or absurd view never divides by zero or throws", () => {
  const p = new Pacer();
  p.observe({ limit: 0, remaining: 0, reset_s: 0, window_s: 0 }, 0);
  assert.equal(p.reserve(0), 0);
  p.observe({ limit: 5, remaining: null, reset_s: null, window_s: 0 }, 0);
  p.refused(null, 0);
  assert.ok(Number.isFinite(p.reserve(10)));
  p.observe(null, 0);
  const huge = new Pacer();
  huge.observe({ limit: 1, remaining: 0, reset_s: 1e9, window_s: 1e9 }, 0);
  assert.equal(huge.peek(0), 1e12, "a long wait, not an overflow");
});
