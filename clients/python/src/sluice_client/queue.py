"""The work queue (behaviour.md §4): a bounded FIFO of jobs released at the pacer's rate, which
drops a job whose deadline would pass before its turn instead of sending it late.

:meth:`WorkQueue.take` is the deterministic core; :meth:`WorkQueue.pop` (threads) and
:meth:`AsyncWorkQueue.pop` (asyncio) wait for a job and sleep its pacing wait."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Generic, List, Optional, Tuple, TypeVar

from .pacer import Pacer
from .runtime import AsyncioSleeper, AsyncSleeper, Clock, Sleeper, SystemClock, ThreadSleeper

T = TypeVar("T")


class QueueFull(Exception):
    """``max_depth`` jobs are already waiting; nothing was queued."""


class QueueEmpty(TimeoutError):
    """``pop`` timed out with no job to hand out."""


@dataclass
class Taken(Generic[T]):
    """One turn of the queue: the job released (``found`` is false when none waited), the pacing
    wait before it may go out (ms), and the jobs dropped on the way because their deadline
    would have passed."""

    found: bool
    item: Optional[T] = None
    wait_ms: float = 0.0
    expired: List[T] = field(default_factory=list)


class WorkQueue(Generic[T]):
    """Thread-safe. ``on_expired`` is called for every job dropped for its deadline."""

    def __init__(
        self,
        pacer: Optional[Pacer] = None,
        max_depth: int = 1000,
        *,
        clock: Optional[Clock] = None,
        sleeper: Optional[Sleeper] = None,
        on_expired: Optional[Callable[[T], None]] = None,
    ) -> None:
        self.pacer = pacer if pacer is not None else Pacer()
        self.max_depth = max_depth
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.sleeper: Sleeper = sleeper if sleeper is not None else ThreadSleeper()
        self.on_expired = on_expired
        self._items: Deque[Tuple[T, Optional[float]]] = collections.deque()
        self._lock = threading.Lock()
        self._pushed = threading.Condition(self._lock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def push(self, item: T, deadline_at: Optional[float] = None) -> None:
        """Queues ``item``; ``deadline_at`` is a reading of the queue's clock (ms) after which
        sending it is pointless. Raises :class:`QueueFull` when ``max_depth`` jobs wait."""
        with self._lock:
            if len(self._items) >= self.max_depth:
                raise QueueFull(f"{self.max_depth} jobs already waiting")
            self._items.append((item, deadline_at))
            self._pushed.notify()
        self._after_push()

    def _after_push(self) -> None:
        pass

    def take(self, now: float) -> Taken[T]:
        """The next job that can still make its deadline, reserving its pacing slot."""
        with self._lock:
            taken = self._take(now)
        self._report(taken.expired)
        return taken

    def _take(self, now: float) -> Taken[T]:
        expired: List[T] = []
        while self._items:
            release = now + self.pacer.peek(now)
            item, deadline = self._items[0]
            if deadline is not None and deadline < release:
                self._items.popleft()
                expired.append(item)
                continue
            self._items.popleft()
            return Taken(True, item, self.pacer.reserve(now), expired)
        return Taken(False, None, 0.0, expired)

    def _report(self, expired: List[T]) -> None:
        if self.on_expired is not None:
            for item in expired:
                self.on_expired(item)

    def pop(self, timeout: Optional[float] = None) -> Taken[T]:
        """Waits up to ``timeout`` seconds (for ever when ``None``) for a job, sleeps its pacing
        wait, and returns it. Raises :class:`QueueEmpty` on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        expired: List[T] = []
        while True:
            timed_out = False
            with self._lock:
                taken = self._take(self.clock.now_ms())
                if not taken.found:
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        timed_out = True
                    else:
                        self._pushed.wait(left)
            self._report(taken.expired)
            expired.extend(taken.expired)
            if timed_out:
                raise QueueEmpty("no job arrived in time")
            if taken.found:
                break
        self.sleeper.sleep(taken.wait_ms)
        taken.expired = expired
        return taken


class AsyncWorkQueue(WorkQueue[T]):
    """The same queue for asyncio: ``await queue.pop(timeout)``. ``push`` stays synchronous and
    may be called from any thread."""

    def __init__(
        self,
        pacer: Optional[Pacer] = None,
        max_depth: int = 1000,
        *,
        clock: Optional[Clock] = None,
        async_sleeper: Optional[AsyncSleeper] = None,
        on_expired: Optional[Callable[[T], None]] = None,
    ) -> None:
        super().__init__(pacer, max_depth, clock=clock, on_expired=on_expired)
        self.async_sleeper: AsyncSleeper = (
            async_sleeper if async_sleeper is not None else AsyncioSleeper()
        )
        self._waiters: List[Tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _after_push(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def pop(self, timeout: Optional[float] = None) -> Taken[T]:  # type: ignore[override]
        """Waits up to ``timeout`` seconds for a job, sleeps its pacing wait, and returns it.
        Raises :class:`QueueEmpty` on timeout."""
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        expired: List[T] = []
        while True:
            event = asyncio.Event()
            with self._lock:
                taken = self._take(self.clock.now_ms())
                expired.extend(taken.expired)
                if not taken.found:
                    self._waiters.append((loop, event))
            self._report(taken.expired)
            if taken.found:
                break
            left = None if end is None else end - loop.time()
            if left is not None and left <= 0:
                raise QueueEmpty("no job arrived in time")
            try:
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                raise QueueEmpty("no job arrived in time") from None
        await self.async_sleeper.sleep(taken.wait_ms)
        taken.expired = expired
        return taken
