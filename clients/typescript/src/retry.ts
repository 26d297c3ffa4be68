// The retry loop, independent of any HTTP library (behaviour.md §2–§5): an attempt is any async
// function that yields an HTTP answer or throws a transport error.

import { sharedBudget, type RetryBudget } from "./budget.js";
import { CircuitOpenError, type CircuitBreaker } from "./breaker.js";
import { realSleep, systemClock, systemWallClock, type Clock, type Sleep, type WallClock } from "./clock.js";
import {
  headerGetter,
  parseProblem,
  parseRateLimit,
  parseRetryAfter,
  type HeadersLike,
  type Problem,
  type RateLimitView,
} from "./headers.js";
import { Pacer } from "./pacer.js";
import { randomJitter, retryPolicy, retryWait, verdict, type Jitter, type RetryPolicy, type StopReason } from "./policy.js";
import { Telemetry, type CallIdentity, type TelemetryOptions } from "./telemetry.js";

/** One HTTP answer as the loop reads it. `body` is only needed for a problem document. */
export interface Reply {
  status: number;
  headers?: HeadersLike | null;
  body?: string | null;
}

/** How a call ended. Times in milliseconds. */
export interface Outcome<R extends Reply = Reply> {
  /** The last HTTP answer (null when none came, or nothing was sent). */
  reply: R | null;
  status: number | null;
  /** Attempts sent, the first included. */
  attempts: number;
  /** Every back-off wait made before a retry, in order. */
  waits: number[];
  /** Every pacing wait made before an attempt (zeros left out), in order. */
  pacingWaits: number[];
  /** Set when the call ended without success, and why (null on success or a circuit-open). */
  stopped: StopReason | null;
  /** The last answer's problem document, when it had one. */
  problem: Problem | null;
  /** Per answer, the server's minimum wait (max of Retry-After and the document's), or null. */
  retryAfters: Array<number | null>;
  /** The last answer's rate-limit view. */
  view: RateLimitView | null;
  /** The transport error (or `CircuitOpenError`) the call ended with; null after an answer. */
  error: unknown;
}

export interface BackoffOptions extends CallIdentity {
  policy?: Partial<RetryPolicy>;
  /** Shared by default (`sharedBudget()`). */
  budget?: RetryBudget;
  /** Observes every answer and, with `pacing` on, spaces the attempts. */
  pacer?: Pacer | null;
  /** Reserve a pacer slot before every attempt (default: on when a pacer is given; `true` alone makes one). */
  pacing?: boolean;
  breaker?: CircuitBreaker | null;
  clock?: Clock;
  /** Epoch seconds, for HTTP-dates in Retry-After. */
  wallClock?: WallClock;
  sleep?: Sleep;
  jitter?: Jitter;
  telemetry?: TelemetryOptions | Telemetry;
}

/** Per-call settings of `run`. */
export interface RunOptions extends CallIdentity {
  signal?: AbortSignal | null;
  /** The first attempt's pacer slot was already taken (by a `WorkQueue`). */
  alreadyPaced?: boolean;
  /** Largest number of attempts for this call (a body that cannot be sent twice: 1). */
  maxAttempts?: number;
}

export class Backoff {
  readonly policy: RetryPolicy;
  readonly budget: RetryBudget;
  readonly pacer: Pacer | null;
  readonly pacing: boolean;
  readonly breaker: CircuitBreaker | null;
  readonly clock: Clock;
  readonly wallClock: WallClock;
  readonly sleep: Sleep;
  readonly jitter: Jitter;
  readonly telemetry: Telemetry;
  readonly identity: CallIdentity;

  constructor(options: BackoffOptions = {}) {
    this.policy = retryPolicy(options.policy);
    this.budget = options.budget ?? sharedBudget();
    this.pacer = options.pacer ?? (options.pacing === true ? new Pacer() : null);
    this.pacing = this.pacer !== null && options.pacing !== false;
    this.breaker = options.breaker ?? null;
    this.clock = options.clock ?? systemClock;
    this.wallClock = options.wallClock ?? systemWallClock;
    this.sleep = options.sleep ?? realSleep;
    this.jitter = options.jitter ?? randomJitter;
    this.telemetry = options.telemetry instanceof Telemetry ? options.telemetry : new Telemetry(options.telemetry);
    this.identity = { appId: options.appId, tenantId: options.tenantId, leaseId: options.leaseId };
  }

