// What the end-to-end tests share: the services' addresses from the environment (missing ones
// fail the test, never skip it), unique ids, the upstream's per-second count, the summary line.
import assert from "node:assert/strict";


export function env(name) {
  const value = process.env[name];
  assert.ok(value && value.trim() !== "", `${name} is not set: the end-to-end tests need it`);
  return value.trim().replace(/\/+$/, "");
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

export const uniqueId = (prefix) => `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;

export function limit() {
  const n = Number(process.env.SLUICE_E2E_LIMIT ?? "10");
  assert.ok(Number.isInteger(n) && n > 0, `SLUICE_E2E_LIMIT must be a positive integer, got ${process.env.SLUICE_E2E_LIMIT}`);
  return n;
}

// The upstream stamps a request a few milliseconds after Sluice decided it, so a request stamped
// within SKEW_MS of a second's start may have been counted by Sluice in the second before: it is
// counted there when that second has room under the limit (seconds taken in order).
const SKEW_MS = Number(process.env.SLUICE_E2E_SKEW_MS ?? "5");

export async function hitsPerSecond(upstream, appId, max) {
  const res = await fetch(`${upstream}/__hits?app_id=${encodeURIComponent(appId)}`);
  assert.equal(res.status, 200, "upstream /__hits");
  const { hits } = await res.json();
  const perSecond = new Map();
  for (const ms of [...hits].sort((a, b) => a - b)) {
    const s = Math.floor(ms / 1000);
    const before = perSecond.get(s - 1) ?? 0;
    const second = ms - s * 1000 < SKEW_MS && before < max ? s - 1 : s;
    perSecond.set(second, (perSecond.get(second) ?? 0) + 1);
  }
  return { total: hits.length, perSecond, max: Math.max(0, ...perSecond.values()) };
}

export function summary(fields) {
  process.stdout.write(`SDK-E2E typescript ${JSON.stringify(fields)}\n`);
}
