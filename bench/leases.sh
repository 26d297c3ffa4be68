#!/usr/bin/env bash
# Lease throughput: acquire + release pairs per second through a freshly started, loopback-only
# Sluice, and prints sluice-lease-load's JSON.
#
#   bench/leases.sh memory|redis [sluice-lease-load flags...]
#
# Builds release binaries (SKIP_BUILD=1 reuses them), starts `sluice` with bench/config/leases.yaml
# on free loopback ports (for `redis`, also a throwaway redis-server), runs the load with the
# server's pid (and Redis's address) so the line carries CPU per pair, and stops everything it
# started, however it exits.
set -euo pipefail

backend=${1:-}
case "$backend" in
memory | redis) shift ;;
*)
    echo "usage: $0 memory|redis [sluice-lease-load flags...]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-leases.XXXXXX")
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"

cleanup() {
    local status=$?
    bench_cleanup
    if [[ $status -ne 0 ]]; then
        echo "leases.sh: failed (exit $status); logs kept in $work" >&2
    else
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    echo "leases.sh: building release binaries" >&2
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-lease-load)
fi

redis_port=
[[ $backend == redis ]] && start_redis redis_port
# A saturating closed loop queues requests for longer than the default 10 ms store budget on a
# small machine; that is the overload the budget exists to cut short, not what this run measures.
start_sluice "$root/bench/config/leases.yaml" "$backend" "$redis_port" --store-budget-ms 1000
echo "leases.sh: sluice ($backend) ready, gRPC 127.0.0.1:$sluice_grpc_port" >&2
measure=(--server-pid "$sluice_pid")
[[ $backend == redis ]] && measure+=(--redis "127.0.0.1:$redis_port")
"$bin_dir/sluice-lease-load" --target "http://127.0.0.1:$sluice_grpc_port" "${measure[@]}" "$@" \
    >"$work/load.json" &
load_pid=$!
pids=("$load_pid" "${pids[@]}")
wait "$load_pid"
cat "$work/load.json"
