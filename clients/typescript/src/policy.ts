// When to retry and how long to wait (behaviour.md §2): capped exponential back-off with full
// jitter on top of the server's minimum, never for a spent quota.

import type { Problem } from "./headers.js";

/** Retry settings; times in milliseconds. */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  maxAttempts: number;
  /** The back-off bound before the first retry; it doubles with each retry... */
  baseMs: number;
  /** ...up to this. */
  capMs: number;
  /** The longest wait worth making; a longer one ends the call instead. */
  maxWaitMs: number;
}

export const DEFAULT_POLICY: Readonly<RetryPolicy> = Object.freeze({
  maxAttempts: 4,
  baseMs: 100,
  capMs: 10_000,
  maxWaitMs: 60_000,
});

/** A policy with defaults for whatever is not given. */
export function retryPolicy(p: Partial<RetryPolicy> = {}): RetryPolicy {
  const pick = (v: number | undefined, d: number, min: number): number =>
    typeof v === "number" && Number.isFinite(v) && v >= min ? v : d;
  return {
    maxAttempts: Math.floor(pick(p.maxAttempts, DEFAULT_POLICY.maxAttempts, 1)),
    baseMs: pick(p.baseMs, DEFAULT_POLICY.baseMs, 0),
    capMs: pick(p.capMs, DEFAULT_POLICY.capMs, 0),
    maxWaitMs: pick(p.maxWaitMs, DEFAULT_POLICY.maxWaitMs, 0),
  };
}

/** Why a call ended without a success. */
export type StopReason = "quota" | "not_retryable" | "attempts" | "budget" | "wait_too_long";

/** What one answer means for the retry loop. */
export type Verdict =
  | { action: "done" }
  | { action: "stop"; reason: StopReason }
  /** Retry after at least `serverMs` (null: the server named no minimum). */
  | { action: "retry"; serverMs: number | null };

const RETRYABLE = new Set([429, 502, 503, 504]);

/** The verdict on an answer with `status`, a readable Retry-After (ms) and a problem document. */
export function verdict(status: number, retryAfterMs: number | null, problem: Problem | null): Verdict {
  if (status < 400) return { action: "done" };
  if (status === 402 || problem?.kind === "quota") return { action: "stop", reason: "quota" };
  if (!RETRYABLE.has(status)) return { action: "stop", reason: "not_retryable" };
  const fromProblem = problem?.retry_after != null ? problem.retry_after * 1000 : null;
  let server: number | null = retryAfterMs;
  if (fromProblem !== null && (server === null || fromProblem > server)) server = fromProblem;
  return { action: "retry", serverMs: server };
}

/** The back-off bound before retry `n` (1 for the first retry): `min(cap, base × 2^(n-1))`. */
export function backoffBound(policy: RetryPolicy, n: number): number {
  const exp = Math.max(0, n - 1);
  // 2^1024 is Infinity; min() with the cap keeps it finite.
  return Math.min(policy.capMs, policy.baseMs * Math.pow(2, Math.min(exp, 1000)));
}

/** A jitter draw in `[0, bound]`. */
export type Jitter = (boundMs: number) => number;

/** Full jitter: uniform in `[0, bound]`. */
export const randomJitter: Jitter = (bound) => Math.random() * bound;

/** The wait before retry `n`: the server's minimum (if any) plus a jitter draw in `[0, bound]`. */
export function retryWait(policy: RetryPolicy, n: number, serverMs: number | null, jitter: Jitter): number {
  const bound = backoffBound(policy, n);
  let j = Number(jitter(bound));
  if (!Number.isFinite(j) || j < 0) j = 0;
  if (j > bound) j = bound;
  return serverMs === null ? j : serverMs + j;
}
