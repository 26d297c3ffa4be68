/// <reference lib="esnext.disposable" preserve="true" />
// Concurrency leases over Sluice's HTTP API (behaviour.md §6, docs/leases.md).

import { headerGetter, parseProblem, parseRetryAfter, type Problem } from "./headers.js";
import type { FetchLike } from "./client.js";

/** One descriptor: `{uploads: "acme"}` (entries in key order) or the wire form. */
export type DescriptorInput = Readonly<Record<string, string>> | { entries: ReadonlyArray<{ key: string; value: string }> };

export interface WireDescriptor {
  entries: Array<{ key: string; value: string }>;
}

function wire(descriptors: ReadonlyArray<DescriptorInput>): WireDescriptor[] {
  return descriptors.map((d) => {
    const entries = (d as { entries?: unknown }).entries;
    if (Array.isArray(entries)) return { entries: entries.map((e: { key: string; value: string }) => ({ key: String(e.key), value: String(e.value) })) };
    return { entries: Object.entries(d as Record<string, string>).map(([key, value]) => ({ key, value: String(value) })) };
  });
}

/** Sluice answered something other than success. */
export class LeaseError extends Error {
  readonly status: number;
  readonly body: string;
  constructor(message: string, status: number, body: string) {
    super(message);
    this.name = "LeaseError";
    this.status = status;
    this.body = body;
  }
}

/** The pool is full (429): `retryAfterMs` says when the soonest lease expires. */
export class LeaseRefusedError extends LeaseError {
  readonly retryAfterMs: number | null;
  readonly problem: Problem | null;
  constructor(status: number, body: string, retryAfterMs: number | null, problem: Problem | null) {
    super(problem?.detail ?? `lease refused (${status})`, status, body);
    this.name = "LeaseRefusedError";
    this.retryAfterMs = retryAfterMs;
    this.problem = problem;
  }
}

export interface LeasesOptions {
  fetch?: FetchLike;
}

export interface AcquireOptions {
  /** How long Sluice may wait for a free slot (ms). */
  waitMs?: number;
  signal?: AbortSignal;
}

/** A held lease. Release it (or let `withLease` / `await using` do so). */
export class Lease {
  readonly id: string;
  ttlSeconds: number;
  readonly domain: string;
  readonly descriptors: WireDescriptor[];
  #leases: Leases;
  #released = false;

