#!/usr/bin/env bash
# Sluice against another `ShouldRateLimit` server under the same load, alternating A B A B in one
# run, so that both see the same machine (the same noise from whatever else runs on it).
#
#   bench/side-by-side.sh --peer-target http://127.0.0.1:PORT [options] [-- sluice-load flags...]
#
# Options:
#   --backend memory|redis  Sluice's counter store (default memory); for redis a throwaway
#                           redis-server is started for Sluice.
#   --peer-target URL       The other server's gRPC address (loopback only; required).
#   --peer-pid PID          Its process id: adds its CPU time per decision.
#   --peer-redis HOST:PORT  The Redis it counts in: adds Redis commands and CPU per decision.
#   --peer-name NAME        Its label in the output (default: peer).
#   --rounds N              A/B pairs (default 3).
#   --config FILE           Sluice's rules (default bench/config/sluice.yaml).
#   --sluice-target URL, --sluice-pid PID, --sluice-redis HOST:PORT
#                           Measure a Sluice that is already running instead of starting one
#                           (e.g. to compare two builds: start the other as the peer).
#   --out FILE              Also keep every run's JSON line in FILE.
#
# The load is sluice-load with `--shape generic --domain bench --keys 1000 --warmup 1
# --duration 10 --allow-empty-statuses` (the peer's rules must count `key0` of the first
# descriptor in domain `bench`: bench/config/limitador.yaml does for limitador-server), then the
# flags after `--`, which win. Prints each run as it ends, then the medians per side and the
# ratios Sluice / peer; the last line is the summary as JSON. Set SKIP_BUILD=1 to reuse binaries.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
backend=memory
peer_target= peer_pid= peer_redis= peer_name=peer
sluice_target= sluice_pid_given= sluice_redis=
rounds=3
config=$root/bench/config/sluice.yaml
out=

usage() {
    sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while (($#)); do
    case "$1" in
    --backend) backend=$2; shift 2 ;;
    --peer-target) peer_target=$2; shift 2 ;;
    --peer-pid) peer_pid=$2; shift 2 ;;
    --peer-redis) peer_redis=$2; shift 2 ;;
    --peer-name) peer_name=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --sluice-target) sluice_target=$2; shift 2 ;;
    --sluice-pid) sluice_pid_given=$2; shift 2 ;;
    --sluice-redis) sluice_redis=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "side-by-side.sh: unknown option $1" >&2; usage ;;
    esac
done
[[ -n $peer_target ]] || usage
[[ $backend == memory || $backend == redis ]] || usage
[[ $rounds =~ ^[1-9][0-9]?$ ]] || { echo "side-by-side.sh: --rounds must be 1..99" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-sbs.XXXXXX")
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cleanup() {
    local status=$?
    bench_cleanup
    if [[ $status -ne 0 ]]; then
        echo "side-by-side.sh: failed (exit $status); logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "side-by-side.sh: building release binaries" >&2
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-load)
fi

if [[ -z $sluice_target ]]; then
    redis_port=
    if [[ $backend == redis ]]; then
        start_redis redis_port
        sluice_redis=127.0.0.1:$redis_port
    fi
    # A generous store budget: a saturating closed loop on shared cores would otherwise trip the
    # 10 ms default and its circuit breaker, and the figures would measure the failure policy.
    start_sluice "$config" "$backend" "$redis_port" --store-budget-ms 1000
    sluice_target=http://127.0.0.1:$sluice_grpc_port
    sluice_pid_given=$sluice_pid
    echo "side-by-side.sh: sluice ($backend) ready on $sluice_target, pid $sluice_pid" >&2
fi

load_defaults=(--shape generic --domain bench --keys 1000 --warmup 1 --duration 10 --allow-empty-statuses)

# run_side NAME TARGET PID REDIS ROUND: one measured run, its JSON line tagged and appended.
run_side() {
    local name=$1 target=$2 pid=$3 redis=$4 round=$5
    shift 5
    local extra=()
    [[ -n $pid ]] && extra+=(--server-pid "$pid")
    [[ -n $redis ]] && extra+=(--redis "$redis")
    "$bin_dir/sluice-load" "${load_defaults[@]}" --target "$target" "${extra[@]}" "$@" \
        >"$work/run.json" 2>"$work/run.err" &
    local load_pid=$! started=("${pids[@]}")
    pids=("$load_pid" "${pids[@]}")
    local status=0
    wait "$load_pid" || status=$?
    # Forget the finished pid: it could be reused by an unrelated process before cleanup.
    pids=("${started[@]}")
    if ((status != 0)); then
        cat "$work/run.err" >&2
        return 1
    fi
    python3 "$root/bench/side_by_side.py" run "$work/run.json" "$name" "$round" "$work/all.jsonl"
}

echo "side-by-side.sh: load: sluice-load ${load_defaults[*]} $*" >&2
for round in $(seq "$rounds"); do
    run_side sluice "$sluice_target" "$sluice_pid_given" "$sluice_redis" "$round" "$@"
    run_side "$peer_name" "$peer_target" "$peer_pid" "$peer_redis" "$round" "$@"
done
[[ -n $out ]] && cp "$work/all.jsonl" "$out"

python3 "$root/bench/side_by_side.py" summary "$work/all.jsonl" "$peer_name"
