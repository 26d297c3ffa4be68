#!/usr/bin/env bash
# Runs one load test against a freshly started, loopback-only Sluice and prints sluice-load's JSON.
#
#   bench/run.sh memory|redis [sluice-load flags...]
#   bench/run.sh cluster [--shards N] [sluice-load flags...]
#
# Builds release binaries (set SKIP_BUILD=1 to reuse them), starts `sluice` with
# examples/config/quotas.yaml (or $BENCH_CONFIG) on free loopback ports, for `redis` also a
# throwaway redis-server (no persistence), for `cluster` a throwaway Redis Cluster of N masters
# (default 3, no replicas, no persistence; N=1 is one master holding every slot), waits for
# GET /healthcheck to answer 200, runs sluice-load with the server's pid (so the line carries
# server CPU per decision) and the Redis address, or every master's (so it carries Redis commands
# and Redis CPU per decision, summed over the masters). Everything it started is stopped on exit,
# however it exits. Logs stay in a temp dir printed on failure.
set -euo pipefail

usage() {
    echo "usage: $0 memory|redis [sluice-load flags...]" >&2
    echo "       $0 cluster [--shards N] [sluice-load flags...]" >&2
    exit 2
}

backend=${1:-}
case "$backend" in
memory | redis | cluster) shift ;;
*) usage ;;
esac
shards=3
if [[ ${1:-} == --shards ]]; then
    [[ $backend == cluster ]] || usage
    shards=${2:-}
    shift 2 || usage
fi
[[ $shards =~ ^[1-9][0-9]*$ ]] && ((shards <= 16)) || {
    echo "run.sh: --shards must be 1..16" >&2
    exit 2
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
config=${BENCH_CONFIG:-$root/examples/config/quotas.yaml}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

cleanup() {
    local status=$?
    bench_cleanup
    if [[ $status -ne 0 ]]; then
        echo "run.sh: failed (exit $status); logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "run.sh: building release binaries" >&2
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-load)
fi
for bin in sluice sluice-load; do
    [[ -x $bin_dir/$bin ]] || {
        echo "run.sh: $bin_dir/$bin is missing" >&2
        exit 1
    }
done

redis_port=
redis_addrs=
case "$backend" in
redis)
    start_redis redis_port
    redis_addrs=127.0.0.1:$redis_port
    ;;
cluster)
    start_redis_cluster "$shards" cluster_ports
    redis_port=$(
        IFS=,
        echo "${cluster_ports[*]}"
    )
    redis_addrs=127.0.0.1:${redis_port//,/,127.0.0.1:}
    echo "run.sh: Redis Cluster of $shards master(s) ready on $redis_addrs" >&2
    ;;
esac
# A generous store budget: a saturating closed loop on shared cores would otherwise trip the
# 10 ms default and its circuit breaker, and the figures would measure the failure policy.
start_sluice "$config" "$backend" "$redis_port" --store-budget-ms 1000
echo "run.sh: sluice ($backend) ready, gRPC 127.0.0.1:$sluice_grpc_port, HTTP 127.0.0.1:$sluice_http_port" >&2

# The load generator picks the port by transport; a --target given by the caller comes later and
# wins.
targets=(--target "http://127.0.0.1:$sluice_grpc_port")
for arg in "$@"; do
    [[ $arg == json ]] && targets=(--target "http://127.0.0.1:$sluice_http_port")
done

[[ -n $redis_addrs ]] && targets+=(--redis "$redis_addrs")
# In the background and waited for, so a Ctrl-C or TERM reaches the trap at once instead of
# after the run: bash defers traps while a foreground child runs.
"$bin_dir/sluice-load" "${targets[@]}" --server-pid "$sluice_pid" "$@" >"$work/load.json" &
load_pid=$!
pids=("$load_pid" "${pids[@]}")
wait "$load_pid"
cat "$work/load.json"
