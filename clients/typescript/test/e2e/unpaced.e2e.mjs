// Unpaced: 45 requests due at 30/s with pacing off. NGINX refuses what is over the limit with 429
// and Retry-After; the client waits at least that long, retries, and every request ends 200.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SluiceClient, RetryBudget } from "sluice-client";

import { env, sleep, uniqueId, limit, hitsPerSecond, summary } from "./helpers.mjs";

test("unpaced: refusals are retried after their Retry-After and all succeed", { timeout: 120_000 }, async () => {
  const nginx = env("SLUICE_NGINX_URL");
  const upstream = env("SLUICE_UPSTREAM_URL");
  const max = limit();
  const appId = uniqueId("ts-unpaced");
  const seen = [];
  const counting = async (input, init) => {
    const res = await fetch(input, init);
    seen.push(res.status);
    return res;
  };
  const client = new SluiceClient({
    fetch: counting,
    pacing: false,
    budget: new RetryBudget(),
    policy: { maxAttempts: 10, maxWaitMs: 5000 },
    appId,
  });
  const n = 45;
  const rate = 30;
  let attempts = 0;
  const statuses = [];
  const violations = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    await sleep(start + (i * 1000) / rate - performance.now());
    const { response, outcome } = await client.send(`${nginx}/unpaced/${i}`, { headers: { "X-App-Id": appId } });
    await response.arrayBuffer();
    attempts += outcome.attempts;
    statuses.push(response.status);
    // waits[k] is the wait after answer k; every retried answer here is a 429 with Retry-After.
    outcome.waits.forEach((w, k) => {
      const minimum = outcome.retryAfters[k];
      if (minimum === null || minimum === undefined || w < minimum) violations.push({ request: i, wait: w, retryAfter: minimum });
    });
  }
  const elapsed = performance.now() - start;
  const refused = seen.filter((s) => s === 429).length;
  const hits = await hitsPerSecond(upstream, appId, max);
  summary({ test: "unpaced", requests: n, attempts, "429s": refused, rate: Number(((attempts * 1000) / elapsed).toFixed(2)), elapsed_ms: Math.round(elapsed), max_per_second: hits.max, limit: max });
  assert.equal(seen.length, attempts);
  assert.ok(refused >= 1, "30/s against a limit of 10/s must see a 429");
  assert.deepEqual(violations, [], "a retry came before its Retry-After");
  assert.ok(statuses.every((s) => s === 200), `not every request ended 200: ${statuses}`);
  assert.equal(hits.total, n, "every request reached the upstream once");
  assert.ok(hits.max <= max, `the upstream saw ${hits.max} requests in one second (limit ${max}): ${JSON.stringify([...hits.perSecond])}`);
});
