"""Optional OpenTelemetry (behaviour.md §7). ``opentelemetry`` is imported only when a
:class:`Telemetry` is made, and :func:`auto` makes one only when the package is importable:
without it, nothing is imported and nothing is recorded.

Per call: one span ``sluice.client.request`` (attributes ``sluice.app_id``,
``sluice.tenant_id``, ``sluice.lease_id`` when set, ``sluice.attempts``, ``sluice.stopped``,
``http.response.status_code``); counters ``sluice.client.requests`` (attribute ``outcome``:
``ok``, ``refused``, ``error``) and ``sluice.client.retries``; histogram ``sluice.client.wait``
(seconds slept, pacing and back-off)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

SCOPE = "sluice_client"


@dataclass(frozen=True)
class Identity:
    """Who is calling, as set in the client's options; each becomes a span attribute when set."""

    app_id: Optional[str] = None
    tenant_id: Optional[str] = None
    lease_id: Optional[str] = None

    def attributes(self) -> Dict[str, str]:
        named = {
            "sluice.app_id": self.app_id,
            "sluice.tenant_id": self.tenant_id,
            "sluice.lease_id": self.lease_id,
        }
        return {k: v for k, v in named.items() if v is not None}


class Telemetry:
    """Records calls through OpenTelemetry. Without providers, the global ones are used."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        self._tracer: Any = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter: Any = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self._requests: Any = meter.create_counter(
            "sluice.client.requests", unit="{request}", description="Calls made, by outcome"
        )
        self._retries: Any = meter.create_counter(
            "sluice.client.retries", unit="{retry}", description="Retries made"
        )
        self._wait: Any = meter.create_histogram(
            "sluice.client.wait", unit="s", description="Time slept, pacing and back-off"
        )

    def start(self, identity: Identity) -> Any:
        return self._tracer.start_span("sluice.client.request", attributes=identity.attributes())

    def finish(
        self,
        span: Any,
        *,
        attempts: int,
        stopped: Optional[str],
        status: Optional[int],
        outcome: str,
        waits_ms: Iterable[float],
        retries: int,
    ) -> None:
        span.set_attribute("sluice.attempts", attempts)
        if stopped is not None:
            span.set_attribute("sluice.stopped", stopped)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        span.end()
        self._requests.add(1, {"outcome": outcome})
        if retries:
            self._retries.add(retries)
        for ms in waits_ms:
            self._wait.record(ms / 1000.0)


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def auto() -> Optional[Telemetry]:
    """A :class:`Telemetry` on the global providers when OpenTelemetry is installed, else
    ``None``."""
    if not available():
        return None
    try:
        return Telemetry()
    except ImportError:
        return None
