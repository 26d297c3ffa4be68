"""Reporter.flush and AsyncReporter.flush over httpx.MockTransport: batches in order, a failed
batch dropped and counted (never retried), the background flush. The records and batch cuts
themselves are replayed from the shared fixture (test_replay.py)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Dict, List

import httpx

from sluice_client import AsyncReporter, Reporter


class Sluice:
    """A fake ``/reports`` answering each post with the next status of ``script`` (then 200)."""

    def __init__(self, *script: int) -> None:
        self.script = list(script)
        self.bodies: List[Dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/reports"
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        self.bodies.append(body)
        status = self.script.pop(0) if self.script else 200
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        n = len(body["reports"])
        return httpx.Response(status, json={"accepted": n - 1, "unmatched": 1, "dropped": 0})

    def latencies(self) -> List[List[float]]:
        return [[r["latency_ms"] for r in b["reports"]] for b in self.bodies]


def test_batches_in_order_a_failed_one_dropped_and_counted() -> None:
    sluice = Sluice(200, 503, 0, 200)
    client = httpx.Client(transport=httpx.MockTransport(sluice))
    reporter = Reporter("http://sluice.test/", "api", client=client, max_batch=2)
    for ms in range(1, 8):
        assert reporter.record({"upstream": "pay"}, ms, 200) == "pending"
    assert reporter.record({"upstream": "pay"}, 5, 700) == "invalid"
    this = reporter.flush()
    # 200 (2), 503 (2), no answer (2), 200 (1): each posted once, none retried.
    assert sluice.latencies() == [[1, 2], [3, 4], [5, 6], [7]]
    assert (this.sent, this.failed, this.accepted, this.unmatched) == (3, 4, 1, 2)
    assert sluice.bodies[0] == {
        "domain": "api",
        "reports": [
            {"descriptor": [{"key": "upstream", "value": "pay"}], "latency_ms": 1, "status": 200},
            {"descriptor": [{"key": "upstream", "value": "pay"}], "latency_ms": 2, "status": 200},
        ],
    }
    # Nothing pending: a second flush posts nothing.
    assert reporter.flush().sent == 0
    assert len(sluice.bodies) == 4
    totals = reporter.counts()
    assert (totals.sent, totals.failed, totals.invalid, totals.pending) == (3, 4, 1, 0)


def test_record_never_raises_on_nonsense() -> None:
    reporter = Reporter("http://sluice.test", "api", client=httpx.Client())
    assert reporter.record({"upstream": "pay"}, "fast", 200) == "invalid"  # type: ignore[arg-type]
    assert reporter.record({"upstream": "pay"}, True, 200) == "invalid"
    assert reporter.record({"upstream": "pay"}, 1.0, 200.5) == "invalid"  # type: ignore[arg-type]
    assert reporter.record(None, 1.0, 200) == "invalid"  # type: ignore[arg-type]
    assert reporter.counts().invalid == 4


def test_the_background_thread_flushes_and_close_flushes_the_rest() -> None:
    sluice = Sluice()
    client = httpx.Client(transport=httpx.MockTransport(sluice))
    reporter = Reporter("http://sluice.test", "api", client=client, flush_interval=0.02).start()
    reporter.record([("upstream", "pay")], 7.5, 504)
    deadline = time.monotonic() + 10
    while reporter.counts().sent == 0:
        assert time.monotonic() < deadline, "never flushed"
        time.sleep(0.005)
    reporter.record([("upstream", "pay")], 8.5, 200)
    reporter.close()
    assert [r["status"] for b in sluice.bodies for r in b["reports"]] == [504, 200]
    assert reporter.counts().sent == 2


def test_async_flush_and_run() -> None:
    async def main() -> None:
        sluice = Sluice(400)
        client = httpx.AsyncClient(transport=httpx.MockTransport(sluice))
        reporter = AsyncReporter("http://sluice.test", "api", client=client, flush_interval=0.02)
        reporter.record({"upstream": "pay"}, 1, 200)
        this = await reporter.flush()
        assert (this.sent, this.failed) == (0, 1)
        task = asyncio.create_task(reporter.run())
        reporter.record({"upstream": "pay"}, 2, 200)
        for _ in range(500):
            if reporter.counts().sent:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        reporter.record({"upstream": "pay"}, 3, 200)
        await reporter.aclose()
        assert sluice.latencies() == [[1], [2], [3]]
        assert reporter.counts().sent == 2

    asyncio.run(main())
