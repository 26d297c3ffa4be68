"""A batch job that sends N items to an API behind Sluice without tripping its limit: a
WorkQueue releases the items at the rate the answers' rate-limit headers announce, and the httpx
transport retries what is refused anyway, after the server's Retry-After.

    python app.py --url http://127.0.0.1:8000 --app-id batch-1 --count 30

Exits 0 once every item has been answered 200, printing one summary line."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Dict

import httpx

try:
    import sluice_client
except ImportError:  # run from the repository without installing the package
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3] / "clients/python/src"))
    import sluice_client

from sluice_client import Backoff, Pacer, RetryPolicy, SluiceTransport, WorkQueue, outcome

#: Sends per item before the job gives up on it (each send retries on its own as well).
MAX_SENDS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description="Send N items through a rate-limited API.")
    parser.add_argument("--url", required=True, help="the API's base URL (NGINX in front)")
    parser.add_argument("--app-id", required=True, help="sent as X-App-Id")
    parser.add_argument("--count", type=int, required=True, help="items to send")
    args = parser.parse_args()

    # One pacer for the queue and the transport: the transport teaches it the limit from every
    # answer, the queue spends it (the transport does not pace again, or each send would wait
    # twice).
    pacer = Pacer()
    queue: WorkQueue[int] = WorkQueue(pacer, max_depth=max(args.count, 1))
    backoff = Backoff(
        RetryPolicy(max_attempts=6, max_wait_ms=10_000),
        pacer=pacer,
        pace=False,
        app_id=args.app_id,
        transport_errors=(httpx.TransportError,),
    )
    client = httpx.Client(
        transport=SluiceTransport(backoff=backoff),
        headers={"X-App-Id": args.app_id},
        timeout=10,
    )
    for item in range(args.count):
        queue.push(item)

    sends: Dict[int, int] = {}
    done = attempts = refusals = 0
    started = time.monotonic()
    with client:
        while done < args.count:
            item = queue.pop(timeout=1).item
            assert item is not None
            sends[item] = sends.get(item, 0) + 1
            response = client.post(f"{args.url.rstrip('/')}/items/{item}", json={"item": item})
            answer = outcome(response)
            if answer is not None:
                attempts += answer.attempts
                refusals += sum(1 for s in answer.statuses if s == 429)
            if response.status_code == 200:
                done += 1
            elif sends[item] >= MAX_SENDS:
                print(f"item {item}: still {response.status_code} after {MAX_SENDS} sends")
                return 1
            else:
                queue.push(item)
    elapsed = time.monotonic() - started
    summary = {
        "app": "micro-app python",
        "items": args.count,
        "ok": done,
        "attempts": attempts,
        "429s": refusals,
        "elapsed_s": round(elapsed, 2),
        "rate_per_s": round(args.count / elapsed, 2) if elapsed > 0 else None,
        "sdk": sluice_client.__version__,
    }
    print("micro-app python " + json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
