"""Reading answers: ``Retry-After``, the RFC 9457 problem document and rate-limit headers.

Nothing here raises on what a server sends: a value that cannot be read is treated as absent
(behaviour.md §1 and §8).
"""

from __future__ import annotations

import calendar
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Iterable, List, Mapping, Optional, Tuple, Union

#: The largest number of seconds read from any header or document: a huge value becomes a long
#: wait, never an overflow.
MAX_SECONDS = 1_000_000_000

#: Header input accepted everywhere: a mapping, or (name, value) pairs (repeats allowed).
Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]

_DIGITS = re.compile(r"[0-9]+", re.ASCII)
_OWS = " \t"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) ([A-Z][a-z]{2}) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT",
    re.ASCII,
)


def header_pairs(headers: Headers) -> List[Tuple[str, str]]:
    """The headers as a list of (name, value) pairs, whatever form they came in."""
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def header_value(pairs: List[Tuple[str, str]], name: str) -> Optional[str]:
    """Every value of ``name`` (case-insensitive) joined by ``", "``, as HTTP combines repeated
    fields; ``None`` when the field is absent."""
    wanted = name.lower()
    values = [v for k, v in pairs if k.lower() == wanted]
    if not values:
        return None
    return ", ".join(values)


def read_number(text: Optional[str]) -> Optional[int]:
    """A non-negative integer of ASCII digits (surrounding whitespace allowed), clamped to
    :data:`MAX_SECONDS`; ``None`` for anything else."""
    if text is None:
        return None
    text = text.strip(_OWS)
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0")
    # Python refuses to convert very long digit strings; anything past 10 digits is clamped.
    if len(digits) > 10:
        return MAX_SECONDS
    return min(int(digits or "0"), MAX_SECONDS)


def _http_date(text: str) -> Optional[float]:
    """Seconds since the epoch of an RFC 9110 IMF-fixdate, or ``None``."""
    m = _IMF_FIXDATE.fullmatch(text)
    if m is None or m.group(2) not in _MONTHS:
        return None
    day, year = int(m.group(1)), int(m.group(3))
    hour, minute, second = int(m.group(4)), int(m.group(5)), int(m.group(6))
    month = _MONTHS.index(m.group(2)) + 1
    if year < 1 or not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    # 60 is a leap second, which IMF-fixdate allows.
    if hour > 23 or minute > 59 or second > 60:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def retry_after_ms(value: Optional[str], now_epoch_s: float) -> Optional[int]:
    """``Retry-After`` in milliseconds: delay-seconds, or the time from ``now_epoch_s`` (the
    wall clock) to an HTTP-date, rounded up to whole seconds (0 for a date in the past).
    ``None`` when absent or unreadable (negative, fraction, garbage, empty)."""
    if value is None:
        return None
    text = value.strip(" \t\r\n")
    seconds = read_number(text)
    if seconds is not None:
        return seconds * 1000
    at = _http_date(text)
    if at is None:
        return None
    delta = at - now_epoch_s
    if not delta > 0:
        return 0
    return min(math.ceil(delta), MAX_SECONDS) * 1000


@dataclass(frozen=True)
class Problem:
    """The members of an RFC 9457 problem document a client acts on; each may be absent."""

    status: Optional[int] = None
    title: Optional[str] = None
    detail: Optional[str] = None
    #: The name of the limit that refused.
    rule: Optional[str] = None
    #: Seconds until the request would fit.
    retry_after: Optional[int] = None
    #: ``"throttle"`` (clears within seconds) or ``"quota"`` (spent until its window resets).
    kind: Optional[str] = None


def _int(value: object) -> Optional[int]:
    # JSON true/false are ints to Python; a document's status is never a boolean.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _str(value: object) -> Optional[str]:
    return value if isinstance(value, str) else None


def parse_problem(content_type: Optional[str], body: Union[bytes, str]) -> Optional[Problem]:
    """The problem document in ``body`` when ``content_type``'s media type is
    ``application/problem+json`` and the body is a JSON object; ``None`` otherwise. A member of
    the wrong type is absent; the rest still counts."""
    if content_type is None:
        return None
    if content_type.split(";", 1)[0].strip(_OWS).lower() != "application/problem+json":
        return None
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    status = _int(doc.get("status"))
    if status is not None and not 100 <= status <= 599:
        status = None
    retry_after = _int(doc.get("retry_after"))
    if retry_after is not None:
        retry_after = None if retry_after < 0 else min(retry_after, MAX_SECONDS)
    kind = _str(doc.get("kind"))
    if kind not in ("throttle", "quota"):
        kind = None
    return Problem(
        status=status,
        title=_str(doc.get("title")),
        detail=_str(doc.get("detail")),
        rule=_str(doc.get("rule")),
        retry_after=retry_after,
        kind=kind,
    )


