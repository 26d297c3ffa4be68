// A circuit breaker (behaviour.md §5): after repeated transport failures, stop sending for a
// while, then let one trial call through.

export type BreakerState = "closed" | "open" | "half_open";

export interface BreakerSettings {
  /** Consecutive transport failures that open the circuit. */
  threshold: number;
  /** How long it stays open before a trial (ms). */
  openMs: number;
  /** Sees every change of state. */
  onChange?: (from: BreakerState, to: BreakerState) => void;
}

export class CircuitOpenError extends Error {
  constructor(message = "circuit open: the service failed repeatedly, not sending") {
    super(message);
    this.name = "CircuitOpenError";
  }
}

export class CircuitBreaker {
  readonly threshold: number;
  readonly openMs: number;
  #state: BreakerState = "closed";
  #failures = 0;
  #openedAt = 0;
  #trialOut = false;
  #onChange: ((from: BreakerState, to: BreakerState) => void) | undefined;

  constructor(settings: Partial<BreakerSettings> = {}) {
    this.threshold = typeof settings.threshold === "number" && settings.threshold >= 1 ? Math.floor(settings.threshold) : 5;
    this.openMs = typeof settings.openMs === "number" && settings.openMs >= 0 ? settings.openMs : 5_000;
    this.#onChange = settings.onChange;
  }

  get state(): BreakerState {
    return this.#state;
  }

  /** Sets the hook that sees every change. */
  onChange(hook: ((from: BreakerState, to: BreakerState) => void) | undefined): void {
    this.#onChange = hook;
  }

  /** May a call go at `now`? */
  allow(now: number): boolean {
    switch (this.#state) {
      case "closed":
        return true;
      case "open":
        if (now >= this.#openedAt + this.openMs) {
          this.#move("half_open");
          this.#trialOut = true;
          return true;
        }
        return false;
      case "half_open":
        if (this.#trialOut) return false;
        this.#trialOut = true;
        return true;
    }
  }

  /** Any HTTP answer, whatever its status. */
  success(_now: number): void {
    this.#failures = 0;
    this.#trialOut = false;
    if (this.#state !== "closed") this.#move("closed");
  }

  /** No HTTP answer at all. */
  failure(now: number): void {
    if (this.#state === "half_open") {
      this.#trialOut = false;
      this.#openedAt = now;
      this.#move("open");
    } else if (this.#state === "closed") {
      this.#failures += 1;
      if (this.#failures >= this.threshold) {
        this.#failures = 0;
        this.#openedAt = now;
        this.#move("open");
      }
    }
  }

  #move(to: BreakerState): void {
    const from = this.#state;
    this.#state = to;
    try {
      this.#onChange?.(from, to);
    } catch {
      // A hook's failure is its own; the breaker keeps working.
    }
  }
}
