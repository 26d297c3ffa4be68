"""The circuit breaker (behaviour.md §5): after ``threshold`` consecutive transport failures,
calls fail at once for ``open_ms``, then one trial call decides whether to close again."""

from __future__ import annotations

import threading
from typing import Callable, List, Optional, Tuple

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitOpen(Exception):
    """The breaker refused the call: nothing was sent."""


class CircuitBreaker:
    """Thread-safe. ``on_change(from, to)`` sees every state change, after the change, outside
    the breaker's lock."""

    def __init__(
        self,
        threshold: int = 5,
        open_ms: float = 5_000,
        on_change: Optional[Callable[[str, str], None]] = None,
    ) -> None:
        self.threshold = threshold
        self.open_ms = open_ms
        self.on_change = on_change
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_out = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def allow(self, now: float) -> bool:
        """Whether a call may go out now."""
        changes: List[Tuple[str, str]] = []
        with self._lock:
            if self._state == CLOSED:
                allowed = True
            elif self._state == OPEN:
                allowed = now >= self._opened_at + self.open_ms
                if allowed:
                    self._move(HALF_OPEN, changes)
                    self._trial_out = True
            else:
                allowed = not self._trial_out
                self._trial_out = True
        self._notify(changes)
        return allowed

    def success(self, now: float) -> None:
        """Any HTTP answer, whatever its status."""
        changes: List[Tuple[str, str]] = []
        with self._lock:
            self._failures = 0
            self._trial_out = False
            if self._state != CLOSED:
                self._move(CLOSED, changes)
        self._notify(changes)

    def failure(self, now: float) -> None:
        """No HTTP answer (connection refused, reset, timed out)."""
        changes: List[Tuple[str, str]] = []
        with self._lock:
            if self._state == HALF_OPEN:
                self._trial_out = False
                self._opened_at = now
                self._move(OPEN, changes)
            elif self._state == CLOSED:
                self._failures += 1
                if self._failures >= self.threshold:
                    self._opened_at = now
                    self._move(OPEN, changes)
        self._notify(changes)

    def _move(self, to: str, changes: List[Tuple[str, str]]) -> None:
        changes.append((self._state, to))
        self._state = to

    def _notify(self, changes: List[Tuple[str, str]]) -> None:
        if self.on_change is not None:
            for before, after in changes:
                self.on_change(before, after)
