// Reading what a server says about limits: Retry-After (seconds or an HTTP-date), the RFC 9457
// problem document, and the three rate-limit header styles. Nothing here throws on bad input:
// whatever cannot be read counts as absent (behaviour.md §1, §8).

/** Largest number of seconds taken from a server; a bigger value counts as this. */
export const MAX_SECONDS = 1_000_000_000;

/** Anything headers can be read from: a `Headers`, a list of pairs, or a plain record. */
export type HeadersLike =
  | { get(name: string): string | null }
  | ReadonlyArray<readonly [string, string]>
  | Readonly<Record<string, string | readonly string[] | undefined>>;

/** A case-insensitive getter over any `HeadersLike`; repeated fields are joined with ", ". */
export function headerGetter(headers: HeadersLike | null | undefined): (name: string) => string | null {
  if (headers == null) return () => null;
  if (typeof (headers as { get?: unknown }).get === "function" && !Array.isArray(headers)) {
    const h = headers as { get(name: string): string | null };
    return (name) => {
      try {
        return h.get(name);
      } catch {
        return null;
      }
    };
  }
  const map = new Map<string, string[]>();
  const add = (name: string, value: unknown): void => {
    if (typeof name !== "string" || typeof value !== "string") return;
    const key = name.toLowerCase();
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  };
  if (Array.isArray(headers)) {
    for (const pair of headers as ReadonlyArray<readonly [string, string]>) {
      if (Array.isArray(pair)) add(pair[0], pair[1]);
    }
  } else {
    for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
      if (Array.isArray(value)) for (const v of value) add(name, v);
      else add(name, value);
    }
  }
  return (name) => {
    const list = map.get(name.toLowerCase());
    return list ? list.join(", ") : null;
  };
}

/** Non-negative integer of ASCII digits only (surrounding whitespace allowed), clamped. */
export function readCount(value: string | null | undefined): number | null {
  if (typeof value !== "string") return null;
  const s = value.trim();
  if (!/^[0-9]+$/.test(s)) return null;
  const n = Number(s);
  return n > MAX_SECONDS ? MAX_SECONDS : n;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT$/;

/** An RFC 9110 IMF-fixdate as epoch seconds, or null. */
export function parseHttpDate(value: string): number | null {
  const m = IMF_FIXDATE.exec(value.trim());
  if (!m) return null;
  const day = Number(m[2]);
  const month = MONTHS.indexOf(m[3]!);
  const year = Number(m[4]);
  const hour = Number(m[5]);
  const minute = Number(m[6]);
  const second = Number(m[7]);
  if (hour > 23 || minute > 59 || second > 60 || day < 1) return null;
  const ms = Date.UTC(year, month, day, hour, minute, Math.min(second, 59)) + (second === 60 ? 1000 : 0);
  const d = new Date(ms - (second === 60 ? 1000 : 0));
  // Reject dates that do not exist (31 Feb) and a weekday that does not match the date.
  if (d.getUTCDate() !== day || d.getUTCMonth() !== month || DAYS[d.getUTCDay()] !== m[1]) return null;
  return ms / 1000;
}

/**
 * `Retry-After` in milliseconds: delay-seconds, or an HTTP-date measured from `nowEpochS` (the
 * wall clock, in seconds) and rounded up to whole seconds. Null when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, nowEpochS: number = Date.now() / 1000): number | null {
  if (typeof value !== "string") return null;
  const seconds = readCount(value);
  if (seconds !== null) return seconds * 1000;
  const at = parseHttpDate(value);
  if (at === null || !Number.isFinite(nowEpochS)) return null;
  const s = Math.ceil(at - nowEpochS);
  return s <= 0 ? 0 : Math.min(s, MAX_SECONDS) * 1000;
}

export type ProblemKind = "throttle" | "quota";

/** The members of an RFC 9457 problem document a client acts on; absent ones are null. */
export interface Problem {
  status: number | null;
  title: string | null;
  detail: string | null;
  rule: string | null;
  /** Seconds until the request would fit. */
  retry_after: number | null;
  kind: ProblemKind | null;
}

/** The problem document, when `Content-Type` says there is one and the body is a JSON object. */
export function parseProblem(contentType: string | null | undefined, body: string | null | undefined): Problem | null {
  if (typeof contentType !== "string" || typeof body !== "string") return null;
  const media = contentType.split(";")[0]!.trim().toLowerCase();
  if (media !== "application/problem+json") return null;
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch {
    return null;
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) return null;
  const o = doc as Record<string, unknown>;
  const str = (v: unknown): string | null => (typeof v === "string" ? v : null);
  const status = o["status"];
  const retry = o["retry_after"];
  const kind = o["kind"];
  return {
    status: typeof status === "number" && Number.isInteger(status) && status >= 100 && status <= 599 ? status : null,
    title: str(o["title"]),
    detail: str(o["detail"]),
    rule: str(o["rule"]),
    retry_after: typeof retry === "number" && Number.isInteger(retry) && retry >= 0 ? Math.min(retry, MAX_SECONDS) : null,
    kind: kind === "throttle" || kind === "quota" ? kind : null,
  };
}

/** What the rate-limit headers of an answer say; each field may be absent. */
export interface RateLimitView {
  limit: number | null;
  remaining: number | null;
  reset_s: number | null;
  window_s: number | null;
}

export type HeaderStyle = "ietf" | "x-ratelimit" | "ratelimit";

/** Splits a structured-field list on commas outside quoted strings. */
function splitList(value: string): string[] {
  const out: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < value.length; i++) {
    const c = value[i]!;
    if (quoted) {
      cur += c;
      if (c === "\\" && i + 1 < value.length) cur += value[++i];
      else if (c === '"') quoted = false;
    } else if (c === '"') {
      quoted = true;
      cur += c;
    } else if (c === ",") {
      out.push(cur);
      cur = "";
    } else cur += c;
  }
  out.push(cur);
  return out;
}

