import { test } from "node:test";
import assert from "node:assert/strict";
import { parseRetryAfter, parseProblem, parseRateLimit, headerStyle, parseHttpDate } from "../dist/index.js";

const NOW = 1796000000; // epoch seconds

test("Retry-After seconds, whitespace, clamp", () => {
  assert.equal(parseRetryAfter("12", NOW), 12000);
  assert.equal(parseRetryAfter("  7 \t", NOW), 7000);
  assert.equal(parseRetryAfter("0", NOW), 0);
  assert.equal(parseRetryAfter("99999999999999999999999", NOW), 1e12);
  assert.equal(parseRetryAfter("1000000001", NOW), 1e12);
  assert.equal(parseRetryAfter("1000000000", NOW), 1e12);
});

test("Retry-After garbage is absent", () => {
  for (const v of ["-1", "1.5", "", "  ", "abc", "12abc", "+3", "1e3", "0x10", null, undefined, "١٢"]) {
    assert.equal(parseRetryAfter(v, NOW), null, JSON.stringify(v));
  }
});

test("Retry-After HTTP-date", () => {
  const at = parseHttpDate("Wed, 21 Oct 2026 07:28:00 GMT");
  assert.equal(at, Date.UTC(2026, 9, 21, 7, 28, 0) / 1000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:00 GMT", at - 30), 30000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:00 GMT", at - 29.2), 30000, "rounded up");
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:00 GMT", at + 100), 0, "past");
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:00 GMT", at), 0);
  // Not IMF-fixdate: RFC 850, asctime, lower-case, a date that does not exist.
  assert.equal(parseRetryAfter("Wednesday, 21-Oct-26 07:28:00 GMT", at - 30), null);
  assert.equal(parseRetryAfter("Wed Oct 21 07:28:00 2026", at - 30), null);
  assert.equal(parseRetryAfter("Wed, 31 Feb 2026 07:28:00 GMT", at - 30), null);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 25:28:00 GMT", at - 30), null);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2026 07:28:00 UTC", at - 30), null);
});

test("problem document", () => {
  const ct = "application/problem+json";
  const p = parseProblem("Application/Problem+JSON; charset=utf-8", '{"status":429,"title":"Too Many","detail":"d","rule":"app","retry_after":3,"kind":"throttle","x":[1]}');
  assert.deepEqual(p, { status: 429, title: "Too Many", detail: "d", rule: "app", retry_after: 3, kind: "throttle" });
  assert.equal(parseProblem("application/json", '{"status":429}'), null);
  assert.equal(parseProblem(null, '{"status":429}'), null);
  assert.equal(parseProblem(ct, "not json"), null);
  assert.equal(parseProblem(ct, "[1,2]"), null);
  assert.equal(parseProblem(ct, "null"), null);
  assert.equal(parseProblem(ct, '"x"'), null);
  assert.equal(parseProblem(ct, ""), null);
  // Wrong types are absent; the rest counts.
  assert.deepEqual(parseProblem(ct, '{"status":"429","title":5,"retry_after":-1,"kind":"later","rule":"r"}'), {
    status: null, title: null, detail: null, rule: "r", retry_after: null, kind: null,
  });
  assert.equal(parseProblem(ct, '{"status":99}').status, null);
  assert.equal(parseProblem(ct, '{"status":600}').status, null);
  assert.equal(parseProblem(ct, '{"status":429.5}').status, null);
  assert.equal(parseProblem(ct, '{"retry_after":1.5}').retry_after, null);
  assert.equal(parseProblem(ct, '{"retry_after":1e30}').retry_after, 1e9);
  assert.equal(parseProblem(ct, '{"kind":"quota"}').kind, "quota");
});

test("ietf headers: smallest r, ties to largest t, policy by name", () => {
  const v = parseRateLimit([
    ["RateLimit-Policy", '"app";q=120;w=60, "team";q=50;w=1;sluice-burst=100'],
    ["ratelimit", '"app";r=119;t=63, "team";r=99;t=1'],
  ]);
  // team has the smaller r; its remaining (99, a burst) is lowered to its limit.
  assert.deepEqual(v, { limit: 50, remaining: 50, reset_s: 1, window_s: 1 });
  const tie = parseRateLimit({ RateLimit: '"a";r=3;t=1, "b";t=9;r=3, "c";r=3;t=9', "RateLimit-Policy": '"b";w=10;q=5, "c";q=7;w=1' });
  assert.deepEqual(tie, { limit: 5, remaining: 3, reset_s: 9, window_s: 10 });
  const escaped = parseRateLimit(new Headers({ ratelimit: '"a\\"b";r=1;t=2', "ratelimit-policy": '"a\\"b";q=4;w=2' }));
  assert.deepEqual(escaped, { limit: 4, remaining: 1, reset_s: 2, window_s: 2 });
  const token = parseRateLimit({ ratelimit: "day;r=0;t=5, min;r=abc;t=1", "ratelimit-policy": "day;q=100;w=86400" });
  assert.deepEqual(token, { limit: 100, remaining: 0, reset_s: 5, window_s: 86400 });
});

test("contradicting and broken rate-limit headers never throw", () => {
  // remaining above limit is lowered
  assert.deepEqual(parseRateLimit({ ratelimit: '"a";r=50;t=1', "ratelimit-policy": '"a";q=10;w=0' }), { limit: 10, remaining: 10, reset_s: 1, window_s: null });
  assert.equal(parseRateLimit({ ratelimit: "garbage,,,;;;" }), null);
  assert.equal(parseRateLimit({ ratelimit: '"a";r=-1;t=1' }), null);
  assert.equal(parseRateLimit({ ratelimit: '"unterminated;r=1' }), null);
  assert.equal(parseRateLimit({}), null);
  assert.equal(parseRateLimit(null), null);
  // ietf wins even over x-ratelimit
  assert.deepEqual(parseRateLimit({ ratelimit: '"a";r=1', "x-ratelimit-limit": "5" }), { limit: null, remaining: 1, reset_s: null, window_s: null });
  assert.equal(headerStyle({ ratelimit: "x", "x-ratelimit-limit": "5" }), "ietf");
});

test("x-ratelimit and ratelimit styles", () => {
  assert.deepEqual(
    parseRateLimit({ "X-RateLimit-Limit": '3, 5;w=3600;name="b", 3;w=300', "X-RateLimit-Remaining": "2", "X-RateLimit-Reset": "17" }),
    { limit: 3, remaining: 2, reset_s: 17, window_s: 300 },
  );
  assert.deepEqual(parseRateLimit({ "x-ratelimit-limit": "3x", "x-ratelimit-remaining": "2" }), { limit: null, remaining: 2, reset_s: null, window_s: null });
  assert.deepEqual(parseRateLimit({ "RateLimit-Limit": "10", "RateLimit-Remaining": "12", "RateLimit-Reset": "1" }), { limit: 10, remaining: 10, reset_s: 1, window_s: null });
  assert.equal(parseRateLimit({ "RateLimit-Limit": "ten" }), null);
  assert.equal(headerStyle({ "RateLimit-Reset": "1" }), "ratelimit");
});
