"""A ``requests`` adapter: ``session.mount("http://", SluiceAdapter())``.

The response handed back is the last attempt's; its :class:`~sluice_client.retry.Answer` is the
attribute ``response.sluice`` (read it with :func:`outcome`). A call that ends in a connection
error or timeout raises that ``requests`` error (the :class:`~sluice_client.retry.Failed` is its
``sluice`` attribute)."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple, Union

import requests
from requests.adapters import HTTPAdapter

from .pacer import Pacer
from .policy import RetryPolicy
from .retry import Answer, Backoff, Failed, Reply

ATTRIBUTE = "sluice"

_TRANSPORT_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


class SluiceAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that retries and paces like every Sluice client. Give a ready
    ``backoff``, or a ``policy`` and ``pacing=True`` and any :class:`Backoff` keyword."""

    def __init__(
        self,
        *,
        backoff: Optional[Backoff] = None,
        policy: Optional[RetryPolicy] = None,
        pacing: bool = False,
        **options: Any,
    ) -> None:
        super().__init__()
        if backoff is None:
            if pacing and options.get("pacer") is None:
                options["pacer"] = Pacer()
            options.setdefault("transport_errors", _TRANSPORT_ERRORS)
            backoff = Backoff(policy, **options)
        self.backoff = backoff

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Union[float, Tuple[float, float], Tuple[float, None], None] = None,
        verify: Union[bool, str] = True,
        cert: Union[bytes, str, Tuple[Union[bytes, str], Union[bytes, str]], None] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> requests.Response:
        def attempt() -> Reply[requests.Response]:
            response = super(SluiceAdapter, self).send(
                request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
            )
            body = response.content if response.status_code >= 400 else b""
            return Reply(response.status_code, list(response.headers.items()), body, response)

        try:
            answer = self.backoff.run(attempt, lambda r: r.close())
        except Failed as failed:
            if failed.source is not None:
                setattr(failed.source, ATTRIBUTE, failed)
                raise failed.source from None
            raise
        response = answer.response
        assert response is not None
        setattr(response, ATTRIBUTE, answer)
        return response


def outcome(response: requests.Response) -> Optional[Answer[requests.Response]]:
    """The :class:`Answer` of a response that came through a :class:`SluiceAdapter`."""
    found = getattr(response, ATTRIBUTE, None)
    return found if isinstance(found, Answer) else None
