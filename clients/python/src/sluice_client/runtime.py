"""What the client needs from the outside world, injected so tests decide time and chance: a
:class:`Clock`, a :class:`Sleeper` (and :class:`AsyncSleeper`), a :class:`Jitter` source.
Every duration is in milliseconds."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Optional, Protocol


class Clock(Protocol):
    def now_ms(self) -> float:
        """A monotonic reading in milliseconds since some fixed start."""

    def epoch_s(self) -> float:
        """The wall clock, seconds since the epoch (for ``Retry-After`` dates)."""


class Sleeper(Protocol):
    def sleep(self, ms: float) -> None: ...


class AsyncSleeper(Protocol):
    async def sleep(self, ms: float) -> None: ...


class Jitter(Protocol):
    def draw(self, upto_ms: float) -> float:
        """A duration in ``[0, upto_ms]``."""


class SystemClock:
    """``time.monotonic`` and ``time.time``."""

    def now_ms(self) -> float:
        return time.monotonic() * 1000.0

    def epoch_s(self) -> float:
        return time.time()


class ThreadSleeper:
    """``time.sleep``."""

    def sleep(self, ms: float) -> None:
        if ms > 0:
            time.sleep(ms / 1000.0)


class AsyncioSleeper:
    """``asyncio.sleep``."""

    async def sleep(self, ms: float) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000.0)


class RandomJitter:
    """Uniform full jitter from its own ``random.Random`` (seedable for reproducible runs)."""

    def __init__(self, seed: Optional[int] = None) -> None:
        self._random = random.Random(seed)

    def draw(self, upto_ms: float) -> float:
        return self._random.random() * upto_ms


class FixedJitter:
    """Always the same fraction of the range: ``draw(x) = fraction × x`` (tests, replays)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def draw(self, upto_ms: float) -> float:
        return self.fraction * upto_ms
