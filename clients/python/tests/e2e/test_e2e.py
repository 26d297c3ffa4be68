"""The installed sluice_client against real services: NGINX in front of an upstream with Sluice
deciding (SLUICE_NGINX_URL), Sluice's own HTTP API (SLUICE_URL) and the upstream's record of what
reached it (SLUICE_UPSTREAM_URL). See conftest.py for the settings."""

from __future__ import annotations

import time
from typing import Any, List

import httpx
import pytest
import requests
from conftest import (
    RecordingSleeper,
    env,
    limit,
    per_decision_second,
    per_second,
    report,
    skew_ms,
    unique,
)

import sluice_client
from sluice_client import (
    Backoff,
    Leases,
    Pacer,
    Reporter,
    RetryBudget,
    RetryPolicy,
    SluiceAdapter,
    SluiceTransport,
    Stop,
    outcome,
)

RATE = 30.0  # requests due per second, three times the limit


def upstream_hits(app_id: str) -> List[int]:
    response = httpx.get(f"{env('SLUICE_UPSTREAM_URL')}/__hits", params={"app_id": app_id})
    response.raise_for_status()
    hits: List[int] = response.json()["hits"]
    return hits


def send_due(client: httpx.Client, count: int) -> List[Any]:
    """Request i is due i/RATE s after the start: sleep until due (never before), then send."""
    answers = []
    start = time.monotonic()
    for i in range(count):
        delay = start + i / RATE - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        response = client.get(f"{env('SLUICE_NGINX_URL')}/e2e/{i}")
        answer = outcome(response)
        assert answer is not None
        answers.append(answer)
    return answers


def test_installed_package_is_used() -> None:
    assert "site-packages" in (sluice_client.__file__ or ""), sluice_client.__file__


def test_paced_requests_stay_under_the_limit() -> None:
    app = unique("py-paced")
    pacer = Pacer()
    transport = SluiceTransport(backoff=_backoff(pacer=pacer))
    started = time.monotonic()
    with httpx.Client(transport=transport, headers={"X-App-Id": app}, timeout=10) as client:
        answers = send_due(client, 90)
    elapsed = time.monotonic() - started
    attempts = sum(a.attempts for a in answers)
    refused = sum(a.statuses.count(429) for a in answers)
    hits = upstream_hits(app)
    stamped = per_second(hits)
    seconds = per_decision_second(hits, limit(), skew_ms())
    report(
        {
            "test": "paced",
            "requests": len(answers),
            "attempts": attempts,
            "429s": refused,
            "elapsed_s": round(elapsed, 2),
            "rate_per_s": round(len(answers) / elapsed, 2),
            "max_upstream_per_s": max(stamped.values()),
            "max_decided_per_s": max(seconds.values()),
            "paced_waits": sum(len(a.paced_ms) for a in answers),
        }
    )
    assert refused <= 1, f"{refused} of {attempts} attempts answered 429"
    assert all(a.status == 200 for a in answers)
    assert len(hits) == 90
    assert max(seconds.values()) <= limit(), (seconds, stamped)


def test_unpaced_requests_retry_after_what_the_server_asks() -> None:
    app = unique("py-unpaced")
    policy = RetryPolicy(max_attempts=10, max_wait_ms=5000)
    transport = SluiceTransport(backoff=_backoff(policy=policy))
    started = time.monotonic()
    with httpx.Client(transport=transport, headers={"X-App-Id": app}, timeout=10) as client:
        answers = send_due(client, 45)
    elapsed = time.monotonic() - started
    refused = sum(a.statuses.count(429) for a in answers)
    checked = 0
    for a in answers:
        for status, wait, server in zip(a.statuses, a.waits_ms, a.retry_afters_ms):
            if status == 429:
                assert server is not None, "a 429 from NGINX carries Retry-After"
                assert wait >= server
                checked += 1
    hits = upstream_hits(app)
    stamped = per_second(hits)
    seconds = per_decision_second(hits, limit(), skew_ms())
    report(
        {
            "test": "unpaced",
            "requests": len(answers),
            "attempts": sum(a.attempts for a in answers),
            "429s": refused,
            "retries_checked": checked,
            "elapsed_s": round(elapsed, 2),
            "max_wait_s": max((w for a in answers for w in a.waits), default=0),
            "max_upstream_per_s": max(stamped.values()),
            "max_decided_per_s": max(seconds.values()),
        }
    )
    assert refused >= 1
    assert checked == refused
    assert [a.status for a in answers] == [200] * 45
    assert max(seconds.values()) <= limit(), (seconds, stamped)


