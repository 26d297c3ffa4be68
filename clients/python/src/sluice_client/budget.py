"""A retry budget (behaviour.md §2): retries may be at most a fraction of the requests made, plus
a small floor per second. Back-off spreads one client's retries in time; the budget bounds how
many a whole process makes when the service says "later" to everyone at once, so retries never
multiply the load that caused the refusals."""

from __future__ import annotations

import threading
from typing import Optional

_ONE = 1000


def _milli(x: float) -> int:
    return round(max(x, 0.0) * _ONE)


class RetryBudget:
    """Token bucket of retries in thousandths (integer arithmetic, so ten requests at 0.1 earn
    exactly one retry). Thread-safe; share one instance between every client of a process
    (:func:`default_budget` is that instance unless you pass another)."""

    def __init__(self, ratio: float = 0.2, per_second: float = 1.0, max: float = 10.0) -> None:
        self._per_request = _milli(ratio)
        self._per_second = _milli(per_second)
        self._max = _milli(max)
        self._milli = self._max
        # Clock of the last refill in microseconds × per_second (milli-tokens per second), so
        # one earned milli-token is exactly 1_000_000 units and refills stay exact integers.
        self._at = 0
        self._lock = threading.Lock()

    def deposit(self, now_ms: float) -> None:
        """A new call was made at ``now_ms``: earns ``ratio`` of a retry."""
        with self._lock:
            self._refill(now_ms)
            self._milli = min(self._milli + self._per_request, self._max)

    def withdraw(self, now_ms: float) -> bool:
        """Takes one retry at ``now_ms``; ``False`` when the budget is spent."""
        with self._lock:
            self._refill(now_ms)
            if self._milli >= _ONE:
                self._milli -= _ONE
                return True
            return False

    @property
    def tokens(self) -> float:
        """Retries available now (without a refill), for metrics and tests."""
        return self._milli / _ONE

    def _refill(self, now_ms: float) -> None:
        now_us = round(now_ms * 1000)
        if self._per_second == 0:
            self._at = max(self._at, now_us)
            return
        now = now_us * self._per_second
        if now <= self._at:
            return
        earned = (now - self._at) // 1_000_000
        self._milli = min(self._milli + earned, self._max)
        # Only the time those whole milli-tokens took is spent; the rest stays owed.
        self._at += earned * 1_000_000


_default: Optional[RetryBudget] = None
_default_lock = threading.Lock()


def default_budget() -> RetryBudget:
    """The process-wide budget every client shares unless given its own."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RetryBudget()
        return _default
