#!/usr/bin/env bash
# Where Sluice's CPU goes under load: `perf record` (software clock, DWARF call stacks) of a fresh
# Sluice while sluice-load runs, then the stacks folded for a flame graph and summarised by layer.
#
#   bench/profile.sh memory|redis [sluice-load flags...]
#
# Needs Debian's linux-perf (`perf`). Prints the summary (bench/fold.py) on stdout and leaves
# perf.data, the folded stacks and, when `inferno-flamegraph` is on PATH, flame.svg in
# $PROFILE_OUT (default: a new temp dir, printed). The release profile keeps debug line info
# (`debug = 1`), which DWARF unwinding needs.
set -euo pipefail

backend=${1:-}
case "$backend" in
memory | redis) shift ;;
*)
    echo "usage: $0 memory|redis [sluice-load flags...]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
config=${BENCH_CONFIG:-$root/bench/config/sluice.yaml}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-profile.XXXXXX")
out=${PROFILE_OUT:-$work}
mkdir -p "$out"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cleanup() {
    local status=$?
    bench_cleanup
    [[ $status -ne 0 ]] && echo "profile.sh: failed (exit $status); logs kept in $work" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v perf >/dev/null || {
    echo "profile.sh: perf is not installed (apt-get install linux-perf)" >&2
    exit 1
}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-load)
fi

redis_port=
[[ $backend == redis ]] && start_redis redis_port
start_sluice "$config" "$backend" "$redis_port" --store-budget-ms 1000
port=$sluice_grpc_port
for arg in "$@"; do
    [[ $arg == json ]] && port=$sluice_http_port
done
load=("$bin_dir/sluice-load" --target "http://127.0.0.1:$port"
    --shape generic --domain bench --warmup 1 --duration 10 --server-pid "$sluice_pid")
[[ -n $redis_port ]] && load+=(--redis "127.0.0.1:$redis_port")
"${load[@]}" "$@" >"$out/load.json" 2>"$work/load.err" &
load_pid=$!
pids=("$load_pid" "${pids[@]}")
# Sample the measured part only: after the warm-up, for most of the run.
sleep 1.5
perf record -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$sluice_pid" -o "$out/perf.data" \
    -- sleep "${PROFILE_SECONDS:-6}" >"$work/perf.log" 2>&1
wait "$load_pid"
pids=("${pids[@]:1}")
perf script -i "$out/perf.data" 2>/dev/null | python3 "$root/bench/fold.py" "$out/folded.txt"
if command -v inferno-flamegraph >/dev/null; then
    inferno-flamegraph <"$out/folded.txt" >"$out/flame.svg"
fi
echo "load: $(cat "$out/load.json")"
echo "profile.sh: perf.data, folded.txt, load.json (and flame.svg with inferno) in $out" >&2
