#!/usr/bin/env bash
# Runs one load test against a freshly started, loopback-only Sluice and prints sluice-load's JSON.
#
#   bench/run.sh memory|redis [sluice-load flags...]
#
# Builds release binaries (set SKIP_BUILD=1 to reuse them), starts `sluice` with
# examples/config/quotas.yaml on free loopback ports, for `redis` also a throwaway redis-server
# (no persistence), waits for GET /healthcheck to answer 200, runs sluice-load and stops
# everything it started on exit, however it exits. Logs stay in a temp dir printed on failure.
set -euo pipefail

usage() {
    echo "usage: $0 memory|redis [sluice-load flags...]" >&2
    exit 2
}

backend=${1:-}
case "$backend" in
memory | redis) shift ;;
*) usage ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
config=$root/examples/config/quotas.yaml
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
pids=()

cleanup() {
    local status=$?
    # Only the processes this script started, by pid; TERM first, so sluice can drain.
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

# A port nothing on 127.0.0.1 answers on. Another process could still take it before we bind;
# the health wait below turns that race into a clear failure instead of a silent mix-up.
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "run.sh: no free loopback port found" >&2
    return 1
}

# `GET /healthcheck` returns 200? Uses curl when present, plain bash otherwise.
healthy() {
    local port=$1
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthcheck" 2>/dev/null
        return
    fi
    local status_line
    exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null || return 1
    printf 'GET /healthcheck HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
    IFS= read -r -t 1 status_line <&3 || status_line=
    exec 3<&-
    [[ $status_line == "HTTP/1."?" 200"* ]]
}

show_log() {
    echo "--- last lines of $1 ---" >&2
    tail -n 30 "$1" >&2 || true
}

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

server_args=(--config "$config" --backend "$backend")

if [[ $backend == redis ]]; then
    command -v redis-server >/dev/null || {
        echo "run.sh: redis-server is not on PATH" >&2
        exit 1
    }
    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
        --protected-mode yes --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null && break
        sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null || {
        echo "run.sh: redis-server did not listen on 127.0.0.1:$redis_port within 5s" >&2
        show_log "$work/redis.log"
        exit 1
    }
    server_args+=(--redis-url "redis://127.0.0.1:$redis_port")
fi

grpc_port=$(free_port)
http_port=$(free_port)
while [[ $http_port == "$grpc_port" ]]; do http_port=$(free_port); done
server_args+=(--grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port")

SLUICE_LOG_LEVEL=${SLUICE_LOG_LEVEL:-warn} "$bin_dir/sluice" "${server_args[@]}" >"$work/sluice.log" 2>&1 &
sluice_pid=$!
pids+=("$sluice_pid")

ready=0
for _ in $(seq 100); do
    if ! kill -0 "$sluice_pid" 2>/dev/null; then
        echo "run.sh: sluice exited during startup" >&2
        show_log "$work/sluice.log"
        exit 1
    fi
    if healthy "$http_port"; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ $ready != 1 ]]; then
    echo "run.sh: sluice not healthy on 127.0.0.1:$http_port within 10s" >&2
    show_log "$work/sluice.log"
    exit 1
fi
echo "run.sh: sluice ($backend) ready, gRPC 127.0.0.1:$grpc_port, HTTP 127.0.0.1:$http_port" >&2

# CPU time (user + system, in clock ticks) the server has used so far. On a 2-core machine the
# load generator competes with the server, so throughput alone says little; server CPU per
# request compares builds fairly.
cpu_ticks() {
    local stat
    read -r stat <"/proc/$1/stat"
    stat=${stat##*) }
    # After the command name: state is field 3, utime field 14, stime field 15.
    set -- $stat
    echo $((${12} + ${13}))
}
ticks_per_s=$(getconf CLK_TCK)
cpu_before=$(cpu_ticks "$sluice_pid")

# In the background and waited for, so a Ctrl-C or TERM reaches the trap at once instead of
# after the run: bash defers traps while a foreground child runs.
"$bin_dir/sluice-load" --target "http://127.0.0.1:$grpc_port" "$@" >"$work/load.json" &
load_pid=$!
pids=("$load_pid" "${pids[@]}")
wait "$load_pid"
cpu_after=$(cpu_ticks "$sluice_pid")

# Add the server's CPU to the JSON line. It covers the warm-up too: compare with --warmup 0.
python3 - "$work/load.json" "$((cpu_after - cpu_before))" "$ticks_per_s" <<'PY'
import json, sys
result = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
cpu_s = int(sys.argv[2]) / int(sys.argv[3])
result["server_cpu_s"] = round(cpu_s, 2)
total = result["requests"]
result["server_cpu_us_per_request"] = round(cpu_s * 1e6 / total, 1) if total else None
print(json.dumps(result, sort_keys=True))
PY
