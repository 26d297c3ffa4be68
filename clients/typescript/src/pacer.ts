// Pacing (behaviour.md §3): spread requests so they fit the limit the server announces, back off
// the rate after a refusal and let it recover window by window.

import type { RateLimitView } from "./headers.js";

export interface PacerSettings {
  /** Share of the announced limit to aim for. */
  safety: number;
  /** The rate factor never drops below this. */
  minFactor: number;
  /** A refusal multiplies the factor by this. */
  decrease: number;
  /** Each whole window without a refusal adds this to the factor, up to 1. */
  increase: number;
}

export const DEFAULT_PACER: Readonly<PacerSettings> = Object.freeze({
  safety: 0.9,
  minFactor: 0.1,
  decrease: 0.5,
  increase: 0.1,
});

/** What a pacer knows, for inspection. */
export interface PacerState {
  limit: number | null;
  windowMs: number | null;
  remaining: number | null;
  resetAt: number | null;
  holdUntil: number;
  nextAt: number;
  factor: number;
  factorSince: number;
}

export class Pacer {
  readonly settings: PacerSettings;
  #limit: number | null = null;
  #windowMs: number | null = null;
  #remaining: number | null = null;
  #resetAt: number | null = null;
  #holdUntil = 0;
  #nextAt = 0;
  #factor = 1;
  #factorSince = 0;

  constructor(settings: Partial<PacerSettings> = {}) {
    const pick = (v: number | undefined, d: number): number => (typeof v === "number" && Number.isFinite(v) ? v : d);
    this.settings = {
      safety: pick(settings.safety, DEFAULT_PACER.safety),
      minFactor: pick(settings.minFactor, DEFAULT_PACER.minFactor),
      decrease: pick(settings.decrease, DEFAULT_PACER.decrease),
      increase: pick(settings.increase, DEFAULT_PACER.increase),
    };
  }

  /** Takes in what an answer's rate-limit headers said, at `now` (ms). */
  observe(view: RateLimitView | null, now: number): void {
    if (!view) return;
    if (view.window_s != null) this.#windowMs = view.window_s * 1000;
    else if (view.reset_s != null && view.reset_s > 0) {
      this.#windowMs = Math.max(this.#windowMs ?? 0, view.reset_s * 1000);
    }
    if (view.limit != null) this.#limit = view.limit;
    if (view.remaining != null && view.reset_s != null) {
      this.#remaining = view.remaining;
      this.#resetAt = now + view.reset_s * 1000;
    }
  }

  /** The server refused (429/503, not a quota); `retryAfterMs` is its minimum wait when known. */
  refused(retryAfterMs: number | null, now: number): void {
    if (retryAfterMs != null && Number.isFinite(retryAfterMs)) {
      this.#holdUntil = Math.max(this.#holdUntil, now + retryAfterMs);
    }
    this.#factor = Math.max(this.settings.minFactor, this.#factor * this.settings.decrease);
    this.#factorSince = now;
  }

  /** The spacing between requests at `now` (0 when the limit or window is unknown). */
  interval(now: number): number {
    return this.#interval(now, true);
  }

  #interval(now: number, commit: boolean): number {
    if (this.#limit === null || !(this.#limit > 0) || this.#windowMs === null || !(this.#windowMs > 0)) return 0;
    let factor = this.#factor;
    if (factor < 1) {
      const n = Math.floor((now - this.#factorSince) / this.#windowMs);
      if (n > 0) {
        factor = Math.min(1, factor + this.settings.increase * n);
        if (commit) {
          this.#factor = factor;
          this.#factorSince += n * this.#windowMs;
        }
      }
    }
    return this.#windowMs / (this.#limit * this.settings.safety * factor);
  }

  /** Takes the next slot: the wait (ms) before a request may go. */
  reserve(now: number): number {
    return this.#reserve(now, true);
  }

  /** The wait `reserve(now)` would return, changing nothing. */
  peek(now: number): number {
    return this.#reserve(now, false);
  }

  #reserve(now: number, commit: boolean): number {
    let t = Math.max(now, this.#holdUntil);
    let remaining = this.#remaining;
    let resetAt = this.#resetAt;
    if (remaining !== null && resetAt !== null) {
      if (resetAt <= t) {
        remaining = resetAt = null;
      } else if (remaining <= 0) {
        t = resetAt;
        remaining = resetAt = null;
      }
    }
    t = Math.max(t, this.#nextAt);
    if (commit) {
      this.#nextAt = t + this.#interval(now, true);
      this.#remaining = remaining === null ? null : remaining - 1;
      this.#resetAt = resetAt;
    }
    return t - now;
  }

  state(): PacerState {
    return {
      limit: this.#limit,
      windowMs: this.#windowMs,
      remaining: this.#remaining,
      resetAt: this.#resetAt,
      holdUntil: this.#holdUntil,
      nextAt: this.#nextAt,
      factor: this.#factor,
      factorSince: this.#factorSince,
    };
  }
}
