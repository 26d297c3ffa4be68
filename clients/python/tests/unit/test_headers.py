"""Reading answers beyond the shared table: hostile and odd input never raises."""

from __future__ import annotations

import pytest

from sluice_client import Problem, RateView, parse_problem, rate_view, retry_after_ms

NOW = 1_796_000_000.0


@pytest.mark.parametrize(
    "value",
    [
        "-1",
        "1e3",
        "0x10",
        "+5",
        "5s",
        "١٢",
        " ",
        "Wed, 32 Oct 2026 07:28:00 GMT",
        "Wed, 21 Foo 2026 07:28:00 GMT",
        "Wed, 21 Oct 2026 25:28:00 GMT",
        "Wednesday, 21-Oct-26 07:28:00 GMT",
        "Wed Oct 21 07:28:00 2026",
        "\x00",
        "9" * 5000,
    ],
)
def test_unreadable_retry_after_is_absent_or_clamped(value: str) -> None:
    got = retry_after_ms(value, NOW)
    assert got is None or got == 1_000_000_000_000


def test_retry_after_dates_round_up_and_clamp() -> None:
    # 1796000000 is Mon, 30 Nov 2026 00:53:20 GMT.
    assert retry_after_ms("Mon, 30 Nov 2026 00:53:21 GMT", NOW - 0.25) == 2000
    assert retry_after_ms("Mon, 30 Nov 2026 00:53:20 GMT", NOW) == 0
    assert retry_after_ms("Fri, 31 Dec 9999 23:59:59 GMT", NOW) == 1_000_000_000_000
    assert retry_after_ms("Thu, 01 Jan 1970 00:00:00 GMT", NOW) == 0
    assert retry_after_ms("\t3\t", NOW) == 3000


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe", b"null", b'"text"', b"[" * 100000, b'{"status": 429', b"NaN"],
)
def test_problem_documents_that_do_not_parse_are_none(body: bytes) -> None:
    assert parse_problem("application/problem+json", body) is None


def test_problem_fields_of_the_wrong_type_are_absent() -> None:
    doc = b'{"status": true, "retry_after": 1e400, "rule": ["x"], "kind": "QUOTA"}'
    assert parse_problem("application/problem+json", doc) == Problem()
    big = b'{"status": 600, "retry_after": 100000000000000000000}'
    assert parse_problem("application/problem+json", big) == Problem(retry_after=1_000_000_000)


def test_ietf_wins_over_other_styles_even_when_unreadable() -> None:
    headers = [("RateLimit", "junk"), ("X-RateLimit-Limit", "5"), ("RateLimit-Limit", "7")]
    assert rate_view(headers) is None
    headers = [("X-RateLimit-Limit", "5"), ("RateLimit-Limit", "7")]
    assert rate_view(headers) == RateView(limit=5)


def test_contradicting_rate_limit_headers_never_raise() -> None:
    headers = {
        "RateLimit": '"a";r=5;t=1, "a";r=2;t=9;r=7, "unterminated;r=1',
        "RateLimit-Policy": '"a";q=1;q=2;w=abc',
    }
    view = rate_view(headers)
    # A repeated parameter's last value counts (r=7); the unterminated name swallows the rest,
    # so that item has no r. The policy's q=2 caps remaining; its w is unreadable.
    assert view == RateView(limit=2, remaining=2, reset_s=1, window_s=None)
    assert rate_view({"RateLimit": '"a";r=5;t=1', "RateLimit-Policy": '"a";q=2;w=1'}) == RateView(
        2, 2, 1, 1
    )
    assert rate_view({"ratelimit": ";;;,,,=;r=,"}) is None
    assert rate_view({"X-RateLimit-Limit": "3;w=1, 3;w=5"}) is None
    assert rate_view({"X-RateLimit-Limit": "3, 4;w=5, 3;w=x, 3;w=9"}) == RateView(3, None, None)


def test_repeated_fields_are_combined() -> None:
    headers = [("RateLimit", '"a";r=5;t=1'), ("ratelimit", '"b";r=1;t=2')]
    assert rate_view(headers) == RateView(remaining=1, reset_s=2)
