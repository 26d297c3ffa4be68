"""Pacing (behaviour.md §3): spread requests so they stay under the limit the server announces,
instead of learning it from 429s. Every time is in milliseconds on the caller's clock."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Optional

from .headers import RateView


@dataclass(frozen=True)
class PacerSettings:
    #: Fraction of the announced rate to aim for, so clock skew and other clients leave room.
    safety: float = 0.9
    #: The slowest the pacer gets after refusals, as a fraction of the announced rate.
    min_factor: float = 0.1
    #: Rate multiplier applied on each refusal.
    decrease: float = 0.5
    #: Rate fraction won back per window without a refusal.
    increase: float = 0.1


class Pacer:
    """Thread-safe; share one between the clients that talk to the same limit."""

    def __init__(self, settings: Optional[PacerSettings] = None) -> None:
        self.settings = settings or PacerSettings()
        self.limit: Optional[int] = None
        self.window_ms: Optional[float] = None
        self.remaining: Optional[int] = None
        self.reset_at: Optional[float] = None
        self.hold_until = 0.0
        self.next_at = 0.0
        self.factor = 1.0
        self.factor_since = 0.0
        self._lock = threading.Lock()

    def observe(self, view: RateView, now: float) -> None:
        """Learns from an answer's rate-limit headers."""
        with self._lock:
            if view.window_s is not None:
                self.window_ms = view.window_s * 1000.0
            elif view.reset_s is not None and view.reset_s > 0:
                # A reset is never further away than its window is long.
                self.window_ms = max(self.window_ms or 0.0, view.reset_s * 1000.0)
            if view.limit is not None:
                self.limit = view.limit
            if view.remaining is not None and view.reset_s is not None:
                self.remaining = view.remaining
                self.reset_at = now + view.reset_s * 1000.0

    def refused(self, retry_after_ms: Optional[float], now: float) -> None:
        """A throttling refusal (429 or 503, not a quota): hold until the server's time and slow
        down."""
        with self._lock:
            if retry_after_ms is not None:
                self.hold_until = max(self.hold_until, now + retry_after_ms)
            s = self.settings
            self.factor = max(s.min_factor, self.factor * s.decrease)
            self.factor_since = now

    def interval(self, now: float) -> float:
        """The spacing between requests now: ``window / (limit × safety × factor)``."""
        with self._lock:
            return self._interval(now)

    def reserve(self, now: float) -> float:
        """Takes the next slot; returns the wait before it (0 for now)."""
        with self._lock:
            return self._reserve(now)

    def reserve_within(self, now: float, max_wait: float) -> Optional[float]:
        """Like :meth:`reserve` when the wait is at most ``max_wait``; else takes nothing and
        returns ``None``."""
        with self._lock:
            if self._peek(now) > max_wait:
                return None
            return self._reserve(now)

    def peek(self, now: float) -> float:
        """The wait :meth:`reserve` would return, changing nothing."""
        with self._lock:
            return self._peek(now)

    def _interval(self, now: float) -> float:
        limit, window = self.limit, self.window_ms
        if limit is None or limit <= 0 or window is None:
            return 0.0
        s = self.settings
        if self.factor < 1.0:
            n = math.floor((now - self.factor_since) / window) if window > 0 else 0
            if n > 0:
                self.factor = min(1.0, self.factor + s.increase * n)
                self.factor_since += n * window
        return window / (limit * s.safety * self.factor)

    def _start(self, now: float) -> float:
        t = max(now, self.hold_until)
        if self.remaining is not None and self.reset_at is not None:
            if self.reset_at <= t:
                pass
            elif self.remaining <= 0:
                t = self.reset_at
        return max(t, self.next_at)

    def _peek(self, now: float) -> float:
        return self._start(now) - now

    def _reserve(self, now: float) -> float:
        t = max(now, self.hold_until)
        if self.remaining is not None and self.reset_at is not None:
            if self.reset_at <= t:
                # That window is over: what it had left says nothing about the next.
                self.remaining = self.reset_at = None
            elif self.remaining <= 0:
                t = self.reset_at
                self.remaining = self.reset_at = None
        t = max(t, self.next_at)
        self.next_at = t + self._interval(now)
        if self.remaining is not None:
            self.remaining -= 1
        return t - now
