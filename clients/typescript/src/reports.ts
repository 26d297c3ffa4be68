// Reports for adaptive limits (behaviour.md §9, docs/adaptive.md): the app records the latency
// and status of each call to an upstream an adaptive rule protects, and a Reporter posts them to
// Sluice's `POST /reports` in batches.
//
// `record` never does I/O: it checks the report and pushes it on a bounded queue. A report Sluice
// would refuse is dropped there, because Sluice refuses a whole batch for one impossible report.
// A batch that fails is dropped, never retried: Sluice decides each interval from that interval's
// reports, so a late one would only blur the next.

import type { FetchLike } from "./client.js";
import type { DescriptorInput } from "./leases.js";

/** Sluice's own cap on reports per batch. */
export const MAX_BATCH = 5000;
/** The most entries Sluice takes in a report's descriptor. */
export const MAX_ENTRIES = 64;
/** The longest latency Sluice takes: an hour. */
export const MAX_LATENCY_MS = 3_600_000;

export interface Report {
  descriptor: Array<{ key: string; value: string }>;
  latency_ms: number;
  status: number;
}

/** What became of a recorded report: queued, or dropped (Sluice would refuse it; `maxPending` waiting). */
export type Recorded = "pending" | "invalid" | "overflow";

export interface ReportCounts {
  /** In batches Sluice answered 200. */
  sent: number;
  /** In batches that got no 200 (no answer, 4xx, 5xx): dropped. */
  failed: number;
  /** Of those sent, counted by an adaptive rule (Sluice's answer). */
  accepted: number;
  /** Of those sent, matching no adaptive rule (Sluice's answer). */
  unmatched: number;
}

export interface ReportTotals extends ReportCounts {
  /** Dropped at record time: Sluice would refuse them. */
  invalid: number;
  /** Dropped at record time: `maxPending` were waiting. */
  overflow: number;
  /** Waiting for a flush now. */
  pending: number;
}

export interface ReporterOptions {
  /** Reports waiting for a flush, at most; more are dropped (10 000). */
  maxPending?: number;
  /** Reports per batch, at most (500; above 5 000 counts as 5 000). */
  maxBatch?: number;
  /** Estimated bytes per batch, at most (512 KiB: half of Sluice's 1 MiB, room for escaping). */
  maxBatchBytes?: number;
  /** How often `start()` flushes (ms, 1 000). */
  flushIntervalMs?: number;
  fetch?: FetchLike;
}

const utf8 = new TextEncoder();

function entries(d: DescriptorInput): Array<{ key: string; value: string }> {
  const list = (d as { entries?: unknown }).entries;
  if (Array.isArray(list)) return list.map((e: { key: unknown; value: unknown }) => ({ key: String(e.key), value: String(e.value) }));
  return Object.entries(d as Record<string, unknown>).map(([key, value]) => ({ key, value: String(value) }));
}

function valid(r: Report): boolean {
  return (
    r.descriptor.length > 0 &&
    r.descriptor.length <= MAX_ENTRIES &&
    typeof r.latency_ms === "number" &&
    Number.isFinite(r.latency_ms) &&
    r.latency_ms >= 0 &&
    r.latency_ms <= MAX_LATENCY_MS &&
    Number.isInteger(r.status) &&
    r.status >= 100 &&
    r.status <= 599
  );
}

/** The estimate of a report's encoded size that batches are cut by. */
function size(r: Report): number {
  let n = 64;
  for (const e of r.descriptor) n += 16 + utf8.encode(e.key).length + utf8.encode(e.value).length;
  return n;
}

const count = (answer: unknown, name: string): number => {
  const v = answer !== null && typeof answer === "object" ? (answer as Record<string, unknown>)[name] : undefined;
  return typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : 0;
};

