"""What the SDK costs per request: raw httpx vs httpx with ``SluiceTransport``, both on
``httpx.MockTransport`` (no network, so only client-side work is measured).

    python bench/overhead.py [--requests 20000] [--rounds 5]

Each round times ``--requests`` GETs of each client, alternating the two so machine noise hits
both alike; prints the median µs/request of the rounds and the difference."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List

import httpx

try:
    from sluice_client import Backoff, Pacer, SluiceTransport
except ImportError:  # run from the repository without installing
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src"))
    from sluice_client import Backoff, Pacer, SluiceTransport

HEADERS = {"RateLimit-Policy": '"per-app";q=100000;w=1', "RateLimit": '"per-app";r=99999;t=1'}


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers=HEADERS, content=b"ok")


def timed(client: httpx.Client, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        client.get("http://bench.test/")
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    clients: Dict[str, Callable[[], httpx.Client]] = {
        "raw httpx": lambda: httpx.Client(transport=httpx.MockTransport(answer)),
        "sluice": lambda: httpx.Client(
            transport=SluiceTransport(httpx.MockTransport(answer), backoff=Backoff(telemetry=False))
        ),
        "sluice + pacing": lambda: httpx.Client(
            transport=SluiceTransport(
                httpx.MockTransport(answer),
                backoff=Backoff(pacer=Pacer(), telemetry=False),
            )
        ),
    }
    results: Dict[str, List[float]] = {name: [] for name in clients}
    for _ in range(args.rounds):
        for name, make in clients.items():
            with make() as client:
                timed(client, 200)  # warm up
                results[name].append(timed(client, args.requests))
    base = statistics.median(results["raw httpx"])
    print(f"{args.requests} requests x {args.rounds} rounds, median us/request")
    for name, runs in results.items():
        median = statistics.median(runs)
        extra = "" if name == "raw httpx" else f"  (+{median - base:.1f} us)"
        print(f"{name:16} {median:8.1f}{extra}")


if __name__ == "__main__":
    main()
