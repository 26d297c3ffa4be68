// Time as the client sees it, injectable so tests never sleep.

/** A monotonic clock in milliseconds. */
export interface Clock {
  now(): number;
}

/** Sleeps `ms` milliseconds; rejects with the signal's reason when it is aborted. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** `performance.now()` where it exists, else `Date.now()`. */
export const systemClock: Clock = {
  now: () => (typeof performance !== "undefined" && typeof performance.now === "function" ? performance.now() : Date.now()),
};

/** The wall clock in epoch seconds, for HTTP-dates. */
export type WallClock = () => number;

export const systemWallClock: WallClock = () => Date.now() / 1000;

/** A `setTimeout` sleep that honours an `AbortSignal`. */
export const realSleep: Sleep = (ms, signal) =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    if (!(ms > 0)) {
      resolve();
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** A clock that only moves when told to, and a sleep that moves it: for tests and simulations. */
export class ManualClock implements Clock {
  #now: number;
  constructor(startMs = 0) {
    this.#now = startMs;
  }
  now(): number {
    return this.#now;
  }
  set(ms: number): void {
    this.#now = ms;
  }
  advance(ms: number): void {
    if (ms > 0) this.#now += ms;
  }
  /** A `Sleep` that advances this clock at once instead of waiting. */
  readonly sleep: Sleep = async (ms, signal) => {
    if (signal?.aborted) throw signal.reason;
    this.advance(ms);
  };
}