@dataclass(frozen=True)
class RateView:
    """What the rate-limit headers say, whatever their style; each field may be absent."""

    limit: Optional[int] = None
    remaining: Optional[int] = None
    reset_s: Optional[int] = None
    window_s: Optional[int] = None


@dataclass
class _Item:
    name: str
    params: List[Tuple[str, str]]

    def number(self, key: str) -> Optional[int]:
        # As in RFC 8941 parameters, a repeated key's last value wins.
        for k, v in reversed(self.params):
            if k == key:
                return read_number(v)
        return None


def _quoted(text: str, i: int) -> Tuple[str, int]:
    """The quoted string starting at ``text[i] == '"'``, and the index after it."""
    out = []
    i += 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in '\\"':
            out.append(text[i + 1])
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _bare(text: str, i: int) -> Tuple[str, int]:
    j = i
    while j < len(text) and text[j] not in ";,":
        j += 1
    return text[i:j].strip(_OWS), j


def _skip_ows(text: str, i: int) -> int:
    while i < len(text) and text[i] in _OWS:
        i += 1
    return i


def parse_items(text: str) -> List[_Item]:
    """A structured-field-like list: ``name;key=value;...`` items separated by commas, the name
    and values either bare or quoted (``\\"`` and ``\\\\`` escapes). Never raises."""
    items: List[_Item] = []
    i = 0
    n = len(text)
    while i < n:
        i = _skip_ows(text, i)
        if i < n and text[i] == '"':
            name, i = _quoted(text, i)
        else:
            name, i = _bare(text, i)
        params: List[Tuple[str, str]] = []
        while True:
            i = _skip_ows(text, i)
            if i >= n or text[i] != ";":
                break
            i = _skip_ows(text, i + 1)
            j = i
            while j < n and text[j] not in "=;,":
                j += 1
            key = text[i:j].strip(_OWS).lower()
            i = j
            value = ""
            if i < n and text[i] == "=":
                i = _skip_ows(text, i + 1)
                if i < n and text[i] == '"':
                    value, i = _quoted(text, i)
                else:
                    value, i = _bare(text, i)
            params.append((key, value))
        # Whatever is left of a malformed item, up to the next comma outside quotes.
        while i < n and text[i] != ",":
            if text[i] == '"':
                _, i = _quoted(text, i)
            else:
                i += 1
        items.append(_Item(name, params))
        i += 1
    return items


@functools.lru_cache(maxsize=512)
def _ietf(state: str, policy: Optional[str]) -> RateView:
    # Cached: a client sees the same few header values over and over (the policy never changes,
    # `r` and `t` cycle through small numbers), and the view is immutable.
    chosen: Optional[_Item] = None
    best: Tuple[int, int] = (0, 0)
    for item in parse_items(state):
        r = item.number("r")
        if r is None:
            continue
        t = item.number("t")
        # Smallest r first; among equals the largest t (an absent t loses), then the first.
        key = (r, -(t if t is not None else -1))
        if chosen is None or key < best:
            chosen, best = item, key
    if chosen is None:
        return RateView()
    limit = window = None
    if policy is not None:
        for item in parse_items(policy):
            if item.name == chosen.name:
                limit, window = item.number("q"), item.number("w")
                break
    return RateView(limit, chosen.number("r"), chosen.number("t"), window)


def _x_ratelimit(pairs: List[Tuple[str, str]], limit_text: str) -> RateView:
    elements = limit_text.split(",")
    limit = read_number(elements[0])
    window = None
    if limit is not None:
        for element in elements[1:]:
            item = parse_items(element)
            if item and read_number(item[0].name) == limit:
                window = item[0].number("w")
                break
    remaining = read_number(header_value(pairs, "x-ratelimit-remaining"))
    reset = read_number(header_value(pairs, "x-ratelimit-reset"))
    return RateView(limit, remaining, reset, window)


def rate_view(headers: Headers) -> Optional[RateView]:
    """The rate-limit view of an answer's headers: the first style present of ietf
    (``RateLimit``), x-ratelimit (``X-RateLimit-Limit``) and ratelimit (``RateLimit-Limit`` /
    ``-Remaining`` / ``-Reset``). ``None`` when no field can be read."""
    pairs = header_pairs(headers)
    state = header_value(pairs, "ratelimit")
    x_limit = header_value(pairs, "x-ratelimit-limit")
    if state is not None:
        view = _ietf(state, header_value(pairs, "ratelimit-policy"))
    elif x_limit is not None:
        view = _x_ratelimit(pairs, x_limit)
    else:
        names = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset")
        values = [header_value(pairs, name) for name in names]
        if all(v is None for v in values):
            return None
        limit, remaining, reset = (read_number(v) for v in values)
        view = RateView(limit, remaining, reset, None)
    remaining = view.remaining
    if remaining is not None and view.limit is not None and remaining > view.limit:
        remaining = view.limit
    window = view.window_s if view.window_s else None
    view = RateView(view.limit, remaining, view.reset_s, window)
    if view == RateView():
        return None
    return view
