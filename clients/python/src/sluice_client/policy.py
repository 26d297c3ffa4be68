"""When to retry and how long to wait (behaviour.md §2): capped exponential back-off with full
jitter, never earlier than the server asked, never for a spent quota."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from .headers import Problem


class Stop(str, enum.Enum):
    """Why the client handed an answer (or an error) back instead of trying again."""

    #: ``kind: quota`` or a 402: spent until its window resets, so never retried or waited for.
    QUOTA = "quota"
    #: A status retrying cannot change (400, 403, 404, ...).
    NOT_RETRYABLE = "not_retryable"
    #: ``max_attempts`` reached.
    ATTEMPTS = "attempts"
    #: The shared retry budget is spent.
    BUDGET = "budget"
    #: The wait (back-off or pacing) is longer than ``max_wait``.
    WAIT_TOO_LONG = "wait_too_long"


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings; every duration in milliseconds."""

    #: Attempts in all, the first included.
    max_attempts: int = 4
    #: The back-off bound before the first retry; it doubles with each retry ...
    base_ms: float = 100
    #: ... up to this.
    cap_ms: float = 10_000
    #: The longest wait worth making: a server asking for longer (a daily quota's reset) gets an
    #: immediate answer instead of a caller stuck in a sleep.
    max_wait_ms: float = 60_000

    def bound(self, retry: int) -> float:
        """``min(cap, base × 2^(retry-1))``, the jitter range before retry number ``retry``."""
        # 2^62 × any sane base is far above any cap; the exponent limit keeps it a float.
        return float(min(self.cap_ms, self.base_ms * 2 ** min(max(retry - 1, 0), 62)))

    def wait(self, server_ms: Optional[float], jitter_ms: float) -> float:
        """The wait before a retry: the server's minimum (when it gave one) plus the jitter."""
        return jitter_ms if server_ms is None else server_ms + jitter_ms


@dataclass(frozen=True)
class Verdict:
    """What an answer means for the retry loop: ``done``, ``retry`` (with the server's minimum
    wait in ms, when it gave one) or ``stop`` (with the reason)."""

    action: str
    server_ms: Optional[float] = None
    stop: Optional[Stop] = None


DONE = Verdict("done")


def verdict(status: int, retry_after_ms: Optional[float], problem: Optional[Problem]) -> Verdict:
    """Reads one answer: below 400 done; 402 or ``kind: quota`` stop (quota); statuses other than
    429, 502, 503 and 504 stop (not retryable); those are retried no earlier than the later of
    ``Retry-After`` and the document's ``retry_after``."""
    if status < 400:
        return DONE
    if status == 402 or (problem is not None and problem.kind == "quota"):
        return Verdict("stop", stop=Stop.QUOTA)
    if status not in (429, 502, 503, 504):
        return Verdict("stop", stop=Stop.NOT_RETRYABLE)
    server: Optional[float] = retry_after_ms
    if problem is not None and problem.retry_after is not None:
        from_doc = problem.retry_after * 1000.0
        server = from_doc if server is None else max(server, from_doc)
    return Verdict("retry", server_ms=server)
