"""Settings of the end-to-end tests: every one comes from the environment, and a missing one is a
failure, never a skip (a harness that forgot one must not pass with no test run)."""

from __future__ import annotations

import json
import os
import secrets
import time
from typing import Any, Dict, List


def env(name: str) -> str:
    value = os.environ.get(name)
    assert value, f"{name} is not set: the end-to-end tests need the running services"
    return value.rstrip("/")


def limit() -> int:
    return int(env("SLUICE_E2E_LIMIT"))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def report(summary: Dict[str, Any]) -> None:
    """The one line per test the harness quotes."""
    print(f"SDK-E2E python {json.dumps(summary, sort_keys=True)}", flush=True)


def per_second(hits_ms: List[int]) -> Dict[int, int]:
    """Hits per epoch second, as the upstream stamped them."""
    counts: Dict[int, int] = {}
    for ms in hits_ms:
        counts[ms // 1000] = counts.get(ms // 1000, 0) + 1
    return counts


def skew_ms() -> int:
    """How long after Sluice's decision a request may reach the upstream (NGINX in between), in
    ms: SLUICE_E2E_SKEW_MS, 5 by default; 0 makes the check strict."""
    return int(os.environ.get("SLUICE_E2E_SKEW_MS", "5"))


def per_decision_second(hits_ms: List[int], limit: int, skew: int) -> Dict[int, int]:
    """Hits per second as Sluice may have counted them. Sluice decides a request a moment before
    the upstream stamps it, so a hit stamped within ``skew`` ms after a second starts may have
    been decided (and counted) in the second before: such hits go to the previous second while
    it has room under ``limit``. With ``skew`` 0 this is :func:`per_second`."""
    counts = per_second(hits_ms)
    early: Dict[int, int] = {}
    for ms in hits_ms:
        if ms % 1000 < skew:
            early[ms // 1000] = early.get(ms // 1000, 0) + 1
    for second in sorted(counts):
        room = limit - counts.get(second - 1, 0)
        moved = max(0, min(room, early.get(second, 0)))
        if moved and counts[second] > limit:
            counts[second] -= moved
            counts[second - 1] = counts.get(second - 1, 0) + moved
    return counts


class RecordingSleeper:
    """Really sleeps, and records every sleep (ms)."""

    def __init__(self) -> None:
        self.slept: List[float] = []

    def sleep(self, ms: float) -> None:
        self.slept.append(ms)
        if ms > 0:
            time.sleep(ms / 1000.0)
