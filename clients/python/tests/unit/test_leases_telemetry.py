"""Leases over httpx.MockTransport; telemetry with the OpenTelemetry SDK's in-memory exporters."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sluice_client import (
    AsyncLeases,
    Backoff,
    FixedJitter,
    LeaseError,
    LeaseRefused,
    Leases,
    Pacer,
    Reply,
    RetryBudget,
    RetryPolicy,
)
from sluice_client.telemetry import Telemetry, available

from .conftest import ManualTime


class Pool:
    """A fake lease API with one slot."""

    def __init__(self, fail_release: bool = False) -> None:
        self.holder: Any = None
        self.calls: List[Dict[str, Any]] = []
        self.fail_release = fail_release

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        call = request.url.path.rsplit("/", 1)[1]
        self.calls.append({"call": call, **body})
        if call == "acquire":
            if self.holder is not None:
                doc = {"status": 429, "kind": "throttle", "retry_after": 59}
                return httpx.Response(
                    429,
                    headers={"content-type": "application/problem+json", "retry-after": "59"},
                    json=doc,
                )
            self.holder = "abc123"
            return httpx.Response(200, json={"lease_id": self.holder, "ttl_seconds": 60})
        if call == "renew":
            return httpx.Response(200, json={"lease_id": body["lease_id"], "ttl_seconds": 60})
        if call == "release":
            if self.fail_release:
                return httpx.Response(503, text="busy")
            self.holder = None
            return httpx.Response(204)
        return httpx.Response(400, text="no pool matched")


def test_acquire_renew_release_and_the_request_bodies() -> None:
    pool = Pool()
    leases = Leases("http://sluice.test/", client=httpx.Client(transport=httpx.MockTransport(pool)))
    lease = leases.acquire("sdk", [{"uploads": "u1"}], wait_ms=0)
    assert (lease.lease_id, lease.ttl_seconds) == ("abc123", 60)
    assert pool.calls[0] == {
        "call": "acquire",
        "domain": "sdk",
        "descriptors": [{"entries": [{"key": "uploads", "value": "u1"}]}],
        "wait_ms": 0,
    }
    with pytest.raises(LeaseRefused) as refused:
        leases.acquire("sdk", [[("uploads", "u1")]])
    assert (refused.value.retry_after_ms, refused.value.retry_after) == (59000, 59.0)
    assert refused.value.problem is not None and refused.value.problem.retry_after == 59
    assert leases.renew(lease).lease_id == "abc123"
    leases.release(lease)
    assert pool.calls[-1]["lease_id"] == "abc123"
    with pytest.raises(LeaseError) as bad:
        leases.holders("sdk", {"uploads": "u1"})
    assert bad.value.status == 400


def test_hold_releases_when_the_block_raises_and_never_hides_its_error() -> None:
    pool = Pool()
    leases = Leases("http://sluice.test", client=httpx.Client(transport=httpx.MockTransport(pool)))
    with pytest.raises(ZeroDivisionError), leases.hold("sdk", [{"uploads": "u"}]):
        assert pool.holder is not None
        _ = 1 / 0
    assert pool.holder is None, "released"
    with leases.hold("sdk", [{"uploads": "u"}]) as lease:
        assert lease.lease_id == pool.holder
    assert pool.holder is None

    failing = Pool(fail_release=True)
    leases = Leases("http://s.test", client=httpx.Client(transport=httpx.MockTransport(failing)))
    with pytest.raises(ValueError, match="the block's"), leases.hold("sdk", [{"uploads": "u"}]):
        raise ValueError("the block's error")
    with pytest.raises(LeaseError), leases.hold("sdk", [{"uploads": "v"}]):
        pass


def test_async_hold() -> None:
    pool = Pool()

    async def main() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(pool))
        async with AsyncLeases("http://sluice.test", client=client) as leases:
            with pytest.raises(KeyError):
                async with leases.hold("sdk", [{"uploads": "a"}], wait_ms=10) as lease:
                    assert lease.lease_id == "abc123"
                    raise KeyError("boom")
            assert pool.holder is None
            lease = await leases.acquire("sdk", [{"uploads": "a"}])
            assert (await leases.renew(lease)).ttl_seconds == 60
            await leases.release(lease)

    asyncio.run(main())
    assert [c["call"] for c in pool.calls] == ["acquire", "release", "acquire", "renew", "release"]


def test_telemetry_spans_and_metrics(time: ManualTime) -> None:
    assert available()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    telemetry = Telemetry(tracer_provider, MeterProvider(metric_readers=[reader]))
    b = Backoff(
        RetryPolicy(max_attempts=3),
        budget=RetryBudget(),
        pacer=Pacer(),
        clock=time,
        sleeper=time,
        jitter=FixedJitter(0),
        telemetry=telemetry,
        app_id="app-1",
        tenant_id="t-9",
    )
    script: List[Reply[None]] = [Reply(503, [("Retry-After", "2")]), Reply(200, [])]
    b.run(lambda: script.pop(0))
    refused: List[Reply[None]] = [Reply(404, [])]
    b.run(lambda: refused.pop(0))

    first, second = spans.get_finished_spans()
    assert first.name == "sluice.client.request"
    assert dict(first.attributes or {}) == {
        "sluice.app_id": "app-1",
        "sluice.tenant_id": "t-9",
        "sluice.attempts": 2,
        "http.response.status_code": 200,
    }
    assert (second.attributes or {})["sluice.stopped"] == "not_retryable"
    assert "sluice.lease_id" not in (second.attributes or {})

    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m.data
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    requests = metrics["sluice.client.requests"].data_points
    outcomes = {
        str((p.attributes or {})["outcome"]): p.value
        for p in requests
        if isinstance(p, NumberDataPoint)
    }
    assert outcomes == {"ok": 1, "refused": 1}
    retries = metrics["sluice.client.retries"].data_points
    assert [p.value for p in retries if isinstance(p, NumberDataPoint)] == [1]
    (wait,) = metrics["sluice.client.wait"].data_points
    assert isinstance(wait, HistogramDataPoint)
    assert (wait.count, wait.sum) == (1, 2.0)