def test_requests_adapter_through_nginx() -> None:
    app = unique("py-requests")
    session = requests.Session()
    session.mount("http://", SluiceAdapter(backoff=_backoff(pacer=Pacer())))
    statuses = []
    attempts = 0
    for i in range(5):
        response = session.get(
            f"{env('SLUICE_NGINX_URL')}/requests/{i}", headers={"X-App-Id": app}, timeout=10
        )
        answer = outcome(response)
        assert answer is not None
        statuses.append(response.status_code)
        attempts += answer.attempts
    report({"test": "requests-adapter", "requests": 5, "attempts": attempts})
    assert statuses == [200] * 5
    assert len(upstream_hits(app)) == 5


def test_a_quota_is_handed_back_at_once() -> None:
    org = unique("py-org")
    sleeper = RecordingSleeper()
    backoff = _backoff(sleeper=sleeper)
    body = {"domain": "sdk", "descriptors": [{"entries": [{"key": "org", "value": org}]}]}
    started = time.monotonic()
    with httpx.Client(transport=SluiceTransport(backoff=backoff), timeout=10) as client:
        first = client.post(f"{env('SLUICE_URL')}/json", json=body)
        second = client.post(f"{env('SLUICE_URL')}/json", json=body)
    elapsed = time.monotonic() - started
    answer = outcome(second)
    assert answer is not None
    report(
        {
            "test": "quota",
            "first": first.status_code,
            "second": second.status_code,
            "attempts": answer.attempts,
            "stopped": answer.stopped.value if answer.stopped else None,
            "slept_ms": sum(sleeper.slept),
            "elapsed_s": round(elapsed, 3),
        }
    )
    assert first.status_code == 200
    assert second.status_code == 429
    assert answer.attempts == 1
    assert answer.stopped is Stop.QUOTA
    assert answer.problem is not None and answer.problem.kind == "quota"
    assert sleeper.slept == [] and answer.waits_ms == []


def test_a_lease_is_released_when_the_block_raises() -> None:
    value = unique("py-upload")
    descriptor = {"uploads": value}
    with Leases(env("SLUICE_URL")) as leases:
        held = []
        with pytest.raises(RuntimeError, match="upload failed"):  # noqa: SIM117
            with leases.hold("sdk", [descriptor], wait_ms=0) as lease:
                held.append(lease.lease_id)
                raise RuntimeError("upload failed")
        pools = leases.holders("sdk", descriptor)["pools"]
        again = leases.acquire("sdk", [descriptor], wait_ms=0)
        leases.release(again)
    report(
        {
            "test": "lease",
            "lease_id_len": len(held[0]),
            "in_use_after": [p["in_use"] for p in pools],
            "reacquired": bool(again.lease_id),
        }
    )
    assert [p["in_use"] for p in pools] == [0]
    assert again.lease_id


def adaptive_reports_accepted() -> float:
    """Sluice's ``sluice_adaptive_reports_total{result="accepted"}`` on /metrics."""
    scrape = httpx.get(f"{env('SLUICE_URL')}/metrics").text
    sample = 'sluice_adaptive_reports_total{result="accepted"}'
    for line in scrape.splitlines():
        if line.startswith(sample):
            return float(line[len(sample) :].strip())
    return 0.0


def test_reports_reach_the_adaptive_rule() -> None:
    before = adaptive_reports_accepted()
    with Reporter(env("SLUICE_URL"), "sdk", max_batch=4) as reporter:
        for i in range(10):
            outcome = reporter.record({"upstream": "payments"}, 20.0 + i, 503 if i == 9 else 200)
            assert outcome == "pending"
        assert reporter.record({"upstream": "search"}, 5.0, 200) == "pending"
        assert reporter.record({"upstream": "payments"}, -1.0, 200) == "invalid"
        flushed = reporter.flush()
        counts = reporter.counts()
    after = adaptive_reports_accepted()
    report(
        {
            "test": "reports",
            "sent": flushed.sent,
            "accepted": flushed.accepted,
            "unmatched": flushed.unmatched,
            "invalid": counts.invalid,
            "metric_delta": after - before,
        }
    )
    # Eleven reports in three batches, all taken: ten match the adaptive rule, one no rule; the
    # impossible one never left the app, so no batch was refused.
    assert (flushed.sent, flushed.failed, flushed.accepted, flushed.unmatched) == (11, 0, 10, 1)
    assert counts.invalid == 1
    # The TypeScript e2e may report to the same Sluice meanwhile: at least ours were counted.
    assert after - before >= 10


def _backoff(**kw: Any) -> Backoff:
    # Each test has a budget of its own, roomy enough that the scripted overload (three times the
    # limit) is resolved by waiting, not refused by the budget; the loop's behaviour is the same.
    kw.setdefault("budget", RetryBudget(ratio=1.0, per_second=10, max=100))
    policy = kw.pop("policy", RetryPolicy())
    return Backoff(policy, transport_errors=(httpx.TransportError, requests.ConnectionError), **kw)