/** Buffers reports and posts them to one Sluice (`baseUrl`, its HTTP address) for one domain. */
export class Reporter {
  readonly url: string;
  readonly domain: string;
  readonly maxPending: number;
  readonly maxBatch: number;
  readonly maxBatchBytes: number;
  readonly flushIntervalMs: number;
  readonly #fetch: FetchLike | undefined;
  #pending: Report[] = [];
  #totals: ReportTotals = { sent: 0, failed: 0, accepted: 0, unmatched: 0, invalid: 0, overflow: 0, pending: 0 };
  #flushing: Promise<unknown> = Promise.resolve();
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(baseUrl: string | URL, domain: string, options: ReporterOptions = {}) {
    this.url = `${String(baseUrl).replace(/\/+$/, "")}/reports`;
    this.domain = domain;
    this.maxPending = options.maxPending ?? 10_000;
    this.maxBatch = options.maxBatch ?? 500;
    this.maxBatchBytes = options.maxBatchBytes ?? 512 * 1024;
    this.flushIntervalMs = options.flushIntervalMs ?? 1000;
    this.#fetch = options.fetch;
  }

  /** Buffers one call's latency (ms) and status. Never does I/O, never throws. */
  record(descriptor: DescriptorInput, latencyMs: number, status: number): Recorded {
    let report: Report | null = null;
    try {
      report = { descriptor: entries(descriptor), latency_ms: latencyMs, status };
    } catch {
      report = null;
    }
    if (report === null || !valid(report)) {
      this.#totals.invalid += 1;
      return "invalid";
    }
    if (this.#pending.length >= this.maxPending) {
      this.#totals.overflow += 1;
      return "overflow";
    }
    this.#pending.push(report);
    return "pending";
  }

  /** The totals so far. */
  counts(): ReportTotals {
    return { ...this.#totals, pending: this.#pending.length };
  }

  /** Takes everything pending, cut into the batches a flush posts (for an app that posts them itself). */
  takeBatches(): Report[][] {
    const pending = this.#pending;
    this.#pending = [];
    const most = Math.min(Math.max(this.maxBatch, 1), MAX_BATCH);
    const batches: Report[][] = [];
    let bytes = 0;
    for (const report of pending) {
      const n = size(report);
      const last = batches[batches.length - 1];
      if (last !== undefined && last.length < most && bytes + n <= this.maxBatchBytes) {
        last.push(report);
        bytes += n;
      } else {
        batches.push([report]);
        bytes = n;
      }
    }
    return batches;
  }

  /** The body of `POST /reports` for one batch. */
  body(batch: Report[]): string {
    return JSON.stringify({ domain: this.domain, reports: batch });
  }

  /** Posts what is pending, batch by batch; a batch without a 200 is dropped and counted in `failed`. Never rejects. */
  flush(): Promise<ReportCounts> {
    // Flushes run one after another, so batches go out in order and never twice.
    const next = this.#flushing.then(() => this.#flushNow());
    this.#flushing = next.catch(() => undefined);
    return next;
  }

  async #flushNow(): Promise<ReportCounts> {
    const f: FetchLike = this.#fetch ?? ((i, r) => globalThis.fetch(i, r));
    const batches = this.takeBatches();
    const counts: ReportCounts = { sent: 0, failed: 0, accepted: 0, unmatched: 0 };
    for (const batch of batches) {
      let answer: unknown = undefined;
      let ok = false;
      try {
        const response = await f(this.url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: this.body(batch),
        });
        const text = await response.text();
        ok = response.status === 200;
        try {
          answer = JSON.parse(text);
        } catch {
          answer = null;
        }
      } catch {
        ok = false;
      }
      if (ok) {
        counts.sent += batch.length;
        counts.accepted += count(answer, "accepted");
        counts.unmatched += count(answer, "unmatched");
      } else {
        counts.failed += batch.length;
      }
    }
    this.#totals.sent += counts.sent;
    this.#totals.failed += counts.failed;
    this.#totals.accepted += counts.accepted;
    this.#totals.unmatched += counts.unmatched;
    return counts;
  }

  /** Flushes every `flushIntervalMs` on a timer that does not keep Node alive, until `stop()`. */
  start(): this {
    if (this.#timer === null) {
      this.#timer = setInterval(() => void this.flush(), this.flushIntervalMs);
      (this.#timer as { unref?: () => void }).unref?.();
    }
    return this;
  }

  /** Stops the timer and flushes once more. */
  async stop(): Promise<ReportCounts> {
    if (this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
    return this.flush();
  }
}
