// sluice-client: a fetch that respects Sluice's answers.

export {
  MAX_SECONDS,
  headerGetter,
  headerStyle,
  parseHttpDate,
  parseProblem,
  parseRateLimit,
  parseRetryAfter,
  readCount,
  type HeaderStyle,
  type HeadersLike,
  type Problem,
  type ProblemKind,
  type RateLimitView,
} from "./headers.js";
export {
  DEFAULT_POLICY,
  backoffBound,
  randomJitter,
  retryPolicy,
  retryWait,
  verdict,
  type Jitter,
  type RetryPolicy,
  type StopReason,
  type Verdict,
} from "./policy.js";
export { DEFAULT_BUDGET, RetryBudget, setSharedBudget, sharedBudget, type BudgetSettings } from "./budget.js";
export { DEFAULT_PACER, Pacer, type PacerSettings, type PacerState } from "./pacer.js";
export { QueueFullError, WorkQueue, type Taken, type WorkQueueOptions } from "./queue.js";
export { CircuitBreaker, CircuitOpenError, type BreakerSettings, type BreakerState } from "./breaker.js";
export { ManualClock, realSleep, systemClock, systemWallClock, type Clock, type Sleep, type WallClock } from "./clock.js";
export { Backoff, type BackoffOptions, type Outcome, type Reply, type RunOptions } from "./retry.js";
export {
  SluiceClient,
  SluiceError,
  sluiceFetch,
  wrapFetch,
  type ClientOptions,
  type FetchInput,
  type FetchLike,
  type FetchReply,
  type SluiceCallOptions,
  type SluiceFetch,
  type SluiceRequestInit,
} from "./client.js";
export {
  Lease,
  LeaseError,
  LeaseRefusedError,
  Leases,
  type AcquireOptions,
  type DescriptorInput,
  type LeasesOptions,
  type WireDescriptor,
} from "./leases.js";
export {
  MAX_BATCH,
  MAX_ENTRIES,
  MAX_LATENCY_MS,
  Reporter,
  type Recorded,
  type Report,
  type ReportCounts,
  type ReporterOptions,
  type ReportTotals,
} from "./reports.js";
export {
  Telemetry,
  type AttributeValue,
  type Attributes,
  type CallIdentity,
  type CounterLike,
  type HistogramLike,
  type MeterLike,
  type SpanLike,
  type TelemetryOptions,
  type TracerLike,
} from "./telemetry.js";