interface Item {
  name: string;
  params: Map<string, string>;
}

/** One list member: `"name";k=v;k=v` or `token;k=v`. Null when the name cannot be read. */
function parseItem(raw: string): Item | null {
  const s = raw.trim();
  let i = 0;
  let name = "";
  if (s[0] === '"') {
    i = 1;
    let closed = false;
    while (i < s.length) {
      const c = s[i]!;
      if (c === "\\") {
        const next = s[i + 1];
        if (next !== '"' && next !== "\\") return null;
        name += next;
        i += 2;
      } else if (c === '"') {
        closed = true;
        i++;
        break;
      } else {
        name += c;
        i++;
      }
    }
    if (!closed) return null;
  } else {
    while (i < s.length && s[i] !== ";") name += s[i++];
    name = name.trim();
    if (name === "" || /[\s"]/.test(name)) return null;
  }
  const rest = s.slice(i).trim();
  if (rest !== "" && rest[0] !== ";") return null;
  const params = new Map<string, string>();
  for (const part of rest.split(";").slice(1)) {
    const eq = part.indexOf("=");
    const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    const val = eq < 0 ? "" : part.slice(eq + 1).trim();
    if (key !== "" && !params.has(key)) params.set(key, val);
  }
  return { name, params };
}

function finish(view: RateLimitView): RateLimitView | null {
  if (view.window_s === 0) view.window_s = null;
  if (view.limit !== null && view.remaining !== null && view.remaining > view.limit) view.remaining = view.limit;
  if (view.limit === null && view.remaining === null && view.reset_s === null && view.window_s === null) return null;
  return view;
}

function ietfView(state: string, policy: string | null): RateLimitView | null {
  let chosen: { name: string; r: number; t: number | null } | null = null;
  for (const raw of splitList(state)) {
    const item = parseItem(raw);
    if (!item) continue;
    const r = readCount(item.params.get("r"));
    if (r === null) continue;
    const t = readCount(item.params.get("t"));
    if (
      chosen === null ||
      r < chosen.r ||
      (r === chosen.r && (t ?? -1) > (chosen.t ?? -1))
    ) {
      chosen = { name: item.name, r, t };
    }
  }
  if (chosen === null) return null;
  const view: RateLimitView = { limit: null, remaining: chosen.r, reset_s: chosen.t, window_s: null };
  if (policy !== null) {
    for (const raw of splitList(policy)) {
      const item = parseItem(raw);
      if (!item || item.name !== chosen.name) continue;
      view.limit = readCount(item.params.get("q"));
      view.window_s = readCount(item.params.get("w"));
      break;
    }
  }
  return finish(view);
}

function xRateLimitView(get: (name: string) => string | null): RateLimitView | null {
  const view: RateLimitView = { limit: null, remaining: null, reset_s: null, window_s: null };
  const elements = splitList(get("x-ratelimit-limit") ?? "");
  view.limit = readCount(elements[0]);
  if (view.limit !== null) {
    for (const raw of elements.slice(1)) {
      const parts = raw.split(";");
      if (readCount(parts[0]) !== view.limit) continue;
      for (const p of parts.slice(1)) {
        const eq = p.indexOf("=");
        if (eq >= 0 && p.slice(0, eq).trim().toLowerCase() === "w") {
          view.window_s = readCount(p.slice(eq + 1));
          break;
        }
      }
      break;
    }
  }
  view.remaining = readCount(get("x-ratelimit-remaining"));
  view.reset_s = readCount(get("x-ratelimit-reset"));
  return finish(view);
}

/** The rate-limit view of an answer's headers (first style present wins), or null. */
export function parseRateLimit(headers: HeadersLike | null | undefined): RateLimitView | null {
  const get = headerGetter(headers);
  const state = get("ratelimit");
  if (state !== null) return ietfView(state, get("ratelimit-policy"));
  if (get("x-ratelimit-limit") !== null) return xRateLimitView(get);
  const limit = get("ratelimit-limit");
  const remaining = get("ratelimit-remaining");
  const reset = get("ratelimit-reset");
  if (limit === null && remaining === null && reset === null) return null;
  return finish({ limit: readCount(limit), remaining: readCount(remaining), reset_s: readCount(reset), window_s: null });
}

/** Which header style an answer uses, if any. */
export function headerStyle(headers: HeadersLike | null | undefined): HeaderStyle | null {
  const get = headerGetter(headers);
  if (get("ratelimit") !== null) return "ietf";
  if (get("x-ratelimit-limit") !== null) return "x-ratelimit";
  if (get("ratelimit-limit") !== null || get("ratelimit-remaining") !== null || get("ratelimit-reset") !== null) return "ratelimit";
  return null;
}
