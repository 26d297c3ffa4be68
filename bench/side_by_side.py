"""Helpers of bench/side-by-side.sh: tag and print one run, then summarise all of them.

    side_by_side.py run RUN_JSON SIDE ROUND ALL_JSONL   append the tagged run, print one line
    side_by_side.py summary ALL_JSONL PEER              medians per side, ratios sluice / peer
"""

import json
import statistics
import sys

FIGURES = {
    "decisions_per_s": "decisions_per_s",
    "server_cpu_us_per_decision": "server_cpu_us_per_decision",
    "p50_us": "latency_us.p50",
    "p99_us": "latency_us.p99",
    "p999_us": "latency_us.p999",
    "max_us": "latency_us.max",
    "errors": "errors",
    "redis_commands_per_decision": "redis.commands_per_decision",
    "redis_cpu_us_per_decision": "redis.cpu_us_per_decision",
}

# Ratios worth printing: throughput (higher is better for Sluice), the rest per decision or
# latency (lower is better).
RATIOS = (
    "decisions_per_s",
    "server_cpu_us_per_decision",
    "p50_us",
    "p99_us",
    "redis_commands_per_decision",
    "redis_cpu_us_per_decision",
)


def pick(run, path):
    value = run
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def run(run_json, side, round_no, all_jsonl):
    with open(run_json) as f:
        r = json.loads(f.read().strip().splitlines()[-1])
    r["side"], r["round"] = side, int(round_no)
    with open(all_jsonl, "a") as f:
        f.write(json.dumps(r, sort_keys=True) + "\n")
    lat = r["latency_us"]
    line = (
        f"round {round_no} {side:>10}: {r['decisions_per_s']:>9.0f} decisions/s  "
        f"cpu {r['server_cpu_us_per_decision']} us/decision  "
        f"p50 {lat['p50']} p99 {lat['p99']} p99.9 {lat['p999']} max {lat['max']} us  "
        f"errors {r['errors']} {r['error_kinds']}"
    )
    redis = r.get("redis")
    if redis:
        line += (
            f"  redis {redis['commands_per_decision']} cmd and "
            f"{redis['cpu_us_per_decision']} us CPU per decision {redis['calls_per_decision']}"
        )
    print(line, file=sys.stderr)


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def summary(all_jsonl, peer):
    with open(all_jsonl) as f:
        runs = [json.loads(line) for line in f]
    medians = {}
    for side in ("sluice", peer):
        mine = [r for r in runs if r["side"] == side]
        medians[side] = {}
        for name, path in FIGURES.items():
            values = [v for v in (pick(r, path) for r in mine) if v is not None]
            medians[side][name] = round(statistics.median(values), 2) if values else None
            medians[side][name + "_all"] = values
    s, p = medians["sluice"], medians[peer]
    ratios = {name: ratio(s[name], p[name]) for name in RATIOS}
    # Each pair ran back to back, so the spread of per-round ratios shows the noise.
    pairs = {}
    for r in runs:
        pairs.setdefault(r["round"], {})[r["side"]] = r["decisions_per_s"]
    ratios["decisions_per_s_by_round"] = [
        ratio(v.get("sluice"), v.get(peer)) for _, v in sorted(pairs.items())
    ]
    print(f"\nmedians of {len(pairs)} rounds{'sluice':>22} {peer:>14}   sluice/{peer}", file=sys.stderr)
    for name in FIGURES:
        if s[name] is None and p[name] is None:
            continue
        print(f"  {name:<30} {s[name]!s:>10} {p[name]!s:>14}   {ratios.get(name, '')}", file=sys.stderr)
    print(f"  throughput ratio by round: {ratios['decisions_per_s_by_round']}", file=sys.stderr)
    print(json.dumps({"sluice": s, peer: p, "ratios": ratios}, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "run":
        run(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "summary":
        summary(*sys.argv[2:])
    else:
        sys.exit(__doc__)
