// Reports: a Reporter's reports reach Sluice's adaptive rule (the "sdk" domain's upstream=payments
// pool), counted in the flush's answer and on /metrics; the impossible one never leaves the app.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Reporter } from "sluice-client";

import { env, summary } from "./helpers.mjs";

async function accepted(sluice) {
  const scrape = await (await fetch(`${sluice}/metrics`)).text();
  const sample = 'sluice_adaptive_reports_total{result="accepted"}';
  const line = scrape.split("\n").find((l) => l.startsWith(sample));
  return line ? Number(line.slice(sample.length).trim()) : 0;
}

test("reports: counted by the adaptive rule", { timeout: 60_000 }, async () => {
  const sluice = env("SLUICE_URL");
  const before = await accepted(sluice);
  const reporter = new Reporter(sluice, "sdk", { maxBatch: 4 });
  for (let i = 0; i < 10; i++) {
    assert.equal(reporter.record({ upstream: "payments" }, 20 + i, i === 9 ? 503 : 200), "pending");
  }
  assert.equal(reporter.record({ upstream: "search" }, 5, 200), "pending");
  assert.equal(reporter.record({ upstream: "payments" }, -1, 200), "invalid");
  const flushed = await reporter.stop();
  const after = await accepted(sluice);
  const totals = reporter.counts();
  summary({ test: "reports", ...flushed, invalid: totals.invalid, metric_delta: after - before });
  // Eleven reports in three batches, all taken: ten match the adaptive rule, one no rule.
  assert.deepEqual(flushed, { sent: 11, failed: 0, accepted: 10, unmatched: 1 });
  assert.equal(totals.invalid, 1);
  // The Python e2e may report to the same Sluice meanwhile: at least ours were counted.
  assert.ok(after - before >= 10, `${before} -> ${after}`);
});
