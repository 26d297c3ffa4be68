"""Reports for adaptive limits (behaviour.md §9, docs/adaptive.md): the app records the latency
and status of each call to an upstream an adaptive rule protects, and a :class:`Reporter` posts
them to Sluice's ``POST /reports`` in batches, with httpx (imported when a reporter is made:
install ``sluice-client[httpx]``).

``record`` never blocks on I/O: it checks the report and appends it to a bounded queue under a
lock held for the append. A report Sluice would refuse is dropped there, because Sluice refuses a
whole batch for one impossible report. A batch that fails is dropped, never retried: Sluice
decides each interval from that interval's reports, so a late one would only blur the next."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Literal, Optional, Tuple

from .leases import Descriptor, _entries, _need_httpx

if TYPE_CHECKING:
    import httpx

#: Sluice's own cap on reports per batch.
MAX_BATCH = 5000
#: The most entries Sluice takes in a report's descriptor.
MAX_ENTRIES = 64
#: The longest latency Sluice takes: an hour.
MAX_LATENCY_MS = 3_600_000.0

Recorded = Literal["pending", "invalid", "overflow"]


@dataclass(frozen=True)
class Report:
    descriptor: Tuple[Tuple[str, str], ...]
    latency_ms: float
    status: int

    def valid(self) -> bool:
        """Whether Sluice would take it (a 400 for the whole batch otherwise)."""
        latency = self.latency_ms
        return (
            0 < len(self.descriptor) <= MAX_ENTRIES
            and isinstance(latency, (int, float))
            and not isinstance(latency, bool)
            and math.isfinite(latency)
            and 0 <= latency <= MAX_LATENCY_MS
            and isinstance(self.status, int)
            and 100 <= self.status <= 599
        )

    def size(self) -> int:
        """The estimate of its encoded size that batches are cut by."""
        return 64 + sum(
            16 + len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in self.descriptor
        )

    def wire(self) -> Dict[str, Any]:
        return {
            "descriptor": [{"key": k, "value": v} for k, v in self.descriptor],
            "latency_ms": self.latency_ms,
            "status": self.status,
        }


@dataclass
class ReportCounts:
    """``flush`` returns one flush's ``sent``, ``failed``, ``accepted`` and ``unmatched``;
    ``counts()`` the totals."""

    #: In batches Sluice answered 200.
    sent: int = 0
    #: In batches that got no 200 (no answer, 4xx, 5xx): dropped.
    failed: int = 0
    #: Of those sent, counted by an adaptive rule (Sluice's answer).
    accepted: int = 0
    #: Of those sent, matching no adaptive rule (Sluice's answer).
    unmatched: int = 0
    #: Dropped at record time: Sluice would refuse them.
    invalid: int = 0
    #: Dropped at record time: ``max_pending`` were waiting.
    overflow: int = 0
    #: Waiting for a flush now.
    pending: int = 0


def _count(answer: Any, name: str) -> int:
    value = answer.get(name) if isinstance(answer, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass
class _Buffer:
    """The deterministic core both reporters share: what ``record`` keeps, how a flush cuts it."""

    domain: str
    max_pending: int
    max_batch: int
    max_batch_bytes: int
    pending: Deque[Report] = field(default_factory=deque)
    totals: ReportCounts = field(default_factory=ReportCounts)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, descriptor: Descriptor, latency_ms: float, status: int) -> Recorded:
        try:
            report = Report(_entries(descriptor), latency_ms, status)
            ok = report.valid()
        except (TypeError, ValueError):
            ok = False
        with self.lock:
            if not ok:
                self.totals.invalid += 1
                return "invalid"
            if len(self.pending) >= self.max_pending:
                self.totals.overflow += 1
                return "overflow"
            self.pending.append(report)
            return "pending"

    def take_batches(self) -> List[List[Report]]:
        with self.lock:
            pending, self.pending = self.pending, deque()
        most = min(max(self.max_batch, 1), MAX_BATCH)
        batches: List[List[Report]] = []
        size = 0
        for report in pending:
            n = report.size()
            if batches and len(batches[-1]) < most and size + n <= self.max_batch_bytes:
                batches[-1].append(report)
                size += n
            else:
                batches.append([report])
                size = n
        return batches

    def body(self, batch: List[Report]) -> bytes:
        doc = {"domain": self.domain, "reports": [r.wire() for r in batch]}
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()

    def counts(self) -> ReportCounts:
        with self.lock:
            t = self.totals
            return ReportCounts(
                t.sent, t.failed, t.accepted, t.unmatched, t.invalid, t.overflow, len(self.pending)
            )

    def outcome(self, this: ReportCounts, n: int, response: Optional[httpx.Response]) -> None:
        if response is None or response.status_code != 200:
            this.failed += n
            return
        try:
            answer = response.json()
        except ValueError:
            answer = None
        this.sent += n
        this.accepted += _count(answer, "accepted")
        this.unmatched += _count(answer, "unmatched")

    def add(self, this: ReportCounts) -> None:
        with self.lock:
            self.totals.sent += this.sent
            self.totals.failed += this.failed
            self.totals.accepted += this.accepted
            self.totals.unmatched += this.unmatched


class _Base:
    def __init__(
        self,
        base_url: str,
        domain: str,
        *,
        max_pending: int = 10_000,
        max_batch: int = 500,
        max_batch_bytes: int = 512 * 1024,
        flush_interval: float = 1.0,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/reports"
        self.flush_interval = flush_interval
        self._buffer = _Buffer(domain, max_pending, max_batch, max_batch_bytes)

    def record(self, descriptor: Descriptor, latency_ms: float, status: int) -> Recorded:
        """Buffers one call's latency (ms) and status: ``"pending"``, or dropped as
        ``"invalid"`` (Sluice would refuse it) or ``"overflow"`` (``max_pending`` waiting).
        Never blocks on I/O, never raises."""
        return self._buffer.record(descriptor, latency_ms, status)

    def counts(self) -> ReportCounts:
        """The totals so far."""
        return self._buffer.counts()

    def take_batches(self) -> List[List[Report]]:
        """Takes everything pending, cut into the batches a flush posts (for an app that posts
        them itself; ``flush`` does this and posts)."""
        return self._buffer.take_batches()

    def body(self, batch: List[Report]) -> bytes:
        """The body of ``POST /reports`` for one batch."""
        return self._buffer.body(batch)


_HEADERS = {"content-type": "application/json"}


class Reporter(_Base):
    """Reports to Sluice at ``base_url`` (its HTTP address) for ``domain``. ``client`` defaults
    to a new ``httpx.Client(timeout=timeout)`` (closed by :meth:`close`). :meth:`start` flushes
    every ``flush_interval`` seconds from a daemon thread; :meth:`close` stops it and flushes
    once more."""

    def __init__(
        self,
        base_url: str,
        domain: str,
        *,
        client: Optional[httpx.Client] = None,
        timeout: float = 5.0,
        **settings: Any,
    ) -> None:
        super().__init__(base_url, domain, **settings)
        http = _need_httpx()
        self._own = client is None
        self.client: httpx.Client = client if client is not None else http.Client(timeout=timeout)
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def flush(self) -> ReportCounts:
        """Posts what is pending, batch by batch; a batch without a 200 is dropped and counted
        in ``failed``. Never raises."""
        this = ReportCounts()
        with self._flushing:
            for batch in self.take_batches():
                response: Optional[httpx.Response] = None
                with contextlib.suppress(Exception):
                    response = self.client.post(
                        self.url, content=self.body(batch), headers=_HEADERS
                    )
                self._buffer.outcome(this, len(batch), response)
            self._buffer.add(this)
        return this

    def start(self) -> Reporter:
        """Flushes every ``flush_interval`` seconds from a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="sluice-reporter", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def close(self) -> None:
        """Stops the background flush, flushes once more, closes its own client."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.flush()
        if self._own:
            self.client.close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncReporter(_Base):
    """:class:`Reporter` for asyncio, over ``httpx.AsyncClient``: ``asyncio.create_task(
    reporter.run())`` flushes every ``flush_interval`` seconds; cancel it, then ``await
    reporter.flush()`` (or ``await reporter.aclose()``) once more."""

    def __init__(
        self,
        base_url: str,
        domain: str,
        *,
        client: Optional[httpx.AsyncClient] = None,
        timeout: float = 5.0,
        **settings: Any,
    ) -> None:
        super().__init__(base_url, domain, **settings)
        http = _need_httpx()
        self._own = client is None
        self.client: httpx.AsyncClient = (
            client if client is not None else http.AsyncClient(timeout=timeout)
        )
        self._flushing: Optional[asyncio.Lock] = None

    async def flush(self) -> ReportCounts:
        """As :meth:`Reporter.flush`."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        this = ReportCounts()
        async with self._flushing:
            for batch in self.take_batches():
                response: Optional[httpx.Response] = None
                with contextlib.suppress(Exception):
                    response = await self.client.post(
                        self.url, content=self.body(batch), headers=_HEADERS
                    )
                self._buffer.outcome(this, len(batch), response)
            self._buffer.add(this)
        return this

    async def run(self) -> None:
        """Flushes every ``flush_interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    async def aclose(self) -> None:
        """Flushes once more and closes its own client."""
        await self.flush()
        if self._own:
            await self.client.aclose()

    async def __aenter__(self) -> AsyncReporter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = [
    "MAX_BATCH",
    "MAX_ENTRIES",
    "MAX_LATENCY_MS",
    "AsyncReporter",
    "Recorded",
    "Report",
    "ReportCounts",
    "Reporter",
]
