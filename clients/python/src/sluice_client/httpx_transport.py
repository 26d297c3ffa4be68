"""httpx adapters: ``httpx.Client(transport=SluiceTransport())`` and
``httpx.AsyncClient(transport=AsyncSluiceTransport())``.

Each request goes through :class:`~sluice_client.retry.Backoff`; the response handed back is the
last attempt's, with the :class:`~sluice_client.retry.Answer` in
``response.extensions["sluice"]``. A call that ends in a transport error raises that httpx error
(the :class:`~sluice_client.retry.Failed`, with the attempts and waits, is the error's ``sluice``
attribute); one that pacing refuses before any attempt raises
:class:`~sluice_client.retry.Failed`; one the breaker refuses raises
:class:`~sluice_client.breaker.CircuitOpen`.

Requests are retried whatever their method: the request body is read into memory first so it can
be sent again."""

from __future__ import annotations

from typing import Any, Optional

import httpx

from .pacer import Pacer
from .policy import RetryPolicy
from .retry import Answer, Backoff, Failed, Reply

EXTENSION = "sluice"


def _backoff(
    backoff: Optional[Backoff], policy: Optional[RetryPolicy], pacing: bool, options: Any
) -> Backoff:
    if backoff is not None:
        return backoff
    if pacing and options.get("pacer") is None:
        options["pacer"] = Pacer()
    options.setdefault("transport_errors", (httpx.TransportError,))
    return Backoff(policy, **options)


def _raise_source(failed: Failed) -> None:
    if failed.source is not None:
        setattr(failed.source, EXTENSION, failed)
        raise failed.source from None
    raise failed


class SluiceTransport(httpx.BaseTransport):
    """Wraps ``transport`` (by default a new ``httpx.HTTPTransport()``). Give a ready
    ``backoff``, or a ``policy`` and ``pacing=True`` and any :class:`Backoff` keyword."""

    def __init__(
        self,
        transport: Optional[httpx.BaseTransport] = None,
        *,
        backoff: Optional[Backoff] = None,
        policy: Optional[RetryPolicy] = None,
        pacing: bool = False,
        **options: Any,
    ) -> None:
        self.inner = transport if transport is not None else httpx.HTTPTransport()
        self.backoff = _backoff(backoff, policy, pacing, options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()

        def attempt() -> Reply[httpx.Response]:
            response = self.inner.handle_request(request)
            body = response.read() if response.status_code >= 400 else b""
            return Reply(response.status_code, response.headers.multi_items(), body, response)

        try:
            answer = self.backoff.run(attempt, lambda r: r.close())
        except Failed as failed:
            _raise_source(failed)
            raise
        return _handed_back(answer)

    def close(self) -> None:
        self.inner.close()


class AsyncSluiceTransport(httpx.AsyncBaseTransport):
    """The same for ``httpx.AsyncClient``, wrapping ``httpx.AsyncHTTPTransport()`` by default."""

    def __init__(
        self,
        transport: Optional[httpx.AsyncBaseTransport] = None,
        *,
        backoff: Optional[Backoff] = None,
        policy: Optional[RetryPolicy] = None,
        pacing: bool = False,
        **options: Any,
    ) -> None:
        self.inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self.backoff = _backoff(backoff, policy, pacing, options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()

        async def attempt() -> Reply[httpx.Response]:
            response = await self.inner.handle_async_request(request)
            body = await response.aread() if response.status_code >= 400 else b""
            return Reply(response.status_code, response.headers.multi_items(), body, response)

        async def discard(response: httpx.Response) -> None:
            await response.aclose()

        try:
            answer = await self.backoff.arun(attempt, discard)
        except Failed as failed:
            _raise_source(failed)
            raise
        return _handed_back(answer)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _handed_back(answer: Answer[httpx.Response]) -> httpx.Response:
    response = answer.response
    assert response is not None
    response.extensions[EXTENSION] = answer
    return response


def outcome(response: httpx.Response) -> Optional[Answer[httpx.Response]]:
    """The :class:`Answer` of a response that came through a Sluice transport."""
    found = response.extensions.get(EXTENSION)
    return found if isinstance(found, Answer) else None
