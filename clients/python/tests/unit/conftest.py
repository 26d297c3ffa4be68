"""Shared helpers: a manual clock that only sleeping moves, recording every sleep."""

from __future__ import annotations

from typing import List

import pytest


class ManualTime:
    """A clock (ms) that moves only when something sleeps on it; implements Clock, Sleeper and
    AsyncSleeper."""

    def __init__(self, now_ms: float = 0.0, epoch_s: float = 1_796_000_000.0) -> None:
        self.now = now_ms
        self.epoch_start = epoch_s
        self.slept: List[float] = []

    def now_ms(self) -> float:
        return self.now

    def epoch_s(self) -> float:
        return self.epoch_start + self.now / 1000.0

    def sleep(self, ms: float) -> None:
        self.slept.append(ms)
        self.now += ms

    def advance(self, ms: float) -> None:
        self.now += ms


class AsyncManualTime(ManualTime):
    async def sleep(self, ms: float) -> None:  # type: ignore[override]
        self.slept.append(ms)
        self.now += ms


@pytest.fixture
def time() -> ManualTime:
    return ManualTime()