  constructor(leases: Leases, domain: string, descriptors: WireDescriptor[], id: string, ttlSeconds: number) {
    this.#leases = leases;
    this.domain = domain;
    this.descriptors = descriptors;
    this.id = id;
    this.ttlSeconds = ttlSeconds;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Extends the lease by one TTL from now. */
  async renew(): Promise<void> {
    const next = await this.#leases.renew(this.domain, this.descriptors, this.id);
    this.ttlSeconds = next.ttlSeconds;
  }

  /** Gives the lease back; a second call does nothing. */
  async release(): Promise<void> {
    if (this.#released) return;
    await this.#leases.release(this.domain, this.descriptors, this.id);
    this.#released = true;
  }
}

// `await using lease = await leases.acquire(...)` where the runtime has Symbol.asyncDispose.
export interface Lease extends AsyncDisposable {}
const asyncDispose = (Symbol as { asyncDispose?: symbol }).asyncDispose;
if (typeof asyncDispose === "symbol") {
  Object.defineProperty(Lease.prototype, asyncDispose, {
    value: function (this: Lease): Promise<void> {
      return this.release();
    },
    writable: true,
    configurable: true,
  });
}

export class Leases {
  readonly baseUrl: string;
  readonly #fetch: FetchLike | undefined;

  constructor(baseUrl: string | URL, options: LeasesOptions = {}) {
    this.baseUrl = String(baseUrl).replace(/\/+$/, "");
    this.#fetch = options.fetch;
  }

  async #post(path: string, body: unknown, signal?: AbortSignal): Promise<{ status: number; text: string; response: Response }> {
    const f: FetchLike = this.#fetch ?? ((i, r) => globalThis.fetch(i, r));
    const response = await f(`${this.baseUrl}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json, application/problem+json" },
      body: JSON.stringify(body),
      signal: signal ?? null,
    });
    const text = await response.text();
    return { status: response.status, text, response };
  }

  #granted(domain: string, descriptors: WireDescriptor[], r: { status: number; text: string; response: Response }): Lease {
    if (r.status === 200) {
      let doc: unknown;
      try {
        doc = JSON.parse(r.text);
      } catch {
        doc = null;
      }
      const o = (doc ?? {}) as { lease_id?: unknown; ttl_seconds?: unknown };
      if (typeof o.lease_id === "string" && o.lease_id !== "") {
        const ttl = typeof o.ttl_seconds === "number" ? o.ttl_seconds : 0;
        return new Lease(this, domain, descriptors, o.lease_id, ttl);
      }
      throw new LeaseError("lease answer without a lease_id", r.status, r.text);
    }
    throw this.#error(r);
  }

  #error(r: { status: number; text: string; response: Response }): LeaseError {
    const get = headerGetter(r.response.headers);
    if (r.status === 429) {
      const problem = parseProblem(get("content-type"), r.text);
      let wait = parseRetryAfter(get("retry-after"));
      if (problem?.retry_after != null && (wait === null || problem.retry_after * 1000 > wait)) wait = problem.retry_after * 1000;
      return new LeaseRefusedError(r.status, r.text, wait, problem);
    }
    return new LeaseError(`lease call failed with ${r.status}: ${r.text.slice(0, 200)}`, r.status, r.text);
  }

  /** Takes a lease in every pool the descriptors match. */
  async acquire(domain: string, descriptors: ReadonlyArray<DescriptorInput>, options: AcquireOptions = {}): Promise<Lease> {
    const d = wire(descriptors);
    const body: Record<string, unknown> = { domain, descriptors: d };
    if (typeof options.waitMs === "number") body["wait_ms"] = Math.max(0, Math.round(options.waitMs));
    return this.#granted(domain, d, await this.#post("/leases/acquire", body, options.signal));
  }

  /** Renews lease `leaseId`: it then expires one TTL from now. */
  async renew(domain: string, descriptors: ReadonlyArray<DescriptorInput>, leaseId: string): Promise<Lease> {
    const d = wire(descriptors);
    return this.#granted(domain, d, await this.#post("/leases/renew", { domain, descriptors: d, lease_id: leaseId }));
  }

  /** Releases lease `leaseId` (releasing one nobody holds is fine). */
  async release(domain: string, descriptors: ReadonlyArray<DescriptorInput>, leaseId: string): Promise<void> {
    const d = wire(descriptors);
    const r = await this.#post("/leases/release", { domain, descriptors: d, lease_id: leaseId });
    if (r.status !== 204 && r.status !== 200) throw this.#error(r);
  }

  /** The pools one descriptor matches, with their holders. */
  async holders(domain: string, descriptor: DescriptorInput): Promise<unknown> {
    const d = wire([descriptor]);
    const r = await this.#post("/leases/holders", { domain, descriptors: d });
    if (r.status !== 200) throw this.#error(r);
    return JSON.parse(r.text) as unknown;
  }

  /**
   * Runs `body` holding a lease and releases it when `body` ends, also when it throws. A failed
   * release never hides the body's error; after a successful body it is thrown.
   */
  async withLease<T>(
    domain: string,
    descriptors: ReadonlyArray<DescriptorInput>,
    body: (lease: Lease) => Promise<T> | T,
    options: AcquireOptions = {},
  ): Promise<T> {
    const lease = await this.acquire(domain, descriptors, options);
    let result: T;
    try {
      result = await body(lease);
    } catch (error) {
      try {
        await lease.release();
      } catch {
        // The body's error is the one that matters.
      }
      throw error;
    }
    await lease.release();
    return result;
  }
}
