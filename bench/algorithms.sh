#!/usr/bin/env bash
# Throughput and CPU of each algorithm relative to fixed_window, on one store, under the same load.
#
#   bench/algorithms.sh memory|redis|cluster [--rounds N] [--shards N] [-- sluice-load flags...]
#
# Runs bench/run.sh with bench/config/sluice.yaml rewritten for each algorithm (limits far above
# the load, so every answer is OK and writes its counter), alternating fixed, sliding, token
# bucket in every round so drift in the machine's load hits all three alike. Prints each run, then
# the medians and the ratios to fixed_window as one JSON line. `cluster` runs on a throwaway Redis
# Cluster of `--shards` masters (default 3), Redis figures summed over them (see bench/run.sh).
set -euo pipefail

usage() {
    echo "usage: $0 memory|redis|cluster [--rounds N] [--shards N] [-- sluice-load flags...]" >&2
    exit 2
}
backend=${1:-}
case "$backend" in
memory | redis | cluster) shift ;;
*) usage ;;
esac
rounds=3
shards=()
while [[ $# -gt 0 && $1 != -- ]]; do
    case "$1" in
    --rounds) rounds=${2:-} ;;
    --shards)
        [[ $backend == cluster ]] || usage
        shards=(--shards "${2:-}")
        ;;
    *) usage ;;
    esac
    shift 2 || usage
done
[[ ${1:-} == -- ]] && shift

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-algorithms.XXXXXX")
trap 'rm -rf "$work"' EXIT

for algorithm in fixed_window sliding_window token_bucket; do
    sed "s/rate_limit: {/rate_limit: {algorithm: $algorithm, /" \
        "$root/bench/config/sluice.yaml" >"$work/$algorithm.yaml"
done

# One build, then every run reuses it.
(cd "$root" && cargo build --release --locked -q -p sluice-server -p sluice-bench)
for round in $(seq "$rounds"); do
    for algorithm in fixed_window sliding_window token_bucket; do
        line=$(BENCH_CONFIG="$work/$algorithm.yaml" SKIP_BUILD=1 "$root/bench/run.sh" "$backend" \
            "${shards[@]}" --shape generic --domain bench --entries 1 --duration 8 "$@" | tail -n 1)
        echo "$line" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
r["algorithm"], r["round"] = sys.argv[1], int(sys.argv[2])
print(json.dumps(r))' "$algorithm" "$round" | tee -a "$work/runs.jsonl" |
            python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
redis_cpu = (r.get("redis") or {}).get("cpu_us_per_decision", "-")
line = "round %d %15s: %8.0f/s cpu %s us/decision redis %s us/decision errors %d" % (
    r["round"], r["algorithm"], r["decisions_per_s"], r["server_cpu_us_per_decision"],
    redis_cpu, r["errors"])
print(line, file=sys.stderr)'
    done
done

python3 - "$work/runs.jsonl" "$backend" "${shards[1]:-}" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
figures = ("decisions_per_s", "server_cpu_us_per_decision")
out = {"backend": sys.argv[2], "rounds": max(r["round"] for r in runs), "medians": {}, "ratio_to_fixed_window": {}}
if sys.argv[2] == "cluster":
    out["shards"] = int(sys.argv[3] or 3)
def redis_figure(r, name):
    return (r.get("redis") or {}).get(name)
for alg in ("fixed_window", "sliding_window", "token_bucket"):
    mine = [r for r in runs if r["algorithm"] == alg]
    m = {f: statistics.median(r[f] for r in mine) for f in figures}
    for name in ("cpu_us_per_decision", "commands_per_decision"):
        values = [redis_figure(r, name) for r in mine if redis_figure(r, name) is not None]
        if values:
            m["redis_" + name] = statistics.median(values)
    m["errors"] = sum(r["errors"] for r in mine)
    out["medians"][alg] = m
base = out["medians"]["fixed_window"]
for alg, m in out["medians"].items():
    out["ratio_to_fixed_window"][alg] = {
        f: round(m[f] / base[f], 3) for f in m if f != "errors" and base.get(f)
    }
print(json.dumps(out))
PY
