// A bounded work queue released at the pacer's rate (behaviour.md §4): first in, first out;
// an item whose deadline would pass before its turn is dropped and reported, not sent late.

import { realSleep, systemClock, type Clock, type Sleep } from "./clock.js";
import type { Pacer } from "./pacer.js";

export class QueueFullError extends Error {
  constructor(readonly maxDepth: number) {
    super(`work queue full: ${maxDepth} items already waiting`);
    this.name = "QueueFullError";
  }
}

/** What `take` found: the next item (if any) with its pacing wait, and the items that expired. */
export interface Taken<T> {
  item: T | null;
  /** True when an item was taken (`item` may itself be null or undefined). */
  found: boolean;
  waitMs: number;
  expired: T[];
  /** The taken item's deadline, if it had one. */
  deadlineAt: number | null;
}

export interface WorkQueueOptions<T> {
  clock?: Clock;
  sleep?: Sleep;
  /** Called with every item dropped because its deadline passed. */
  onExpired?: (item: T) => void;
}

interface Entry<T> {
  item: T;
  deadlineAt: number | null;
}

export class WorkQueue<T> {
  readonly pacer: Pacer;
  readonly maxDepth: number;
  #items: Entry<T>[] = [];
  #waiters: Array<() => void> = [];
  #clock: Clock;
  #sleep: Sleep;
  #onExpired: ((item: T) => void) | undefined;

  constructor(pacer: Pacer, maxDepth: number, options: WorkQueueOptions<T> = {}) {
    this.pacer = pacer;
    this.maxDepth = Number.isFinite(maxDepth) && maxDepth >= 0 ? Math.floor(maxDepth) : Infinity;
    this.#clock = options.clock ?? systemClock;
    this.#sleep = options.sleep ?? realSleep;
    this.#onExpired = options.onExpired;
  }

  /** Items waiting. */
  get size(): number {
    return this.#items.length;
  }

  /** Queues `item`; throws `QueueFullError` (nothing queued) when `maxDepth` items wait. */
  push(item: T, deadlineAt?: number | null): void {
    if (this.#items.length >= this.maxDepth) throw new QueueFullError(this.maxDepth);
    this.#items.push({ item, deadlineAt: typeof deadlineAt === "number" ? deadlineAt : null });
    const waiter = this.#waiters.shift();
    waiter?.();
  }

  /** The deterministic core of `pop`: the next item released at `now`, without waiting. */
  take(now: number): Taken<T> {
    const expired: T[] = [];
    while (this.#items.length > 0) {
      const release = now + this.pacer.peek(now);
      const head = this.#items[0]!;
      if (head.deadlineAt !== null && head.deadlineAt < release) {
        this.#items.shift();
        expired.push(head.item);
        continue;
      }
      const waitMs = this.pacer.reserve(now);
      this.#items.shift();
      return { item: head.item, found: true, waitMs, expired, deadlineAt: head.deadlineAt };
    }
    return { item: null, found: false, waitMs: 0, expired, deadlineAt: null };
  }

  /**
   * The next item, once its pacing wait has passed; waits for a push when nothing is queued.
   * Expired items go to `onExpired` and are listed in the result.
   */
  async pop(signal?: AbortSignal): Promise<{ item: T; waitMs: number; expired: T[] }> {
    const expired: T[] = [];
    for (;;) {
      if (signal?.aborted) throw signal.reason;
      const taken = this.take(this.#clock.now());
      for (const e of taken.expired) {
        expired.push(e);
        try {
          this.#onExpired?.(e);
        } catch {
          // The hook's problem.
        }
      }
      if (taken.found) {
        if (taken.waitMs > 0) {
          try {
            await this.#sleep(taken.waitMs, signal);
          } catch (e) {
            // Aborted while waiting for its slot: the item goes back to the front, not lost.
            this.#items.unshift({ item: taken.item as T, deadlineAt: taken.deadlineAt });
            throw e;
          }
        }
        return { item: taken.item as T, waitMs: taken.waitMs, expired };
      }
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => {
          const i = this.#waiters.indexOf(wake);
          if (i >= 0) this.#waiters.splice(i, 1);
          reject(signal?.reason);
        };
        const wake = (): void => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        this.#waiters.push(wake);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    }
  }
}
