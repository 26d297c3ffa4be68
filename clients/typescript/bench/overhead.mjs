// Overhead per request of the Sluice wrapper over the fetch it wraps: both call the same fake
// fetch (an immediate 200 with rate-limit headers), so the difference is the wrapper's own work.
// Run after a build: `npm run bench` (or `node bench/overhead.mjs [iterations]`).
import { wrapFetch, Pacer, RetryBudget } from "../dist/index.js";

const iterations = Math.max(1000, Math.min(Number(process.argv[2] ?? 20000) || 20000, 1_000_000));
const rounds = 5;

const headers = { "RateLimit-Policy": '"per-app";q=1000000;w=1', RateLimit: '"per-app";r=999999;t=1' };
const raw = async () => new Response(null, { status: 200, headers });
const plain = wrapFetch(raw, { budget: new RetryBudget() });
const paced = wrapFetch(raw, { budget: new RetryBudget(), pacer: new Pacer() });

async function time(f) {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) await f("http://bench.invalid/");
  return Number(process.hrtime.bigint() - start) / 1000 / iterations; // µs per request
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const results = { raw: [], wrapped: [], paced: [] };
await time(raw); // warm-up
await time(plain);
for (let r = 0; r < rounds; r++) {
  results.raw.push(await time(raw));
  results.wrapped.push(await time(plain));
  results.paced.push(await time(paced));
}
const m = Object.fromEntries(Object.entries(results).map(([k, v]) => [k, median(v)]));
console.log(`iterations ${iterations} × ${rounds} rounds, medians in µs/request`);
console.log(`raw fake fetch        ${m.raw.toFixed(2)}`);
console.log(`wrapped, no pacing    ${m.wrapped.toFixed(2)}  (overhead ${(m.wrapped - m.raw).toFixed(2)})`);
console.log(`wrapped, pacing on    ${m.paced.toFixed(2)}  (overhead ${(m.paced - m.raw).toFixed(2)})`);
