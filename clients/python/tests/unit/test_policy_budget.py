"""Verdicts, waits and the retry budget."""

from __future__ import annotations

import threading

from sluice_client import Problem, RetryBudget, RetryPolicy, Stop, default_budget, verdict


def test_verdicts() -> None:
    assert verdict(200, None, None).action == "done"
    assert verdict(304, 5000, None).action == "done"
    assert verdict(429, 3000, None).server_ms == 3000
    assert verdict(503, None, None).server_ms is None
    throttle = Problem(kind="throttle", retry_after=5)
    assert verdict(429, 3000, throttle).server_ms == 5000
    assert verdict(429, 9000, throttle).server_ms == 9000
    assert verdict(429, None, Problem(kind="quota")).stop is Stop.QUOTA
    assert verdict(402, None, None).stop is Stop.QUOTA
    assert verdict(404, None, None).stop is Stop.NOT_RETRYABLE
    assert verdict(500, 1000, None).stop is Stop.NOT_RETRYABLE


def test_backoff_doubles_to_the_cap_without_overflow() -> None:
    p = RetryPolicy(base_ms=100, cap_ms=500)
    assert [p.bound(n) for n in (1, 2, 3, 4, 40, 10**6)] == [100, 200, 400, 500, 500, 500]
    assert p.wait(2000, 30) == 2030
    assert p.wait(None, 30) == 30


def test_budget_bounds_retries_by_requests_and_time() -> None:
    b = RetryBudget(ratio=0.25, per_second=0, max=2)
    assert b.withdraw(0) and b.withdraw(0)
    assert not b.withdraw(0)
    for _ in range(3):
        b.deposit(0)
    assert not b.withdraw(0), "0.75 of a retry"
    b.deposit(0)
    assert b.withdraw(0)

    b = RetryBudget(ratio=0, per_second=2, max=3)
    assert b.withdraw(0) and b.withdraw(0) and b.withdraw(0)
    assert not b.withdraw(400), "0.8 earned"
    assert b.withdraw(500)
    later = 3_600_000
    assert all(b.withdraw(later) for _ in range(3))
    assert not b.withdraw(later)


def test_budget_keeps_time_that_earned_no_whole_milli_token() -> None:
    # 3 per second: a milli-token every 1/3 ms. Refills at 0.2 ms steps must add up exactly.
    b = RetryBudget(ratio=0, per_second=3, max=1)
    assert b.withdraw(0)
    for i in range(1, 1667):
        b.deposit(i * 0.2)
    assert not b.withdraw(333.2)
    assert b.withdraw(333.4)


def test_budget_is_thread_safe_and_process_wide() -> None:
    assert default_budget() is default_budget()
    b = RetryBudget(ratio=0, per_second=0, max=100)
    taken = []

    def worker() -> None:
        taken.append(sum(b.withdraw(0) for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 100
