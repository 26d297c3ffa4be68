"""The retry loop (behaviour.md §2, with pacing from §3 and the breaker from §5), free of any
HTTP library: :meth:`Backoff.run` and :meth:`Backoff.arun` call an ``attempt`` that sends one
request and returns a :class:`Reply`. The adapters (:mod:`sluice_client.httpx_transport`,
:mod:`sluice_client.requests_adapter`) are thin wrappers around it.

Every duration here is in **milliseconds** (``waits_ms``, ``paced_ms``, ``retry_afters_ms``);
:attr:`Answer.waits` and :attr:`Answer.retry_afters` give the same in seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    Any,
    Awaitable,
    Callable,
    Generic,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from .breaker import CircuitBreaker, CircuitOpen
from .budget import RetryBudget, default_budget
from .headers import Headers, Problem, RateView, header_pairs, header_value, parse_problem
from .headers import rate_view as read_rate_view
from .headers import retry_after_ms as read_retry_after
from .pacer import Pacer
from .policy import RetryPolicy, Stop, verdict
from .runtime import (
    AsyncioSleeper,
    AsyncSleeper,
    Clock,
    Jitter,
    RandomJitter,
    Sleeper,
    SystemClock,
    ThreadSleeper,
)
from .telemetry import Identity, Telemetry
from .telemetry import auto as auto_telemetry

R = TypeVar("R")


@dataclass
class Reply(Generic[R]):
    """One HTTP answer as the loop needs it. ``body`` only matters for refusals (status 400 and
    up, where the problem document is); ``raw`` is the HTTP library's own response."""

    status: int
    headers: Headers
    body: bytes = b""
    raw: Optional[R] = None


@dataclass
class Answer(Generic[R]):
    """The answer handed back: the last reply, what it said, and how the client got there."""

    reply: Reply[R]
    #: The problem document of the last reply, when it had one.
    problem: Optional[Problem]
    #: Attempts made, the first included.
    attempts: int
    #: Back-off waits slept before each retry, in order (ms).
    waits_ms: List[float] = field(default_factory=list)
    #: For each back-off wait, the server's minimum behind it (``Retry-After`` or the document's
    #: ``retry_after``, ms), ``None`` when the server gave none.
    retry_afters_ms: List[Optional[float]] = field(default_factory=list)
    #: Pacing waits slept before attempts (ms; only those above 0).
    paced_ms: List[float] = field(default_factory=list)
    #: The status of every attempt, ``None`` for one that got no HTTP answer.
    statuses: List[Optional[int]] = field(default_factory=list)
    #: Set when the reply is a refusal the client stopped retrying, and why.
    stopped: Optional[Stop] = None
    _view: Optional[RateView] = field(default=None, repr=False, compare=False)
    _view_read: bool = field(default=False, repr=False, compare=False)

    @property
    def view(self) -> Optional[RateView]:
        """The rate-limit headers of the last reply, when it had any (read on first use)."""
        if not self._view_read:
            self._view = read_rate_view(self.reply.headers)
            self._view_read = True
        return self._view

    @property
    def status(self) -> int:
        return self.reply.status

    @property
    def response(self) -> Optional[R]:
        """The HTTP library's response object of the last reply."""
        return self.reply.raw

    @property
    def waits(self) -> List[float]:
        """:attr:`waits_ms` in seconds."""
        return [ms / 1000.0 for ms in self.waits_ms]

    @property
    def retry_afters(self) -> List[Optional[float]]:
        """:attr:`retry_afters_ms` in seconds."""
        return [None if ms is None else ms / 1000.0 for ms in self.retry_afters_ms]


class Failed(Exception):
    """The call ended without an answer to hand back: the last attempt failed in transport
    (``source`` is that error), or pacing would have waited past ``max_wait`` before the first
    attempt (``source`` is ``None``)."""

    def __init__(
        self,
        source: Optional[BaseException],
        attempts: int,
        waits_ms: List[float],
        stopped: Stop,
        statuses: Optional[List[Optional[int]]] = None,
    ) -> None:
        what = "pacing wait too long" if source is None else f"{type(source).__name__}: {source}"
        super().__init__(f"no answer after {attempts} attempts ({stopped.value}): {what}")
        self.source = source
        self.attempts = attempts
        self.waits_ms = waits_ms
        self.stopped = stopped
        self.statuses = statuses if statuses is not None else []


