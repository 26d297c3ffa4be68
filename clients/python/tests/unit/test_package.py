"""The package's surface: optional dependencies stay optional."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import sluice_client
from sluice_client import Answer, Reply, telemetry


def test_import_pulls_in_no_optional_package() -> None:
    code = (
        "import sys, sluice_client\n"
        "b = sluice_client.Backoff(telemetry=False)\n"
        "bad = [m for m in ('httpx', 'requests', 'opentelemetry') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    src = str(pathlib.Path(sluice_client.__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": src})


def test_lazy_names_and_unknown_names() -> None:
    assert sluice_client.SluiceTransport.__name__ == "SluiceTransport"
    assert sluice_client.Leases.__name__ == "Leases"
    with pytest.raises(AttributeError):
        _ = sluice_client.NoSuchThing


def test_without_opentelemetry_nothing_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "available", lambda: False)
    assert telemetry.auto() is None
    assert sluice_client.Backoff().telemetry is None


def test_answer_reads_the_rate_view_on_demand() -> None:
    reply: Reply[None] = Reply(200, [("RateLimit", '"a";r=1;t=2')])
    answer = Answer(reply, None, 1)
    assert answer.view is not None and answer.view.remaining == 1
    assert sluice_client.outcome(object()) is None
