// A retry budget (behaviour.md §2): retries may be at most a share of the calls made plus a small
// allowance per second, so a crowd of clients told "later" at once does not multiply the load.
// Integer milli-tokens, so ten calls at 0.1 earn exactly one retry.

import type { Clock } from "./clock.js";

export interface BudgetSettings {
  /** Retries earned per call (0.2: one retry per five calls). */
  ratio: number;
  /** Retries earned per second whatever the traffic. */
  perSecond: number;
  /** Most retries kept; the budget starts full. */
  max: number;
}

export const DEFAULT_BUDGET: Readonly<BudgetSettings> = Object.freeze({ ratio: 0.2, perSecond: 1, max: 10 });

const ONE = 1000;

function milli(x: number | undefined, fallback: number): number {
  const v = typeof x === "number" && Number.isFinite(x) ? x : fallback;
  return Math.round(Math.max(0, v) * ONE);
}

export class RetryBudget {
  readonly #perCall: number;
  readonly #perSecond: number;
  readonly #max: number;
  #milli: number;
  #at = 0;

  constructor(settings: Partial<BudgetSettings> = {}) {
    this.#perCall = milli(settings.ratio, DEFAULT_BUDGET.ratio);
    this.#perSecond = milli(settings.perSecond, DEFAULT_BUDGET.perSecond);
    this.#max = milli(settings.max, DEFAULT_BUDGET.max);
    this.#milli = this.#max;
  }

  /** A call was made at `nowMs`. */
  deposit(nowMs: number): void {
    this.#refill(nowMs);
    this.#milli = Math.min(this.#milli + this.#perCall, this.#max);
  }

  /** Takes one retry at `nowMs`; false when the budget is spent. */
  withdraw(nowMs: number): boolean {
    this.#refill(nowMs);
    if (this.#milli < ONE) return false;
    this.#milli -= ONE;
    return true;
  }

  /** Retries available now (whole and fractional), for inspection. */
  available(nowMs: number): number {
    this.#refill(nowMs);
    return this.#milli / ONE;
  }

  #refill(nowMs: number): void {
    if (!Number.isFinite(nowMs) || nowMs <= this.#at) return;
    if (this.#perSecond === 0) {
      this.#at = nowMs;
      return;
    }
    // perSecond milli-tokens per 1000 ms; only whole milli-tokens count.
    const earned = Math.floor(((nowMs - this.#at) * this.#perSecond) / 1000 + 1e-9);
    if (earned <= 0) return;
    this.#milli = Math.min(this.#milli + earned, this.#max);
    // The time not yet worth a whole milli-token stays owed.
    this.#at += (earned * 1000) / this.#perSecond;
  }
}

let shared: RetryBudget | null = null;

/** The budget every client of this module shares unless given one of its own. */
export function sharedBudget(): RetryBudget {
  shared ??= new RetryBudget();
  return shared;
}

/** Replaces the shared budget (tests, or a process that wants other settings). */
export function setSharedBudget(budget: RetryBudget): void {
  shared = budget;
}
