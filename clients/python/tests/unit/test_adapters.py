"""The httpx transports on httpx.MockTransport, the requests adapter on a loopback server."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from typing import Any, Iterator, List

import httpx
import pytest
import requests

from sluice_client import (
    AsyncSluiceTransport,
    Backoff,
    FixedJitter,
    Pacer,
    RetryBudget,
    RetryPolicy,
    SluiceAdapter,
    SluiceTransport,
    Stop,
    outcome,
)

from .conftest import AsyncManualTime, ManualTime

THROTTLE = {"type": "about:blank", "status": 429, "kind": "throttle", "retry_after": 1}
PROBLEM = {"content-type": "application/problem+json"}


def backoff(time: Any, **kw: Any) -> Backoff:
    return Backoff(
        RetryPolicy(max_attempts=3),
        budget=RetryBudget(max=100),
        clock=time,
        sleeper=time,
        async_sleeper=time,
        jitter=FixedJitter(0),
        telemetry=False,
        transport_errors=(httpx.TransportError,),
        **kw,
    )


def test_httpx_transport_retries_and_exposes_the_answer(time: ManualTime) -> None:
    seen: List[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        if len(seen) == 1:
            return httpx.Response(429, headers={**PROBLEM, "retry-after": "2"}, json=THROTTLE)
        return httpx.Response(200, json={"ok": True})

    transport = SluiceTransport(httpx.MockTransport(handler), backoff=backoff(time))
    with httpx.Client(transport=transport) as client:
        response = client.post("http://api.test/orders", json={"n": 1})
    assert response.status_code == 200 and response.json() == {"ok": True}
    answer = outcome(response)
    assert answer is not None and answer is response.extensions["sluice"]
    assert (answer.attempts, answer.waits_ms, answer.retry_afters_ms) == (2, [2000], [2000])
    assert seen == [b'{"n":1}', b'{"n":1}'], "the body is sent again"
    assert time.slept == [2000]


def test_httpx_transport_hands_back_refusals_and_raises_transport_errors(
    time: ManualTime,
) -> None:
    quota = {**THROTTLE, "kind": "quota"}
    transport = SluiceTransport(
        httpx.MockTransport(lambda r: httpx.Response(429, headers=PROBLEM, json=quota)),
        backoff=backoff(time),
    )
    response = httpx.Client(transport=transport).get("http://api.test/")
    assert response.status_code == 429
    assert response.extensions["sluice"].stopped is Stop.QUOTA
    assert response.json()["kind"] == "quota", "the body is still readable"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.Client(
        transport=SluiceTransport(httpx.MockTransport(down), backoff=backoff(time))
    )
    with pytest.raises(httpx.ConnectError) as raised:
        client.get("http://api.test/")
    assert raised.value.sluice.attempts == 3  # type: ignore[attr-defined]


def test_httpx_pacing_from_the_default_constructor() -> None:
    transport = SluiceTransport(httpx.MockTransport(lambda r: httpx.Response(204)), pacing=True)
    assert isinstance(transport.backoff.pacer, Pacer)
    assert transport.backoff.transport_errors == (httpx.TransportError,)
    assert httpx.Client(transport=transport).get("http://api.test/").status_code == 204


def test_async_httpx_transport() -> None:
    time = AsyncManualTime()
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(503, headers={"retry-after": "1"})
        return httpx.Response(200, text="done")

    async def main() -> httpx.Response:
        transport = AsyncSluiceTransport(httpx.MockTransport(handler), backoff=backoff(time))
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.get("http://api.test/")

    response = asyncio.run(main())
    assert response.text == "done"
    assert response.extensions["sluice"].attempts == 3
    assert time.slept == [1000, 1000]


class Handler(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        if type(self).hits % 2 == 1:
            body = json.dumps(THROTTLE).encode()
            self.send_response(429)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Retry-After", "1")
        else:
            body = b"fine"
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_requests_adapter(server: str, time: ManualTime) -> None:
    session = requests.Session()
    session.mount("http://", SluiceAdapter(backoff=backoff(time)))
    response = session.get(server + "/x")
    assert (response.status_code, response.text) == (200, "fine")
    answer = outcome(response)
    assert answer is not None and answer is response.sluice  # type: ignore[attr-defined]
    assert (answer.attempts, answer.statuses, answer.waits_ms) == (2, [429, 200], [1000])
    default = SluiceAdapter(pacing=True)
    assert isinstance(default.backoff.pacer, Pacer)
