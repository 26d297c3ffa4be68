"""Concurrency leases over Sluice's HTTP API (behaviour.md §6, docs/leases.md), with httpx
(imported when a :class:`Leases` is made: install ``sluice-client[httpx]``).

``hold`` is the scoped form: it releases when the block ends, also when the block raises, and a
release that fails while the block's error propagates never hides that error."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from .headers import Problem, header_value, parse_problem, retry_after_ms

if TYPE_CHECKING:
    import httpx

#: One descriptor: ``{"uploads": "acme"}``, or ordered (key, value) pairs.
Descriptor = Union[Mapping[str, str], Sequence[Tuple[str, str]]]


class LeaseError(Exception):
    """Sluice answered a lease call with something other than success or a refusal (400 when no
    pool matched, a 5xx, ...)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"lease call failed with {status}: {detail}")
        self.status = status
        self.detail = detail


class LeaseRefused(LeaseError):
    """429: the pool is full (or a rate limit of the same descriptors refused). ``retry_after_ms``
    is the server's wait, ``problem`` its document."""

    def __init__(
        self, status: int, detail: str, retry_after_ms: Optional[int], problem: Optional[Problem]
    ) -> None:
        super().__init__(status, detail)
        self.retry_after_ms = retry_after_ms
        self.problem = problem

    @property
    def retry_after(self) -> Optional[float]:
        """The server's wait in seconds (``Retry-After``, else the document's ``retry_after``)."""
        return None if self.retry_after_ms is None else self.retry_after_ms / 1000.0


@dataclass(frozen=True)
class Lease:
    lease_id: str
    ttl_seconds: int
    domain: str
    descriptors: Tuple[Tuple[Tuple[str, str], ...], ...]


def _entries(descriptor: Descriptor) -> Tuple[Tuple[str, str], ...]:
    pairs: Iterable[Tuple[str, str]]
    pairs = descriptor.items() if isinstance(descriptor, Mapping) else descriptor
    return tuple((str(k), str(v)) for k, v in pairs)


def _body(
    domain: str, descriptors: Tuple[Tuple[Tuple[str, str], ...], ...], **extra: Any
) -> Dict[str, Any]:
    body: Dict[str, Any] = {
        "domain": domain,
        "descriptors": [{"entries": [{"key": k, "value": v} for k, v in d]} for d in descriptors],
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def _need_httpx() -> Any:
    try:
        import httpx
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "sluice_client leases need httpx: pip install 'sluice-client[httpx]'"
        ) from e
    return httpx


def _lease(
    response: httpx.Response,
    domain: str,
    descriptors: Tuple[Tuple[Tuple[str, str], ...], ...],
    epoch_s: float,
) -> Lease:
    _check(response, epoch_s)
    try:
        doc = response.json()
        return Lease(str(doc["lease_id"]), int(doc["ttl_seconds"]), domain, descriptors)
    except (ValueError, KeyError, TypeError) as e:
        raise LeaseError(response.status_code, f"unreadable lease answer: {e}") from e


def _check(response: httpx.Response, epoch_s: float) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    pairs = response.headers.multi_items()
    text = response.text
    problem = parse_problem(header_value(pairs, "content-type"), response.content)
    detail = (problem.detail if problem is not None else None) or text[:200]
    if status == 429:
        wait = retry_after_ms(header_value(pairs, "retry-after"), epoch_s)
        if wait is None and problem is not None and problem.retry_after is not None:
            wait = problem.retry_after * 1000
        raise LeaseRefused(status, detail, wait, problem)
    raise LeaseError(status, detail)


class _Base:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _url(self, call: str) -> str:
        return f"{self.base_url}/leases/{call}"

    @staticmethod
    def _descriptors(
        descriptors: Iterable[Descriptor],
    ) -> Tuple[Tuple[Tuple[str, str], ...], ...]:
        return tuple(_entries(d) for d in descriptors)


