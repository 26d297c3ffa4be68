// `fetch` with Sluice's manners: one line to adopt (`sluiceFetch()` or `wrapFetch(fetch)`), or a
// `SluiceClient` whose `send` also says how the call went.

import { Backoff, type BackoffOptions, type Outcome, type Reply, type RunOptions } from "./retry.js";
import { CircuitOpenError } from "./breaker.js";
import type { StopReason } from "./policy.js";

/** What `fetch` takes as its first argument. */
export type FetchInput = string | URL | Request;

export type FetchLike = (input: FetchInput, init?: RequestInit) => Promise<Response>;

/** Per-call Sluice settings, passed as `init.sluice`. */
export interface SluiceCallOptions {
  appId?: string;
  tenantId?: string;
  leaseId?: string;
  /** The first attempt's pacer slot was already taken (by a `WorkQueue`). */
  alreadyPaced?: boolean;
}

export type SluiceRequestInit = RequestInit & { sluice?: SluiceCallOptions };

/** What `sluiceFetch` and `wrapFetch` return: a fetch that also takes `init.sluice`. */
export type SluiceFetch = (input: FetchInput, init?: SluiceRequestInit) => Promise<Response>;

export interface ClientOptions extends BackoffOptions {
  /** The fetch to wrap (default: the global one, looked up at call time). */
  fetch?: FetchLike;
}

/** A reply carrying the `Response` it was read from. */
export interface FetchReply extends Reply {
  response: Response;
}

/** A call that ended without any HTTP answer to hand back. */
export class SluiceError extends Error {
  readonly outcome: Outcome<FetchReply>;
  readonly stopped: StopReason | null;
  readonly attempts: number;
  readonly waits: number[];
  constructor(message: string, outcome: Outcome<FetchReply>, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "SluiceError";
    this.outcome = outcome;
    this.stopped = outcome.stopped;
    this.attempts = outcome.attempts;
    this.waits = outcome.waits;
  }
}

function isProblem(response: Response): boolean {
  const ct = response.headers.get("content-type");
  return ct !== null && ct.split(";")[0]!.trim().toLowerCase() === "application/problem+json";
}

function isStream(body: unknown): boolean {
  return typeof ReadableStream !== "undefined" && body instanceof ReadableStream;
}

/** Frees a discarded answer's connection. Not awaited: a tee'd body's cancel waits for its twin. */
function discard(response: Response): void {
  try {
    response.body?.cancel().catch(() => undefined);
  } catch {
    // Nothing to free.
  }
}

export class SluiceClient {
  readonly backoff: Backoff;
  readonly #fetch: FetchLike | undefined;

  constructor(options: ClientOptions = {}) {
    this.backoff = new Backoff(options);
    this.#fetch = options.fetch;
  }

  /** Sends a request with retries and pacing; resolves to the last answer and how it went. */
  async send(input: FetchInput, init?: SluiceRequestInit): Promise<{ response: Response; outcome: Outcome<FetchReply> }> {
    const { sluice, ...rest } = init ?? {};
    const fetchFn: FetchLike = this.#fetch ?? ((i, r) => globalThis.fetch(i, r));
    const signal = rest.signal ?? (typeof Request !== "undefined" && input instanceof Request ? input.signal : undefined);
    // A body that can be read only once cannot be retried.
    const once = isStream(rest.body) || (typeof Request !== "undefined" && input instanceof Request && input.body !== null && input.bodyUsed);
    const base = typeof Request !== "undefined" && input instanceof Request ? input : null;
    let previous: Response | null = null;
    const attempt = async (): Promise<FetchReply> => {
      if (previous) {
        discard(previous);
        previous = null;
      }
      const req = base ? base.clone() : input;
      const response = await fetchFn(req, rest);
      let body: string | null = null;
      if (isProblem(response)) {
        try {
          body = await response.clone().text();
        } catch {
          body = null;
        }
      }
      previous = response;
      return { status: response.status, headers: response.headers, body, response };
    };
    const run: RunOptions = {
      signal: signal ?? null,
      appId: sluice?.appId,
      tenantId: sluice?.tenantId,
      leaseId: sluice?.leaseId,
      alreadyPaced: sluice?.alreadyPaced,
      maxAttempts: once ? 1 : undefined,
    };
    const outcome = await this.backoff.run(attempt, run);
    if (outcome.reply) return { response: outcome.reply.response, outcome };
    if (outcome.error instanceof CircuitOpenError) throw outcome.error;
    if (outcome.error != null) {
      throw new SluiceError(
        `no answer after ${outcome.attempts} attempt(s) (${outcome.stopped ?? "stopped"}): ${String((outcome.error as { message?: unknown }).message ?? outcome.error)}`,
        outcome,
        outcome.error,
      );
    }
    throw new SluiceError(`not sent: the pacing wait is longer than maxWaitMs (${outcome.stopped})`, outcome);
  }

  /** A fetch-compatible function over this client. */
  get fetch(): SluiceFetch {
    return async (input, init) => (await this.send(input, init)).response;
  }
}

/** Wraps a fetch function: `const fetch = wrapFetch(globalThis.fetch, {pacer: new Pacer()})`. */
export function wrapFetch(fetch: FetchLike, options: BackoffOptions = {}): SluiceFetch {
  return new SluiceClient({ ...options, fetch }).fetch;
}

/** The global fetch with Sluice's retries: `const fetch = sluiceFetch()`. */
export function sluiceFetch(options: ClientOptions = {}): SluiceFetch {
  return new SluiceClient(options).fetch;
}
