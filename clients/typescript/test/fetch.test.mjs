import { test } from "node:test";
import assert from "node:assert/strict";
import {
  wrapFetch, sluiceFetch, SluiceClient, SluiceError, ManualClock, RetryBudget, Pacer, CircuitBreaker, CircuitOpenError,
  Leases, LeaseRefusedError, LeaseError,
} from "../dist/index.js";

/** A fake fetch answering from a script; records what it was sent and when. */
function fakeFetch(script, clock) {
  const calls = [];
  const f = async (input, init) => {
    const req = new Request(input, init);
    calls.push({ at: clock?.now() ?? 0, url: req.url, method: req.method, headers: req.headers, body: init?.body ?? (req.body ? await req.text() : null) });
    const next = script[Math.min(calls.length - 1, script.length - 1)];
    if (next instanceof Error) throw next;
    return typeof next === "function" ? next() : next.clone();
  };
  f.calls = calls;
  return f;
}

const problem = (status, doc, headers = {}) =>
  new Response(JSON.stringify(doc), { status, headers: { "content-type": "application/problem+json", ...headers } });

function options(clock, extra = {}) {
  return { clock, sleep: clock.sleep, jitter: (b) => b * 0.5, budget: new RetryBudget(), wallClock: () => 1796000000 + clock.now() / 1000, ...extra };
}

test("wrapFetch retries a 429 after its Retry-After and hands back the 200", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([
    problem(429, { kind: "throttle", retry_after: 1 }, { "retry-after": "1" }),
    new Response("ok", { status: 200, headers: { ratelimit: '"a";r=5;t=1', "ratelimit-policy": '"a";q=10;w=1' } }),
  ], clock);
  const fetch = wrapFetch(raw, options(clock));
  const res = await fetch("http://api.test/x", { method: "POST", body: "payload", headers: { "X-App-Id": "a1" } });
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "ok");
  assert.equal(raw.calls.length, 2);
  assert.deepEqual(raw.calls.map((c) => c.at), [0, 1050]);
  assert.deepEqual(raw.calls.map((c) => c.body), ["payload", "payload"], "the body is sent again");
  assert.equal(raw.calls[1].headers.get("x-app-id"), "a1");
});

test("SluiceClient.send returns the response and the outcome; a quota is handed back at once", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([problem(429, { kind: "quota", retry_after: 86400, detail: "spent" }, { "retry-after": "86400" })], clock);
  const client = new SluiceClient({ ...options(clock), fetch: raw });
  const { response, outcome } = await client.send("http://api.test/json", { method: "POST", body: "{}" });
  assert.equal(response.status, 429);
  assert.deepEqual(await response.json(), { kind: "quota", retry_after: 86400, detail: "spent" }, "the body is still readable");
  assert.deepEqual([outcome.attempts, outcome.stopped, outcome.waits, clock.now()], [1, "quota", [], 0]);
  assert.equal(outcome.problem.kind, "quota");
  assert.deepEqual(outcome.retryAfters, [86400000]);
});

test("a Request input is cloned for every attempt", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([new Response("", { status: 503 }), new Response("", { status: 201 })], clock);
  const client = new SluiceClient({ ...options(clock), fetch: raw });
  const req = new Request("http://api.test/r", { method: "PUT", body: "data" });
  const { response, outcome } = await client.send(req);
  assert.equal(response.status, 201);
  assert.equal(outcome.attempts, 2);
  assert.deepEqual(raw.calls.map((c) => c.body), ["data", "data"]);
});

test("a stream body is sent once, never retried", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([new Response("", { status: 503 })], clock);
  const client = new SluiceClient({ ...options(clock), fetch: raw });
  const body = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode("x")); c.close(); } });
  const { response, outcome } = await client.send("http://api.test/s", { method: "POST", body, duplex: "half" });
  assert.equal(response.status, 503);
  assert.deepEqual([outcome.attempts, outcome.stopped], [1, "attempts"]);
});

test("transport errors: retried, then a SluiceError with the cause, attempts and waits", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([new TypeError("fetch failed")], clock);
  const fetch = wrapFetch(raw, options(clock, { policy: { maxAttempts: 3 } }));
  await assert.rejects(fetch("http://api.test/"), (e) => {
    assert.ok(e instanceof SluiceError);
    assert.ok(e.cause instanceof TypeError);
    assert.deepEqual([e.attempts, e.stopped, e.waits], [3, "attempts", [50, 100]]);
    return true;
  });
});

test("the breaker refuses at once with CircuitOpenError; nothing is sent", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([new TypeError("down")], clock);
  const breaker = new CircuitBreaker({ threshold: 2, openMs: 5000 });
  const fetch = wrapFetch(raw, options(clock, { breaker, policy: { maxAttempts: 2 } }));
  await assert.rejects(fetch("http://api.test/"), SluiceError);
  assert.equal(breaker.state, "open");
  await assert.rejects(fetch("http://api.test/"), CircuitOpenError);
  assert.equal(raw.calls.length, 2);
});