  /**
   * Runs `attempt` until an answer is done, is refused for good, or the policy, budget, pacer or
   * breaker says stop. Transport errors end in `outcome.error`; only an abort throws.
   */
  async run<R extends Reply>(attempt: (n: number) => Promise<R>, options: RunOptions = {}): Promise<Outcome<R>> {
    const signal = options.signal ?? undefined;
    const identity: CallIdentity = {
      appId: options.appId ?? this.identity.appId,
      tenantId: options.tenantId ?? this.identity.tenantId,
      leaseId: options.leaseId ?? this.identity.leaseId,
    };
    const maxAttempts = Math.max(1, Math.min(this.policy.maxAttempts, options.maxAttempts ?? Infinity));
    const span = this.telemetry.start(identity);
    const out: Outcome<R> = {
      reply: null,
      status: null,
      attempts: 0,
      waits: [],
      pacingWaits: [],
      stopped: null,
      problem: null,
      retryAfters: [],
      view: null,
      error: null,
    };
    const finish = (): Outcome<R> => {
      out.status = out.reply?.status ?? null;
      this.telemetry.finish(span, out);
      return out;
    };
    try {
      this.budget.deposit(this.clock.now());
      for (;;) {
        // Pacing and the breaker, before anything is sent.
        const paced = this.pacing && !(out.attempts === 0 && options.alreadyPaced);
        if (paced && this.pacer!.peek(this.clock.now()) > this.policy.maxWaitMs) {
          out.stopped = "wait_too_long";
          return finish();
        }
        if (this.breaker && !this.breaker.allow(this.clock.now())) {
          out.error = new CircuitOpenError();
          out.stopped = null;
          return finish();
        }
        if (paced) {
          const w = this.pacer!.reserve(this.clock.now());
          if (w > 0) {
            await this.sleep(w, signal);
            out.pacingWaits.push(w);
            this.telemetry.slept(w);
          }
        }

        out.attempts += 1;
        let serverMs: number | null = null;
        let failed = false;
        try {
          const reply = await attempt(out.attempts);
          this.breaker?.success(this.clock.now());
          out.reply = reply;
          out.error = null;
          const v = this.#read(reply, out);
          if (v.action === "done") {
            out.stopped = null;
            return finish();
          }
          if (v.action === "stop") {
            out.stopped = v.reason;
            return finish();
          }
          serverMs = v.serverMs;
        } catch (e) {
          if (signal?.aborted) throw e;
          this.breaker?.failure(this.clock.now());
          out.error = e;
          out.reply = null;
          out.problem = null;
          failed = true;
        }

        // An answer to retry, or a transport error.
        if (out.attempts >= maxAttempts) {
          out.stopped = "attempts";
          return finish();
        }
        const wait = retryWait(this.policy, out.attempts, failed ? null : serverMs, this.jitter);
        if (wait > this.policy.maxWaitMs) {
          out.stopped = "wait_too_long";
          return finish();
        }
        if (!this.budget.withdraw(this.clock.now())) {
          out.stopped = "budget";
          return finish();
        }
        await this.sleep(wait, signal);
        out.waits.push(wait);
        this.telemetry.slept(wait);
        this.telemetry.retried();
      }
    } catch (e) {
      // Only an abort gets here; the span still ends.
      out.error = e;
      finish();
      throw e;
    }
  }

  /** Reads an answer: its verdict, and what it tells the pacer. */
  #read(reply: Reply, out: Outcome<Reply>): ReturnType<typeof verdict> {
    const now = this.clock.now();
    const get = headerGetter(reply.headers ?? null);
    let wall: number;
    try {
      wall = this.wallClock();
    } catch {
      wall = Date.now() / 1000;
    }
    const retryAfter = parseRetryAfter(get("retry-after"), wall);
    const problem = parseProblem(get("content-type"), reply.body ?? null);
    const view = parseRateLimit(reply.headers ?? null);
    const v = verdict(reply.status, retryAfter, problem);
    out.problem = problem;
    out.view = view;
    out.retryAfters.push(v.action === "retry" ? v.serverMs : retryAfter);
    if (this.pacer) {
      this.pacer.observe(view, now);
      const throttled = reply.status === 429 || reply.status === 503;
      if (throttled && !(v.action === "stop" && v.reason === "quota")) {
        this.pacer.refused(v.action === "retry" ? v.serverMs : retryAfter, now);
      }
    }
    return v;
  }
}