class Backoff:
    """Retries attempts the way Sluice's answers ask. Thread-safe and reusable: one per client.

    ``pacer`` turns pacing on (``pace=False`` keeps it learning from answers without waiting,
    for a :class:`~sluice_client.queue.WorkQueue` that paces on its own); ``breaker`` adds a
    circuit breaker; ``budget`` defaults to the process-wide :func:`default_budget`;
    ``telemetry`` defaults to OpenTelemetry when it is installed (``False`` turns it off).
    ``transport_errors`` are the exceptions that mean "no HTTP answer": they are retried and
    count as breaker failures; any other exception propagates at once."""

    def __init__(
        self,
        policy: Optional[RetryPolicy] = None,
        *,
        budget: Optional[RetryBudget] = None,
        pacer: Optional[Pacer] = None,
        pace: bool = True,
        breaker: Optional[CircuitBreaker] = None,
        clock: Optional[Clock] = None,
        sleeper: Optional[Sleeper] = None,
        async_sleeper: Optional[AsyncSleeper] = None,
        jitter: Optional[Jitter] = None,
        telemetry: Union[Telemetry, bool, None] = None,
        app_id: Optional[str] = None,
        tenant_id: Optional[str] = None,
        lease_id: Optional[str] = None,
        transport_errors: Tuple[Type[BaseException], ...] = (OSError,),
    ) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self.budget = budget if budget is not None else default_budget()
        self.pacer = pacer
        self.pace = pace
        self.breaker = breaker
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.sleeper: Sleeper = sleeper if sleeper is not None else ThreadSleeper()
        self.async_sleeper: AsyncSleeper = (
            async_sleeper if async_sleeper is not None else AsyncioSleeper()
        )
        self.jitter: Jitter = jitter if jitter is not None else RandomJitter()
        if telemetry is None or telemetry is True:
            self.telemetry = auto_telemetry()
        elif telemetry is False:
            self.telemetry = None
        else:
            self.telemetry = telemetry
        self.identity = Identity(app_id, tenant_id, lease_id)
        self.transport_errors = transport_errors

    def run(
        self,
        attempt: Callable[[], Reply[R]],
        discard: Optional[Callable[[R], None]] = None,
    ) -> Answer[R]:
        """Calls ``attempt`` until an answer is done, refused for good, or the policy, budget or
        pacing says stop. ``discard`` is given each superseded response (to close it)."""
        call: _Call[R] = _Call(self, discard)
        try:
            while True:
                wait = call.pace()
                if isinstance(wait, Answer):
                    return wait
                if wait > 0:
                    self.sleeper.sleep(wait)
                call.admit()
                step: Union[float, Answer[R]]
                try:
                    reply = attempt()
                except self.transport_errors as e:
                    step = call.failed(e)
                else:
                    step = call.answered(reply)
                if isinstance(step, Answer):
                    return step
                self.sleeper.sleep(step)
        except BaseException as e:
            call.abort(e)
            raise

    async def arun(
        self,
        attempt: Callable[[], Awaitable[Reply[R]]],
        discard: Optional[Callable[[R], Awaitable[None]]] = None,
    ) -> Answer[R]:
        """:meth:`run` for asyncio: ``attempt`` and ``discard`` are coroutines, sleeps go through
        the async sleeper."""
        call: _Call[R] = _Call(self, None)
        try:
            while True:
                wait = call.pace()
                if isinstance(wait, Answer):
                    return wait
                if wait > 0:
                    await self.async_sleeper.sleep(wait)
                # The previous response is closed before the breaker is asked, so a retry the
                # breaker refuses leaves nothing open (admit() does the same in the sync loop).
                if discard is not None and call.superseded is not None:
                    await discard(call.superseded)
                call.superseded = None
                call.admit()
                step: Union[float, Answer[R]]
                try:
                    reply = await attempt()
                except self.transport_errors as e:
                    step = call.failed(e)
                else:
                    step = call.answered(reply)
                if isinstance(step, Answer):
                    return step
                await self.async_sleeper.sleep(step)
        except BaseException as e:
            call.abort(e)
            raise