test("pacing from the answers' headers spaces the requests", async () => {
  const clock = new ManualClock();
  const ok = () => new Response("", { status: 200, headers: { "RateLimit-Policy": '"per-app";q=10;w=1', RateLimit: '"per-app";r=9;t=1' } });
  const raw = fakeFetch([ok], clock);
  const pacer = new Pacer();
  const fetch = wrapFetch(raw, options(clock, { pacer }));
  for (let i = 0; i < 4; i++) await fetch("http://api.test/");
  const at = raw.calls.map((c) => c.at);
  // Nothing is known before the first answer: the first two go at once, then one every 1000/9 ms.
  assert.deepEqual(at.slice(0, 2), [0, 0]);
  for (let i = 2; i < at.length; i++) assert.ok(Math.abs(at[i] - at[i - 1] - 1000 / 9) < 1e-6, String(at));
});

test("a pacing wait above maxWait throws before sending", async () => {
  const clock = new ManualClock();
  const raw = fakeFetch([new Response("", { status: 200 })], clock);
  const pacer = new Pacer();
  pacer.observe({ limit: 1, remaining: 0, reset_s: 3600, window_s: 3600 }, 0);
  const fetch = wrapFetch(raw, options(clock, { pacer, policy: { maxWaitMs: 1000 } }));
  await assert.rejects(fetch("http://api.test/"), (e) => e instanceof SluiceError && e.stopped === "wait_too_long" && e.attempts === 0);
  assert.equal(raw.calls.length, 0);
});

test("an abort signal stops a wait", async () => {
  const raw = fakeFetch([new Response("", { status: 503, headers: { "retry-after": "30" } })]);
  const fetch = wrapFetch(raw, { budget: new RetryBudget() });
  const ac = new AbortController();
  const p = fetch("http://api.test/", { signal: ac.signal });
  setTimeout(() => ac.abort(new Error("user gave up")), 20);
  await assert.rejects(p, /user gave up/);
});

test("sluiceFetch uses the global fetch by default", async () => {
  const original = globalThis.fetch;
  const raw = fakeFetch([new Response("hi", { status: 200 })]);
  globalThis.fetch = raw;
  try {
    const res = await sluiceFetch()("http://api.test/");
    assert.equal(await res.text(), "hi");
  } finally {
    globalThis.fetch = original;
  }
});

test("leases: acquire, renew, release, refusal, and withLease releasing on a throw", async () => {
  const answers = [];
  const raw = async (url, init) => {
    const body = JSON.parse(init.body);
    answers.push({ path: new URL(url).pathname, body });
    const path = new URL(url).pathname;
    if (path === "/leases/acquire" && body.descriptors[0].entries[0].value === "full") {
      return problem(429, { kind: "throttle", retry_after: 299, detail: "uploads holds all 1" }, { "retry-after": "299" });
    }
    if (path === "/leases/acquire" && body.descriptors[0].entries[0].value === "bad") return new Response("no pool", { status: 400 });
    if (path === "/leases/acquire" || path === "/leases/renew") return Response.json({ lease_id: "abc123", ttl_seconds: 60 });
    if (path === "/leases/release") return new Response(null, { status: 204 });
    return new Response("", { status: 404 });
  };
  const leases = new Leases("http://sluice.test/", { fetch: raw });
  const lease = await leases.acquire("sdk", [{ uploads: "acme" }], { waitMs: 100 });
  assert.deepEqual([lease.id, lease.ttlSeconds], ["abc123", 60]);
  assert.deepEqual(answers[0], { path: "/leases/acquire", body: { domain: "sdk", descriptors: [{ entries: [{ key: "uploads", value: "acme" }] }], wait_ms: 100 } });
  await lease.renew();
  assert.deepEqual(answers[1].body.lease_id, "abc123");
  await lease.release();
  await lease.release();
  assert.equal(answers.filter((a) => a.path === "/leases/release").length, 1, "released once");

  await assert.rejects(leases.acquire("sdk", [{ uploads: "full" }]), (e) => e instanceof LeaseRefusedError && e.retryAfterMs === 299000 && e.problem.kind === "throttle");
  await assert.rejects(leases.acquire("sdk", [{ entries: [{ key: "uploads", value: "bad" }] }]), (e) => e instanceof LeaseError && e.status === 400);

  answers.length = 0;
  const boom = new Error("body failed");
  await assert.rejects(leases.withLease("sdk", [{ uploads: "acme" }], async () => { throw boom; }), (e) => e === boom);
  assert.deepEqual(answers.map((a) => a.path), ["/leases/acquire", "/leases/release"]);
  assert.equal(await leases.withLease("sdk", [{ uploads: "acme" }], async (l) => l.id), "abc123");

  // A release that fails while the body's error propagates never hides it.
  const failingRelease = async (url, init) => {
    if (new URL(url).pathname === "/leases/release") throw new TypeError("network down");
    return raw(url, init);
  };
  const l2 = new Leases("http://sluice.test", { fetch: failingRelease });
  await assert.rejects(l2.withLease("sdk", [{ uploads: "acme" }], async () => { throw boom; }), (e) => e === boom);
  // After a successful body, the failed release is reported.
  await assert.rejects(l2.withLease("sdk", [{ uploads: "acme" }], async () => 1), TypeError);

  if (typeof Symbol.asyncDispose === "symbol") {
    answers.length = 0;
    const held = await leases.acquire("sdk", [{ uploads: "acme" }]);
    await held[Symbol.asyncDispose]();
    assert.deepEqual(answers.map((a) => a.path), ["/leases/acquire", "/leases/release"]);
  }
});
