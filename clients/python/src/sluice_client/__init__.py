"""A client for APIs that Sluice protects, directly (``POST /json``) or behind Envoy or NGINX,
that behaves the way the answers ask (the shared specification is ``clients/behaviour.md``):

- honours ``Retry-After`` and the RFC 9457 problem document's ``retry_after``: a retry is never
  earlier than the server said; capped exponential back-off with full jitter on top;
- never retries a quota (``kind: quota`` or 402), and hands back a wait longer than ``max_wait``
  instead of sleeping it;
- a :class:`RetryBudget` shared by the whole process bounds retries to a fraction of requests;
- a :class:`Pacer` spreads requests under the limit the rate-limit headers announce; a
  :class:`WorkQueue` releases jobs at that rate; a :class:`CircuitBreaker` stops calling a
  service that does not answer;
- adapters for httpx (:class:`SluiceTransport`, :class:`AsyncSluiceTransport`) and requests
  (:class:`SluiceAdapter`), leases (:class:`Leases`, :class:`AsyncLeases`), reports of the
  app's calls for adaptive limits (:class:`Reporter`, :class:`AsyncReporter`) and optional
  OpenTelemetry.

Time, sleeping and chance are injected, so tests prove the timing without sleeping. Nothing here
needs a third-party package; the adapters and leases import theirs when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .breaker import CircuitBreaker, CircuitOpen
from .budget import RetryBudget, default_budget
from .headers import Problem, RateView, parse_problem, rate_view, retry_after_ms
from .pacer import Pacer, PacerSettings
from .policy import RetryPolicy, Stop, Verdict, verdict
from .queue import AsyncWorkQueue, QueueEmpty, QueueFull, Taken, WorkQueue
from .retry import Answer, Backoff, Failed, Reply
from .runtime import (
    AsyncioSleeper,
    AsyncSleeper,
    Clock,
    FixedJitter,
    Jitter,
    RandomJitter,
    Sleeper,
    SystemClock,
    ThreadSleeper,
)

if TYPE_CHECKING:
    from .httpx_transport import AsyncSluiceTransport, SluiceTransport
    from .leases import AsyncLeases, Lease, LeaseError, LeaseRefused, Leases
    from .reports import AsyncReporter, Report, ReportCounts, Reporter
    from .requests_adapter import SluiceAdapter

__version__ = "0.1.0"

# Names whose modules import an optional package: loaded on first use, so `import
# sluice_client` works with neither httpx nor requests installed.
_LAZY = {
    "SluiceTransport": "httpx_transport",
    "AsyncSluiceTransport": "httpx_transport",
    "SluiceAdapter": "requests_adapter",
    "Leases": "leases",
    "AsyncLeases": "leases",
    "Lease": "leases",
    "LeaseError": "leases",
    "LeaseRefused": "leases",
    "Reporter": "reports",
    "AsyncReporter": "reports",
    "Report": "reports",
    "ReportCounts": "reports",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sluice_client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)


def outcome(response: object) -> Answer[Any] | None:
    """The :class:`Answer` of a response that came through a Sluice adapter (httpx:
    ``response.extensions["sluice"]``; requests: ``response.sluice``)."""
    extensions = getattr(response, "extensions", None)
    found = extensions.get("sluice") if isinstance(extensions, dict) else None
    if found is None:
        found = getattr(response, "sluice", None)
    return found if isinstance(found, Answer) else None


__all__ = [
    "Answer",
    "AsyncLeases",
    "AsyncReporter",
    "AsyncSleeper",
    "AsyncSluiceTransport",
    "AsyncWorkQueue",
    "AsyncioSleeper",
    "Backoff",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "Failed",
    "FixedJitter",
    "Jitter",
    "Lease",
    "LeaseError",
    "LeaseRefused",
    "Leases",
    "Pacer",
    "PacerSettings",
    "Problem",
    "QueueEmpty",
    "QueueFull",
    "RandomJitter",
    "RateView",
    "Reply",
    "Report",
    "ReportCounts",
    "Reporter",
    "RetryBudget",
    "RetryPolicy",
    "Sleeper",
    "SluiceAdapter",
    "SluiceTransport",
    "Stop",
    "SystemClock",
    "Taken",
    "ThreadSleeper",
    "Verdict",
    "WorkQueue",
    "default_budget",
    "outcome",
    "parse_problem",
    "rate_view",
    "retry_after_ms",
    "verdict",
]
