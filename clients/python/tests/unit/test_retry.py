"""The retry loop with pacing, the breaker and telemetry, on a manual clock."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional, Union

import pytest

from sluice_client import (
    Backoff,
    CircuitBreaker,
    CircuitOpen,
    Failed,
    FixedJitter,
    Pacer,
    Reply,
    RetryBudget,
    RetryPolicy,
    Stop,
)

from .conftest import AsyncManualTime, ManualTime

Script = List[Union[Reply[None], Exception]]


def reply(
    status: int,
    retry_after: Optional[str] = None,
    doc: Optional[Dict[str, Any]] = None,
    extra: Optional[Dict[str, str]] = None,
    **headers: str,
) -> Reply[None]:
    pairs = [(k.replace("_", "-"), v) for k, v in headers.items()]
    pairs += list((extra or {}).items())
    if retry_after is not None:
        pairs.append(("Retry-After", retry_after))
    body = b""
    if doc is not None:
        pairs.append(("Content-Type", "application/problem+json"))
        body = json.dumps(doc).encode()
    return Reply(status, pairs, body)


def backoff(time: Any, **kw: Any) -> Backoff:
    kw.setdefault("budget", RetryBudget(max=100))
    kw.setdefault("jitter", FixedJitter(0.5))
    policy = kw.pop("policy", RetryPolicy(max_attempts=4, base_ms=100, cap_ms=300))
    return Backoff(policy, clock=time, sleeper=time, async_sleeper=time, telemetry=False, **kw)


def run(b: Backoff, script: Script) -> Any:
    def attempt() -> Reply[None]:
        r = script.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    return b.run(attempt)


def test_waits_what_the_server_asks_plus_jitter_then_backs_off(time: ManualTime) -> None:
    script: Script = [
        reply(429, "1", {"status": 429, "kind": "throttle", "retry_after": 2}),
        reply(503),
        ConnectionRefusedError(),
        reply(200),
    ]
    answer = run(backoff(time), script)
    assert (answer.status, answer.attempts, answer.stopped) == (200, 4, None)
    assert answer.waits_ms == [2050, 100, 150]
    assert answer.waits == [2.05, 0.1, 0.15]
    assert answer.retry_afters_ms == [2000, None, None]
    assert answer.statuses == [429, 503, None, 200]
    assert time.slept == [2050, 100, 150]


@pytest.mark.parametrize("value", ["-1", "1e9", "soon", "99999999999999999999999", ""])
def test_bad_retry_after_never_sleeps_past_max_wait(time: ManualTime, value: str) -> None:
    policy = RetryPolicy(max_attempts=3, base_ms=100, cap_ms=300, max_wait_ms=5000)
    answer = run(backoff(time, policy=policy), [reply(429, value), reply(429, value)] * 2)
    assert all(w <= 5000 for w in time.slept)
    assert answer.stopped in (Stop.ATTEMPTS, Stop.WAIT_TOO_LONG)


def test_quota_is_handed_back_at_once(time: ManualTime) -> None:
    doc = {"status": 429, "kind": "quota", "retry_after": 3, "rule": "org-daily"}
    answer = run(backoff(time), [reply(429, "3", doc)])
    assert (answer.attempts, answer.stopped, answer.problem.rule) == (1, Stop.QUOTA, "org-daily")
    assert time.slept == [] and time.now == 0


def test_budget_exhaustion_stops_retries(time: ManualTime) -> None:
    b = backoff(time, budget=RetryBudget(ratio=0.1, per_second=0, max=2))
    answers = [run(b, [reply(503)] * 4) for _ in range(3)]
    assert [a.attempts for a in answers] == [3, 1, 1]
    assert all(a.stopped is Stop.BUDGET for a in answers)


def test_transport_failures_raise_failed_with_the_error(time: ManualTime) -> None:
    with pytest.raises(Failed) as raised:
        run(backoff(time, jitter=FixedJitter(1.0)), [ConnectionResetError("reset")] * 4)
    failed = raised.value
    assert (failed.attempts, failed.stopped) == (4, Stop.ATTEMPTS)
    assert failed.waits_ms == [100, 200, 300]
    assert isinstance(failed.source, ConnectionResetError)
    assert failed.__cause__ is failed.source


def test_other_exceptions_propagate_untouched(time: ManualTime) -> None:
    with pytest.raises(KeyError):
        run(backoff(time), [KeyError("bug")])


def test_pacing_spreads_attempts_and_refuses_a_wait_past_max_wait(time: ManualTime) -> None:
    pacer = Pacer()
    policy = RetryPolicy(max_attempts=2, base_ms=100, cap_ms=300, max_wait_ms=2000)
    b = backoff(time, pacer=pacer, policy=policy)
    ok = {"RateLimit": '"a";r=4;t=1', "RateLimit-Policy": '"a";q=5;w=1'}
    for _ in range(4):
        assert run(b, [reply(200, extra=ok)]).status == 200
    # Learnt from the first answer: 5 a second at 0.9, 222 ms apart.
    assert time.slept == [pytest.approx(2000 / 9)] * 2
    refused = reply(429, "3", {"status": 429, "kind": "throttle"}, ok)
    answer = run(b, [refused])
    assert answer.stopped is Stop.WAIT_TOO_LONG, "3 s + jitter > 2 s"
    # The refusal holds the pacer for 3 s: the next call is not sent at all.
    with pytest.raises(Failed) as raised:
        run(b, [reply(200)])
    assert (raised.value.stopped, raised.value.attempts) == (Stop.WAIT_TOO_LONG, 0)


def test_pacing_off_keeps_learning(time: ManualTime) -> None:
    pacer = Pacer()
    b = backoff(time, pacer=pacer, pace=False)
    run(b, [reply(200, RateLimit='"a";r=0;t=2', RateLimit_Policy='"a";q=5;w=2')])
    assert (pacer.limit, pacer.remaining, pacer.window_ms) == (5, 0, 2000)
    run(b, [reply(200)])
    assert time.slept == []


def test_breaker_fails_fast_once_open(time: ManualTime) -> None:
    changes: List[str] = []
    breaker = CircuitBreaker(threshold=2, open_ms=1000, on_change=lambda a, z: changes.append(z))
    b = backoff(time, breaker=breaker, jitter=FixedJitter(0))
    with pytest.raises(CircuitOpen):
        run(b, [OSError("down")] * 4)
    assert changes == ["open"]
    calls: Script = [reply(200)]
    with pytest.raises(CircuitOpen):
        run(b, calls)
    assert calls, "nothing was sent"
    time.advance(1000)
    assert run(b, calls).status == 200
    assert changes == ["open", "half_open", "closed"]


def test_async_loop_matches_the_sync_one() -> None:
    time = AsyncManualTime()
    script: Script = [reply(429, "1"), OSError("reset"), reply(200)]
    closed: List[Any] = []

    async def attempt() -> Reply[None]:
        r = script.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    async def discard(raw: None) -> None:
        closed.append(raw)

    b = backoff(time)
    answer = asyncio.run(b.arun(attempt, discard))
    assert (answer.status, answer.attempts, answer.waits_ms) == (200, 3, [1050, 100])
    assert time.slept == [1050, 100]


def test_async_retry_refused_by_the_breaker_closes_the_response_it_replaces() -> None:
    breaker = CircuitBreaker(threshold=1, open_ms=5000)

    class OpensTheBreaker(AsyncManualTime):
        """Another call's transport failure opens the shared breaker during this one's back-off."""

        async def sleep(self, ms: float) -> None:  # type: ignore[override]
            await super().sleep(ms)
            breaker.failure(self.now_ms())

    time = OpensTheBreaker()
    first: Reply[str] = Reply(503, [], b"", "first response")
    closed: List[str] = []

    async def attempt() -> Reply[str]:
        return first

    async def discard(raw: str) -> None:
        closed.append(raw)

    b = backoff(time, breaker=breaker)
    with pytest.raises(CircuitOpen):
        asyncio.run(b.arun(attempt, discard))
    assert closed == ["first response"]
