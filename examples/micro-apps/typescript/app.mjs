#!/usr/bin/env node
// A small batch job: N work items go through a bounded WorkQueue released at the rate the API
// announces, and each is sent with SluiceClient (retries after Retry-After, pacing, budget).
//
//   node app.mjs --url http://127.0.0.1:8000 --app-id my-batch --count 50 [--concurrency 2]
//
// Exits 0 once every item has been answered 200, printing one summary line.
import { parseArgs } from "node:util";
import { Pacer, SluiceClient, WorkQueue } from "sluice-client";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    "app-id": { type: "string" },
    count: { type: "string", default: "20" },
    concurrency: { type: "string", default: "2" },
    "max-seconds": { type: "string", default: "300" },
    "max-rounds": { type: "string", default: "5" },
  },
});

function fail(message) {
  console.error(`micro-app: ${message}`);
  console.error("usage: node app.mjs --url URL --app-id ID --count N [--concurrency C] [--max-seconds S]");
  process.exit(2);
}

const url = values.url ?? fail("--url is required");
const appId = values["app-id"] ?? fail("--app-id is required");
const count = Number(values.count);
const concurrency = Number(values.concurrency);
const maxSeconds = Number(values["max-seconds"]);
const maxRounds = Number(values["max-rounds"]);
if (!Number.isInteger(count) || count < 0) fail("--count must be a whole number");
if (!Number.isInteger(concurrency) || concurrency < 1) fail("--concurrency must be at least 1");

// One pacer for the queue and the client: the queue takes each item's slot, the client learns the
// limit from every answer's rate-limit headers and paces its retries.
const pacer = new Pacer();
const queue = new WorkQueue(pacer, Math.max(1, count));
const client = new SluiceClient({ pacer, appId });

const stats = { ok: 0, attempts: 0, refused: 0, requeued: 0, failed: 0 };
const rounds = new Map();
const start = performance.now();
const done = new AbortController();
const deadline = setTimeout(() => done.abort(new Error(`gave up after ${maxSeconds} s`)), maxSeconds * 1000);

for (let i = 0; i < count; i++) queue.push(i);

function finished() {
  return stats.ok + stats.failed >= count;
}

async function worker() {
  while (!finished()) {
    let item;
    try {
      ({ item } = await queue.pop(done.signal));
    } catch {
      return; // all done, or out of time
    }
    try {
      const { response, outcome } = await client.send(`${url.replace(/\/+$/, "")}/batch/${item}`, {
        headers: { "X-App-Id": appId },
        signal: done.signal,
        sluice: { alreadyPaced: true },
      });
      await response.arrayBuffer();
      stats.attempts += outcome.attempts;
      // One entry per HTTP answer; all but a final 200 were refusals.
      stats.refused += outcome.retryAfters.length - (response.status === 200 ? 1 : 0);
      if (response.status === 200) {
        stats.ok += 1;
      } else {
        requeue(item, `HTTP ${response.status} (${outcome.stopped})`);
      }
    } catch (e) {
      if (done.signal.aborted) return;
      requeue(item, e?.message ?? String(e));
    }
    if (finished()) done.abort(new Error("finished"));
  }
}

function requeue(item, why) {
  const n = (rounds.get(item) ?? 1) + 1;
  rounds.set(item, n);
  if (n > maxRounds) {
    stats.failed += 1;
    console.error(`micro-app: item ${item} failed for good: ${why}`);
    return;
  }
  stats.requeued += 1;
  queue.push(item);
}

if (count > 0) await Promise.all(Array.from({ length: concurrency }, worker));
clearTimeout(deadline);
const elapsed = performance.now() - start;
const ok = stats.ok === count;
console.log(
  `micro-app typescript ${JSON.stringify({
    app_id: appId,
    count,
    ok: stats.ok,
    failed: stats.failed,
    attempts: stats.attempts,
    refused: stats.refused,
    requeued: stats.requeued,
    elapsed_ms: Math.round(elapsed),
    rate: elapsed > 0 ? Number(((stats.ok * 1000) / elapsed).toFixed(2)) : 0,
    result: ok ? "ok" : "incomplete",
  })}`,
);
process.exit(ok ? 0 : 1);
