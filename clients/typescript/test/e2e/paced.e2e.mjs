// Paced: 90 requests due at 30/s through a client with pacing on, against NGINX limiting each app
// to SLUICE_E2E_LIMIT a second. The pacer learns the limit from the RateLimit headers and spaces
// the requests, so (almost) nothing is refused and the upstream never sees more than the limit.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SluiceClient, Pacer, RetryBudget } from "sluice-client";

import { env, sleep, uniqueId, limit, hitsPerSecond, summary } from "./helpers.mjs";

test("paced: 90 requests due at 30/s stay under the limit", { timeout: 120_000 }, async () => {
  const nginx = env("SLUICE_NGINX_URL");
  const upstream = env("SLUICE_UPSTREAM_URL");
  const max = limit();
  const appId = uniqueId("ts-paced");
  const seen = []; // the status of every attempt
  const counting = async (input, init) => {
    const res = await fetch(input, init);
    seen.push(res.status);
    return res;
  };
  const client = new SluiceClient({ fetch: counting, pacer: new Pacer(), budget: new RetryBudget(), appId });
  const n = 90;
  const rate = 30;
  let attempts = 0;
  const statuses = [];
  const start = performance.now();
  for (let i = 0; i < n; i++) {
    await sleep(start + (i * 1000) / rate - performance.now());
    const { response, outcome } = await client.send(`${nginx}/paced/${i}`, { headers: { "X-App-Id": appId } });
    await response.arrayBuffer();
    attempts += outcome.attempts;
    statuses.push(response.status);
  }
  const elapsed = performance.now() - start;
  const refused = seen.filter((s) => s === 429).length;
  assert.equal(seen.length, attempts);
  const hits = await hitsPerSecond(upstream, appId, max);
  summary({ test: "paced", requests: n, attempts, "429s": refused, rate: Number(((attempts * 1000) / elapsed).toFixed(2)), elapsed_ms: Math.round(elapsed), max_per_second: hits.max, limit: max });
  assert.ok(refused <= 1, `${refused} of ${attempts} attempts were refused`);
  assert.ok(statuses.every((s) => s === 200), `statuses: ${statuses.filter((s) => s !== 200)}`);
  assert.equal(hits.total, n, "every request reached the upstream once");
  assert.ok(hits.max <= max, `the upstream saw ${hits.max} requests in one second (limit ${max}): ${JSON.stringify([...hits.perSecond])}`);
});