class Leases(_Base):
    """Leases from Sluice at ``base_url`` (its HTTP address). ``client`` defaults to a new
    ``httpx.Client(timeout=timeout)`` (closed by :meth:`close`)."""

    def __init__(
        self, base_url: str, *, client: Optional[httpx.Client] = None, timeout: float = 35.0
    ) -> None:
        super().__init__(base_url)
        http = _need_httpx()
        self._own = client is None
        self.client: httpx.Client = client if client is not None else http.Client(timeout=timeout)

    def close(self) -> None:
        if self._own:
            self.client.close()

    def __enter__(self) -> Leases:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, call: str, body: Dict[str, Any]) -> httpx.Response:
        return self.client.post(
            self._url(call),
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )

    def acquire(
        self, domain: str, descriptors: Iterable[Descriptor], *, wait_ms: Optional[int] = None
    ) -> Lease:
        """Takes a lease, waiting up to ``wait_ms`` on the server for a full pool. Raises
        :class:`LeaseRefused` on 429, :class:`LeaseError` on any other failure."""
        d = self._descriptors(descriptors)
        response = self._post("acquire", _body(domain, d, wait_ms=wait_ms))
        return _lease(response, domain, d, _now())

    def renew(self, lease: Lease) -> Lease:
        """Extends ``lease`` by one TTL from now."""
        response = self._post(
            "renew", _body(lease.domain, lease.descriptors, lease_id=lease.lease_id)
        )
        return _lease(response, lease.domain, lease.descriptors, _now())

    def release(self, lease: Lease) -> None:
        """Gives ``lease`` back (a lease already gone is fine)."""
        response = self._post(
            "release", _body(lease.domain, lease.descriptors, lease_id=lease.lease_id)
        )
        _check(response, _now())

    def holders(self, domain: str, descriptor: Descriptor) -> Dict[str, Any]:
        """The pools ``descriptor`` matches and who holds them (``POST /leases/holders``)."""
        response = self._post("holders", _body(domain, (_entries(descriptor),)))
        _check(response, _now())
        doc: Dict[str, Any] = response.json()
        return doc

    @contextlib.contextmanager
    def hold(
        self, domain: str, descriptors: Iterable[Descriptor], *, wait_ms: Optional[int] = None
    ) -> Iterator[Lease]:
        """``with leases.hold(domain, [{"uploads": "acme"}], wait_ms=5000) as lease:`` holds a
        lease for the block and releases it when the block ends, however it ends."""
        lease = self.acquire(domain, descriptors, wait_ms=wait_ms)
        try:
            yield lease
        except BaseException:
            # The block's error is what the caller needs to see; a failed release (the lease
            # then expires by its TTL) must not replace it.
            with contextlib.suppress(Exception):
                self.release(lease)
            raise
        self.release(lease)


class AsyncLeases(_Base):
    """:class:`Leases` for asyncio, over ``httpx.AsyncClient``."""

    def __init__(
        self,
        base_url: str,
        *,
        client: Optional[httpx.AsyncClient] = None,
        timeout: float = 35.0,
    ) -> None:
        super().__init__(base_url)
        http = _need_httpx()
        self._own = client is None
        self.client: httpx.AsyncClient = (
            client if client is not None else http.AsyncClient(timeout=timeout)
        )

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()

    async def __aenter__(self) -> AsyncLeases:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, call: str, body: Dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            self._url(call),
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )

    async def acquire(
        self, domain: str, descriptors: Iterable[Descriptor], *, wait_ms: Optional[int] = None
    ) -> Lease:
        d = self._descriptors(descriptors)
        response = await self._post("acquire", _body(domain, d, wait_ms=wait_ms))
        return _lease(response, domain, d, _now())

    async def renew(self, lease: Lease) -> Lease:
        response = await self._post(
            "renew", _body(lease.domain, lease.descriptors, lease_id=lease.lease_id)
        )
        return _lease(response, lease.domain, lease.descriptors, _now())

    async def release(self, lease: Lease) -> None:
        response = await self._post(
            "release", _body(lease.domain, lease.descriptors, lease_id=lease.lease_id)
        )
        _check(response, _now())

    async def holders(self, domain: str, descriptor: Descriptor) -> Dict[str, Any]:
        response = await self._post("holders", _body(domain, (_entries(descriptor),)))
        _check(response, _now())
        doc: Dict[str, Any] = response.json()
        return doc

    @contextlib.asynccontextmanager
    async def hold(
        self, domain: str, descriptors: Iterable[Descriptor], *, wait_ms: Optional[int] = None
    ) -> AsyncIterator[Lease]:
        """``async with leases.hold(...) as lease:``, releasing however the block ends."""
        lease = await self.acquire(domain, descriptors, wait_ms=wait_ms)
        try:
            yield lease
        except BaseException:
            with contextlib.suppress(Exception):
                await self.release(lease)
            raise
        await self.release(lease)


def _now() -> float:
    import time

    return time.time()


__all__: List[str] = ["AsyncLeases", "Lease", "LeaseError", "LeaseRefused", "Leases"]
