"""Whatever a server sends, the client never raises from it and never sleeps past max_wait
(behaviour.md §8): seeded random headers and bodies through the whole loop, pacing on."""

from __future__ import annotations

import random
from typing import List, Tuple

from sluice_client import (
    Backoff,
    Failed,
    FixedJitter,
    Pacer,
    Reply,
    RetryBudget,
    RetryPolicy,
    parse_problem,
    rate_view,
    retry_after_ms,
)

from .conftest import ManualTime

PIECES = [
    "0", "1", "-1", "3600", "99999999999999999999", "1.5", "", " ", '"', "\\", ";", ",", "=",
    "r", "t", "q", "w", "name", '"a"', "é", "\x00", "Mon, 30 Nov 2026 00:53:50 GMT", "NaN",
]  # fmt: skip
NAMES = [
    "Retry-After", "RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "X-RateLimit-Remaining",
    "X-RateLimit-Reset", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset",
    "Content-Type",
]  # fmt: skip
BODIES = [b"", b"{", b"[]", b'{"kind":"throttle","retry_after":1e99}', b'{"retry_after":-1}',
          b'{"status":429,"retry_after":99999999999}', b"\xff", b'{"kind":["quota"]}']  # fmt: skip


def garbage(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8)))


def headers(rng: random.Random) -> List[Tuple[str, str]]:
    pairs = [(rng.choice(NAMES), garbage(rng)) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.5:
        pairs.append(("Content-Type", "application/problem+json"))
    return pairs


def test_readers_never_raise() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = garbage(rng)
        got = retry_after_ms(value, 1_796_000_000)
        assert got is None or 0 <= got <= 1_000_000_000_000
        rate_view(headers(rng))
        parse_problem("application/problem+json", rng.choice(BODIES) + value.encode())


def test_the_loop_never_sleeps_past_max_wait() -> None:
    rng = random.Random(11)
    time = ManualTime()
    policy = RetryPolicy(max_attempts=5, base_ms=100, cap_ms=1000, max_wait_ms=3000)
    b = Backoff(
        policy,
        budget=RetryBudget(max=1000),
        pacer=Pacer(),
        clock=time,
        sleeper=time,
        jitter=FixedJitter(1.0),
        telemetry=False,
    )
    statuses = [200, 402, 404, 429, 429, 503, 503, 502, 504]
    for _ in range(500):

        def attempt() -> Reply[None]:
            return Reply(rng.choice(statuses), headers(rng), rng.choice(BODIES))

        try:
            b.run(attempt)
        except Failed as e:
            # The only way such a call ends without an answer: pacing (held by a long
            # Retry-After) would wait past max_wait before the first attempt.
            assert e.source is None and e.attempts == 0
        time.advance(rng.choice([0, 10, 500, 5000]))
    assert time.slept and max(time.slept) <= 3000
