"""Replays every case of the shared fixture ``clients/fixtures/behaviour.json``, the table the
Rust, Python and TypeScript clients all pass."""

from __future__ import annotations

import json
import pathlib
from typing import Any, Dict, List, Optional

import pytest

from sluice_client import (
    Backoff,
    CircuitBreaker,
    Failed,
    FixedJitter,
    Pacer,
    PacerSettings,
    QueueFull,
    RateView,
    Reply,
    RetryBudget,
    RetryPolicy,
    WorkQueue,
    parse_problem,
    rate_view,
    retry_after_ms,
)
from sluice_client.reports import Reporter

from .conftest import ManualTime

FIXTURE = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "behaviour.json"
CASES: Dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
SECTIONS = (
    "retry_after",
    "problem",
    "rate_headers",
    "budget",
    "retry",
    "pacer",
    "queue",
    "breaker",
    "reports",
)


def cases(section: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", CASES[section], ids=[c["name"] for c in CASES[section]])


def test_every_section_is_replayed() -> None:
    unknown = set(CASES) - {"spec", *SECTIONS}
    assert not unknown, f"sections this test does not replay: {unknown}"
    for section in SECTIONS:
        assert CASES.get(section), f"no cases in {section}"


def close(actual: Optional[float], expected: Optional[float]) -> bool:
    if actual is None or expected is None:
        return actual is expected
    return abs(actual - expected) <= 1


@cases("retry_after")
def test_retry_after(case: Dict[str, Any]) -> None:
    assert close(retry_after_ms(case["value"], case["now_epoch_s"]), case["expect_ms"])


@cases("problem")
def test_problem(case: Dict[str, Any]) -> None:
    problem = parse_problem(case["content_type"], case["body"].encode("utf-8"))
    if case["expect"] is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.__dict__ == case["expect"]


def view(d: Optional[Dict[str, Any]]) -> Optional[RateView]:
    return None if d is None else RateView(**d)


@cases("rate_headers")
def test_rate_headers(case: Dict[str, Any]) -> None:
    headers = [(name, value) for name, value in case["headers"]]
    assert rate_view(headers) == view(case["expect"])


def budget(settings: Optional[Dict[str, Any]]) -> RetryBudget:
    if settings is None:
        return RetryBudget()
    return RetryBudget(settings["ratio"], settings["per_second"], settings["max"])


@cases("budget")
def test_budget(case: Dict[str, Any]) -> None:
    b = budget(case["settings"])
    for i, step in enumerate(case["steps"]):
        if step["op"] == "deposit":
            b.deposit(step["at_ms"])
        else:
            assert b.withdraw(step["at_ms"]) is step["expect"], f"step {i}: {step}"


class TransportError(OSError):
    pass


@cases("retry")
def test_retry(case: Dict[str, Any]) -> None:
    time = ManualTime(epoch_s=case["now_epoch_s"])
    p = case["policy"]
    policy = RetryPolicy(p["max_attempts"], p["base_ms"], p["cap_ms"], p["max_wait_ms"])
    b = Backoff(
        policy,
        budget=budget(case["budget"]),
        clock=time,
        sleeper=time,
        jitter=FixedJitter(case["jitter"]),
        telemetry=False,
    )
    replies: List[Dict[str, Any]] = list(case["replies"])

    def attempt() -> Reply[None]:
        r = replies.pop(0)
        if r.get("transport_error"):
            raise TransportError("connection refused")
        headers = [(k, v) for k, v in r.get("headers", [])]
        return Reply(r["status"], headers, r.get("body", "").encode("utf-8"))

    expect = case["expect"]
    if expect["error"]:
        with pytest.raises(Failed) as raised:
            b.run(attempt)
        failed = raised.value
        assert failed.attempts == expect["attempts"]
        assert expect["status"] is None
        assert failed.stopped.value == expect["stopped"]
        waits = failed.waits_ms
    else:
        answer = b.run(attempt)
        assert answer.attempts == expect["attempts"]
        assert answer.status == expect["status"]
        assert (answer.stopped.value if answer.stopped else None) == expect["stopped"]
        waits = answer.waits_ms
    assert len(waits) == len(expect["waits_ms"]), waits
    assert all(close(w, e) for w, e in zip(waits, expect["waits_ms"])), waits
    assert len(time.slept) == len(expect["waits_ms"])
    assert all(close(w, e) for w, e in zip(time.slept, expect["waits_ms"])), time.slept
    # Scripts may hold more replies than a stopping loop uses: exactly `attempts` were sent.
    assert len(case["replies"]) - len(replies) == expect["attempts"]


def pacer_settings(d: Optional[Dict[str, Any]]) -> PacerSettings:
    return PacerSettings(**(d or {}))


@cases("pacer")
def test_pacer(case: Dict[str, Any]) -> None:
    pacer = Pacer(pacer_settings(case.get("settings")))
    for i, step in enumerate(case["steps"]):
        now = step["at_ms"]
        if "observe" in step:
            pacer.observe(RateView(**step["observe"]), now)
        elif "refused" in step:
            pacer.refused(step["refused"], now)
        elif "reserve" in step:
            assert close(pacer.reserve(now), step["reserve"]), f"step {i}: {step}"
        elif "peek" in step:
            assert close(pacer.peek(now), step["peek"]), f"step {i}: {step}"
        else:
            raise AssertionError(f"unknown step {step}")


@cases("queue")
def test_queue(case: Dict[str, Any]) -> None:
    pacer = Pacer(pacer_settings(case.get("pacer_settings")))
    if case.get("observe") is not None:
        pacer.observe(RateView(**case["observe"]), 0)
    queue: WorkQueue[str] = WorkQueue(pacer, case["max_depth"])
    for i, step in enumerate(case["steps"]):
        now = step["at_ms"]
        if "push" in step:
            try:
                queue.push(step["push"], step.get("deadline_at"))
                outcome = "queued"
            except QueueFull:
                outcome = "full"
            assert outcome == step["expect"], f"step {i}: {step}"
        else:
            taken = queue.take(now)
            want = step["take"]
            assert taken.item == want["item"], f"step {i}: {step}"
            assert taken.found is (want["item"] is not None)
            assert close(taken.wait_ms, want["wait_ms"]), f"step {i}: {taken}"
            assert taken.expired == want["expired"], f"step {i}: {taken}"


@cases("breaker")
def test_breaker(case: Dict[str, Any]) -> None:
    changes: List[List[str]] = []
    s = case["settings"]
    breaker = CircuitBreaker(
        s["threshold"], s["open_ms"], on_change=lambda a, b: changes.append([a, b])
    )
    for i, step in enumerate(case["steps"]):
        now = step["at_ms"]
        if step["op"] == "allow":
            assert breaker.allow(now) is step["expect"], f"step {i}: {step}"
        elif step["op"] == "success":
            breaker.success(now)
        else:
            breaker.failure(now)
        assert breaker.state == step["state"], f"step {i}: {step}"
    assert changes == case["changes"]


def latency(v: Any) -> float:
    """A fixture latency: a number, or "NaN" / "Infinity" (which JSON cannot spell)."""
    return float(v)


@cases("reports")
def test_reports(case: Dict[str, Any]) -> None:
    # Records and the batches a flush cuts, without HTTP: the client is never used.
    reporter = Reporter("http://sluice.invalid", case["domain"], **case["settings"])
    for i, step in enumerate(case["steps"]):
        if "record" in step or "record_many" in step:
            r = step.get("record") or step["record_many"]
            for _ in range(r.get("times", 1)):
                got = reporter.record(r["descriptor"], latency(r["latency_ms"]), r["status"])
                assert got == step["expect"], f"step {i}: {step}"
        elif "counts" in step:
            c = reporter.counts()
            want = step["counts"]
            assert (c.invalid, c.overflow, c.pending) == (
                want["invalid"],
                want["overflow"],
                want["pending"],
            ), f"step {i}"
        else:
            batches = reporter.take_batches()
            assert [len(b) for b in batches] == step["take"], f"step {i}"
            if "first" in step:
                assert json.loads(reporter.body(batches[0])) == step["first"], f"step {i}"