class _Call(Generic[R]):
    """The state of one call through :class:`Backoff`, shared by the sync and async loops."""

    def __init__(self, b: Backoff, discard: Optional[Callable[[R], None]]) -> None:
        self.b = b
        self.discard = discard
        self.attempts = 0
        self.waits_ms: List[float] = []
        self.retry_afters_ms: List[Optional[float]] = []
        self.paced_ms: List[float] = []
        self.statuses: List[Optional[int]] = []
        self.last: Optional[Answer[R]] = None
        self.last_error: Optional[BaseException] = None
        self.superseded: Optional[R] = None
        self.finished = False
        self.span: Any = None
        if b.telemetry is not None:
            self.span = b.telemetry.start(b.identity)
        b.budget.deposit(b.clock.now_ms())

    def pace(self) -> Union[float, Answer[R]]:
        """The pacing wait before the next attempt; ends the call when it is too long."""
        b = self.b
        if b.pacer is None or not b.pace:
            return 0.0
        wait = b.pacer.reserve_within(b.clock.now_ms(), b.policy.max_wait_ms)
        if wait is None:
            return self.stop(Stop.WAIT_TOO_LONG)
        if wait > 0:
            self.paced_ms.append(wait)
        return wait

    def admit(self) -> None:
        """Asks the breaker; drops the previous response now that another attempt goes out."""
        b = self.b
        allowed = b.breaker is None or b.breaker.allow(b.clock.now_ms())
        if self.discard is not None and self.superseded is not None:
            self.discard(self.superseded)
            self.superseded = None
        if not allowed:
            raise CircuitOpen("circuit open: the last calls got no answer; nothing was sent")
        self.attempts += 1

    def answered(self, reply: Reply[R]) -> Union[float, Answer[R]]:
        b = self.b
        now = b.clock.now_ms()
        self.statuses.append(reply.status)
        if b.breaker is not None:
            b.breaker.success(now)
        pairs = header_pairs(reply.headers)
        # Only pacing needs the rate-limit headers on every answer; otherwise Answer.view reads
        # them if asked.
        view = read_rate_view(pairs) if b.pacer is not None else None
        problem = None
        if reply.status >= 400:
            problem = parse_problem(header_value(pairs, "content-type"), reply.body)
        retry_after = read_retry_after(header_value(pairs, "retry-after"), b.clock.epoch_s())
        v = verdict(reply.status, retry_after, problem)
        if b.pacer is not None:
            if view is not None:
                b.pacer.observe(view, now)
            if v.action == "retry" and reply.status in (429, 503):
                b.pacer.refused(v.server_ms, now)
        self.last = Answer(
            reply=reply,
            problem=problem,
            attempts=self.attempts,
            waits_ms=list(self.waits_ms),
            retry_afters_ms=list(self.retry_afters_ms),
            paced_ms=list(self.paced_ms),
            statuses=list(self.statuses),
            _view=view,
            _view_read=b.pacer is not None,
        )
        self.last_error = None
        if v.action == "done":
            return self.done(self.last)
        if v.action == "stop":
            assert v.stop is not None
            return self.stop(v.stop)
        wait = self.next_wait(v.server_ms)
        if isinstance(wait, float) and reply.raw is not None:
            self.superseded = reply.raw
        return wait

    def failed(self, error: BaseException) -> float:
        b = self.b
        self.statuses.append(None)
        if b.breaker is not None:
            b.breaker.failure(b.clock.now_ms())
        self.last = None
        self.last_error = error
        wait = self.next_wait(None)
        if isinstance(wait, Answer):  # pragma: no cover - stop() raises after an error
            raise AssertionError("a stop after a transport error raises")
        return wait

    def next_wait(self, server_ms: Optional[float]) -> Union[float, Answer[R]]:
        """After an answer to retry or a transport error: the wait before the next attempt, or
        the stop."""
        b = self.b
        if self.attempts >= b.policy.max_attempts:
            return self.stop(Stop.ATTEMPTS)
        jitter = b.jitter.draw(b.policy.bound(self.attempts))
        wait = float(b.policy.wait(server_ms, jitter))
        if wait > b.policy.max_wait_ms:
            return self.stop(Stop.WAIT_TOO_LONG)
        if not b.budget.withdraw(b.clock.now_ms()):
            return self.stop(Stop.BUDGET)
        self.waits_ms.append(wait)
        self.retry_afters_ms.append(server_ms)
        return wait

    def stop(self, reason: Stop) -> Answer[R]:
        """Hands back the last answer with ``reason``; raises :class:`Failed` when the last
        attempt got no answer (or none was made)."""
        if self.last is not None:
            self.last.stopped = reason
            return self.done(self.last)
        failed = Failed(self.last_error, self.attempts, list(self.waits_ms), reason, self.statuses)
        self.record(None, reason, "error")
        raise failed from self.last_error

    def done(self, answer: Answer[R]) -> Answer[R]:
        stopped = answer.stopped.value if answer.stopped is not None else None
        self.record(answer.status, stopped, "ok" if answer.status < 400 else "refused")
        return answer

    def abort(self, error: BaseException) -> None:
        stopped = error.stopped.value if isinstance(error, Failed) else None
        self.record(None, stopped, "error")

    def record(self, status: Optional[int], stopped: Optional[str], outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        t = self.b.telemetry
        if t is None or self.span is None:
            return
        t.finish(
            self.span,
            attempts=self.attempts,
            stopped=stopped,
            status=status,
            outcome=outcome,
            waits_ms=[*self.paced_ms, *self.waits_ms],
            retries=max(self.attempts - 1, 0),
        )
