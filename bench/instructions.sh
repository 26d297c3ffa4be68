#!/usr/bin/env bash
# Instructions per decision: Sluice under callgrind, a fixed number of closed-loop requests, and
# the counters of exactly those requests. Deterministic enough to decide on an optimisation when
# wall-clock figures are noisy (a shared 2-core machine): the same build gives the same count
# within about 1%, whatever else runs.
#
#   bench/instructions.sh memory|redis [sluice-load flags...]
#
# Starts Sluice under `valgrind --tool=callgrind` (and, for redis, a throwaway redis-server),
# sends a warm-up, zeroes the counters (`callgrind_control --zero`), sends --max-requests
# (default 20000) requests, dumps, and prints one JSON line: total instructions (Ir) and Ir per
# decision; the top functions by inclusive cost go to stderr and the dump stays in
# $INSTRUCTIONS_OUT (default: a temp dir, printed) for callgrind_annotate.
#
# Kernel work (syscalls, loopback TCP) is not counted: compare syscall counts with
# `strace -c -f -p PID` or CPU time with bench/run.sh.
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
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-callgrind.XXXXXX")
out=${INSTRUCTIONS_OUT:-$work/callgrind.out}
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cleanup() {
    local status=$?
    bench_cleanup
    [[ $status -ne 0 ]] && echo "instructions.sh: failed (exit $status); logs kept in $work" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v valgrind >/dev/null || {
    echo "instructions.sh: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
}
if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-load)
fi

redis_port=
[[ $backend == redis ]] && start_redis redis_port
# The sluice started by start_sluice runs under callgrind; its pid is valgrind's, which is the
# one callgrind_control addresses. Startup under valgrind is slow: allow it.
real_bin=${SLUICE_BIN:-$bin_dir/sluice}
wrapper=$work/sluice-under-callgrind
cat >"$wrapper" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
    --collect-atstart=yes "$real_bin" "\$@"
EOF
chmod +x "$wrapper"
SLUICE_BIN=$wrapper start_sluice "$config" "$backend" "$redis_port" --store-budget-ms 1000

port=$sluice_grpc_port
for arg in "$@"; do
    [[ $arg == json ]] && port=$sluice_http_port
done
load=("$bin_dir/sluice-load" --target "http://127.0.0.1:$port"
    --shape generic --domain bench --connections 1 --in-flight 8 --warmup 0 --duration 120)
"${load[@]}" --max-requests 2000 "$@" >/dev/null 2>&1
callgrind_control --zero "$sluice_pid" >/dev/null
"${load[@]}" --max-requests 20000 "$@" >"$work/load.json"
callgrind_control --dump "$sluice_pid" >/dev/null
# The dump lands beside $out with a sequence suffix.
dump=$(ls -t "$out"* | head -n 1)

python3 - "$work/load.json" "$dump" <<'PY'
import json, sys
load = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
total = None
for line in open(sys.argv[2]):
    if line.startswith("summary:") or line.startswith("totals:"):
        total = int(line.split()[1])
decisions = load["ok"] + load["over_limit"]
print(json.dumps({
    "instructions": total,
    "decisions": decisions,
    "errors": load["errors"],
    "instructions_per_decision": round(total / decisions) if total and decisions else None,
    "dump": sys.argv[2],
}))
PY
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,60p' >&2 || true
