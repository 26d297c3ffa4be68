// Optional OpenTelemetry (behaviour.md §7), typed structurally: pass a tracer and a meter from
// `@opentelemetry/api`; this package imports nothing from it.

export type AttributeValue = string | number | boolean;
export type Attributes = Record<string, AttributeValue>;

/** The part of an OpenTelemetry `Span` used here. */
export interface SpanLike {
  setAttribute(key: string, value: AttributeValue): unknown;
  setStatus?(status: { code: number; message?: string }): unknown;
  recordException?(exception: unknown): unknown;
  end(): void;
}

/** The part of an OpenTelemetry `Tracer` used here. */
export interface TracerLike {
  startSpan(name: string, options?: { attributes?: Attributes; kind?: number }): SpanLike;
}

export interface CounterLike {
  add(value: number, attributes?: Attributes): void;
}

export interface HistogramLike {
  record(value: number, attributes?: Attributes): void;
}

/** The part of an OpenTelemetry `Meter` used here. */
export interface MeterLike {
  createCounter(name: string, options?: { description?: string; unit?: string }): CounterLike;
  createHistogram(name: string, options?: { description?: string; unit?: string }): HistogramLike;
}

export interface TelemetryOptions {
  tracer?: TracerLike;
  meter?: MeterLike;
}

/** Who a call is for, recorded on its span when set. */
export interface CallIdentity {
  appId?: string;
  tenantId?: string;
  leaseId?: string;
}

const SPAN_KIND_CLIENT = 2;
const STATUS_ERROR = 2;

/** Instruments made once per meter. */
export class Telemetry {
  readonly #tracer: TracerLike | undefined;
  readonly #requests: CounterLike | undefined;
  readonly #retries: CounterLike | undefined;
  readonly #wait: HistogramLike | undefined;

  constructor(options: TelemetryOptions | undefined) {
    this.#tracer = options?.tracer;
    const meter = options?.meter;
    if (meter) {
      this.#requests = meter.createCounter("sluice.client.requests", {
        description: "Calls made through the Sluice client, by outcome",
      });
      this.#retries = meter.createCounter("sluice.client.retries", {
        description: "Retries made by the Sluice client",
      });
      this.#wait = meter.createHistogram("sluice.client.wait", {
        description: "Time slept before an attempt (pacing and back-off)",
        unit: "s",
      });
    }
  }

  get active(): boolean {
    return this.#tracer !== undefined || this.#requests !== undefined;
  }

  /** Starts the span of one call (or nothing without a tracer). */
  start(identity: CallIdentity): SpanLike | null {
    if (!this.#tracer) return null;
    const attributes: Attributes = {};
    if (identity.appId) attributes["sluice.app_id"] = identity.appId;
    if (identity.tenantId) attributes["sluice.tenant_id"] = identity.tenantId;
    if (identity.leaseId) attributes["sluice.lease_id"] = identity.leaseId;
    try {
      return this.#tracer.startSpan("sluice.client.request", { kind: SPAN_KIND_CLIENT, attributes });
    } catch {
      return null;
    }
  }

  retried(): void {
    safe(() => this.#retries?.add(1));
  }

  slept(ms: number): void {
    safe(() => this.#wait?.record(ms / 1000));
  }

  /** Ends a call: its span's last attributes and the request counter. */
  finish(
    span: SpanLike | null,
    result: { attempts: number; stopped: string | null; status: number | null; error: unknown },
  ): void {
    const outcome = result.status === null ? "error" : result.status < 400 ? "ok" : "refused";
    safe(() => this.#requests?.add(1, { outcome }));
    if (!span) return;
    safe(() => {
      span.setAttribute("sluice.attempts", result.attempts);
      if (result.stopped !== null) span.setAttribute("sluice.stopped", result.stopped);
      if (result.status !== null) span.setAttribute("http.response.status_code", result.status);
      if (result.error != null) {
        span.recordException?.(result.error);
        span.setStatus?.({ code: STATUS_ERROR, message: String((result.error as { message?: unknown }).message ?? result.error) });
      } else if (result.status !== null && result.status >= 400) {
        span.setStatus?.({ code: STATUS_ERROR, message: `HTTP ${result.status}` });
      }
    });
    safe(() => span.end());
  }
}

function safe(f: () => void): void {
  try {
    f();
  } catch {
    // Telemetry never breaks a call.
  }
}
