"""Pacing rates, queue order and deadlines, breaker transitions and hooks."""

from __future__ import annotations

import asyncio
import threading
from typing import List, Tuple

import pytest

from sluice_client import (
    AsyncWorkQueue,
    CircuitBreaker,
    Pacer,
    QueueEmpty,
    QueueFull,
    RateView,
    WorkQueue,
)

from .conftest import AsyncManualTime, ManualTime


def test_pacer_spaces_requests_at_the_announced_rate_with_safety() -> None:
    pacer = Pacer()
    assert pacer.reserve(0) == 0, "nothing known: no wait"
    pacer.observe(RateView(limit=10, remaining=None, reset_s=None, window_s=1), 0)
    # 10 per second at 0.9: one every 111.1 ms.
    starts = []
    now = 0.0
    for _ in range(20):
        now += pacer.reserve(now)
        starts.append(now)
    gaps = {round(b - a, 3) for a, b in zip(starts, starts[1:])}
    assert gaps == {round(1000 / 9, 3)}
    # 9 a second on average; never more than the limit in any one-second window.
    assert max(sum(1 for s in starts if w <= s < w + 1000) for w in starts) <= 10
    assert starts[-1] == pytest.approx(19 * 1000 / 9)


def test_pacer_waits_for_the_reset_when_nothing_remains_and_holds_after_refusal() -> None:
    pacer = Pacer()
    pacer.observe(RateView(limit=5, remaining=0, reset_s=2, window_s=None), 1000)
    assert pacer.window_ms == 2000
    assert pacer.reserve(1000) == 2000
    pacer.refused(3000, 5000)
    assert pacer.factor == 0.5
    assert pacer.peek(5000) == 3000
    # The factor halves down to min_factor and climbs back by 0.1 a window.
    for _ in range(10):
        pacer.refused(None, 5000)
    assert pacer.factor == pytest.approx(0.1)
    pacer.interval(5000 + 3 * 2000)
    assert pacer.factor == pytest.approx(0.4)
    pacer.interval(5000 + 100 * 2000)
    assert pacer.factor == 1.0


def test_pacer_is_thread_safe() -> None:
    pacer = Pacer()
    pacer.observe(RateView(limit=100, window_s=1), 0)
    waits: List[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            w = pacer.reserve(0)
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    step = 1000 / 90
    assert sorted(round(w / step) for w in waits) == list(range(400))


def test_queue_is_fifo_bounded_and_drops_what_would_miss_its_deadline() -> None:
    pacer = Pacer()
    pacer.observe(RateView(limit=1, window_s=1), 0)  # one every 1111 ms
    expired: List[str] = []
    q: WorkQueue[str] = WorkQueue(pacer, max_depth=3, on_expired=expired.append)
    q.push("a")
    q.push("b", deadline_at=500)
    q.push("c", deadline_at=5000)
    with pytest.raises(QueueFull):
        q.push("d")
    assert len(q) == 3
    first = q.take(0)
    assert (first.item, first.wait_ms, first.expired) == ("a", 0, [])
    second = q.take(0)
    assert (second.item, second.expired) == ("c", ["b"])
    assert second.wait_ms == pytest.approx(1000 / 0.9)
    assert expired == ["b"]
    assert not q.take(0).found


def test_pop_sleeps_the_pacing_wait_and_times_out() -> None:
    time = ManualTime()
    pacer = Pacer()
    pacer.observe(RateView(limit=2, window_s=1), 0)
    q: WorkQueue[int] = WorkQueue(pacer, clock=time, sleeper=time)
    for i in range(3):
        q.push(i)
    assert [q.pop().item for _ in range(3)] == [0, 1, 2]
    assert time.slept == [0, pytest.approx(1000 / 1.8), pytest.approx(1000 / 1.8)]
    with pytest.raises(QueueEmpty):
        q.pop(timeout=0.01)


def test_pop_wakes_up_on_a_push_from_another_thread() -> None:
    q: WorkQueue[str] = WorkQueue(Pacer())
    timer = threading.Timer(0.05, q.push, args=("late",))
    timer.start()
    assert q.pop(timeout=5).item == "late"
    timer.join()


def test_async_queue_pops_in_order_and_times_out() -> None:
    time = AsyncManualTime()

    async def main() -> Tuple[List[str], List[str]]:
        pacer = Pacer()
        pacer.observe(RateView(limit=10, window_s=1), 0)
        dropped: List[str] = []
        q: AsyncWorkQueue[str] = AsyncWorkQueue(
            pacer, 4, clock=time, async_sleeper=time, on_expired=dropped.append
        )
        q.push("x")
        q.push("gone", deadline_at=-1)
        q.push("y")
        got = [(await q.pop(1)).item or "", (await q.pop(1)).item or ""]
        loop = asyncio.get_running_loop()
        loop.call_later(0.02, q.push, "z")
        got.append((await q.pop(2)).item or "")
        with pytest.raises(QueueEmpty):
            await q.pop(0.01)
        return got, dropped

    got, dropped = asyncio.run(main())
    assert got == ["x", "y", "z"]
    assert dropped == ["gone"]


def test_breaker_opens_half_opens_and_closes_with_hooks() -> None:
    changes: List[Tuple[str, str]] = []
    b = CircuitBreaker(threshold=3, open_ms=1000, on_change=lambda a, z: changes.append((a, z)))
    for t in range(2):
        b.failure(t)
    b.success(2)
    for t in range(3):
        assert b.allow(10 + t)
        b.failure(10 + t)
    assert b.state == "open"
    assert not b.allow(500)
    assert b.allow(1012), "the trial"
    assert b.state == "half_open"
    assert not b.allow(1013), "only one trial at a time"
    b.failure(1014)
    assert b.state == "open"
    assert not b.allow(2000)
    assert b.allow(2014)
    b.success(2015)
    assert b.state == "closed"
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
