// Quota: Sluice's /json allows one request a day per org value; the second is a 429 whose problem
// document says kind "quota": handed back at once, never retried, nothing slept.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SluiceClient, RetryBudget } from "sluice-client";

import { env, uniqueId, summary } from "./helpers.mjs";

test("quota: a spent quota is handed back at once", { timeout: 60_000 }, async () => {
  const sluice = env("SLUICE_URL");
  const org = uniqueId("ts-org");
  const slept = [];
  const client = new SluiceClient({
    pacing: false,
    budget: new RetryBudget(),
    sleep: async (ms) => {
      slept.push(ms);
      await new Promise((r) => setTimeout(r, ms));
    },
    tenantId: org,
  });
  const body = JSON.stringify({ domain: "sdk", descriptors: [{ entries: [{ key: "org", value: org }] }] });
  const init = { method: "POST", headers: { "content-type": "application/json" }, body };
  const first = await client.send(`${sluice}/json`, init);
  assert.equal(first.response.status, 200, await first.response.clone().text());
  await first.response.arrayBuffer();
  const start = performance.now();
  const { response, outcome } = await client.send(`${sluice}/json`, init);
  const elapsed = performance.now() - start;
  const doc = await response.json();
  summary({ test: "quota", attempts: outcome.attempts, "429s": response.status === 429 ? 1 : 0, stopped: outcome.stopped, elapsed_ms: Math.round(elapsed), retry_after_s: doc.retry_after });
  assert.equal(response.status, 429);
  assert.equal(outcome.attempts, 1);
  assert.equal(outcome.stopped, "quota");
  assert.equal(outcome.problem?.kind, "quota");
  assert.equal(doc.kind, "quota", "the body is still readable");
  assert.deepEqual(outcome.waits, []);
  assert.deepEqual(outcome.pacingWaits, []);
  assert.deepEqual(slept, [], "nothing slept");
  assert.ok(elapsed < 2000, `took ${elapsed} ms`);
});
