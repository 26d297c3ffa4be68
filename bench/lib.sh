# Shared by bench/run.sh and bench/side-by-side.sh (sourced, not run): free loopback ports,
# throwaway redis-server and sluice processes that are stopped on exit.
#
# The caller sets `work` (a temp dir) and `bin_dir`, and calls `bench_cleanup` from its EXIT trap.

pids=()

bench_cleanup() {
    # Only the processes this script started, by pid; TERM first, so sluice can drain.
    local pid
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
}

# A port nothing on 127.0.0.1 answers on. Another process could still take it before we bind;
# the readiness waits turn that race into a clear failure instead of a silent mix-up.
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "bench: no free loopback port found" >&2
    return 1
}

show_log() {
    echo "--- last lines of $1 ---" >&2
    tail -n 30 "$1" >&2 || true
}

# `GET /healthcheck` on 127.0.0.1:$1 returns 200?
healthy() {
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$1/healthcheck" 2>/dev/null
}

# start_redis VAR: starts a throwaway redis-server (no persistence) and stores its port in VAR.
start_redis() {
    local -n port_out=$1
    command -v redis-server >/dev/null || {
        echo "bench: redis-server is not on PATH" >&2
        return 1
    }
    port_out=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port_out" --save '' --appendonly no \
        --protected-mode yes --dir "$work" >"$work/redis-$port_out.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do
        redis-cli -p "$port_out" PING >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: redis-server did not answer on 127.0.0.1:$port_out within 5s" >&2
    show_log "$work/redis-$port_out.log"
    return 1
}

# start_sluice CONFIG BACKEND REDIS_PORT [extra sluice flags...]: starts sluice on free ports and
# waits until it is healthy. Sets sluice_pid, sluice_grpc_port and sluice_http_port.
start_sluice() {
    local config=$1 backend=$2 redis_port=$3
    shift 3
    local args=(--config "$config" --backend "$backend")
    [[ $backend == redis ]] && args+=(--redis-url "redis://127.0.0.1:$redis_port")
    sluice_grpc_port=$(free_port)
    sluice_http_port=$(free_port)
    while [[ $sluice_http_port == "$sluice_grpc_port" ]]; do sluice_http_port=$(free_port); done
    args+=(--grpc-addr "127.0.0.1:$sluice_grpc_port" --http-addr "127.0.0.1:$sluice_http_port")
    local log="$work/sluice-$sluice_grpc_port.log"
    SLUICE_LOG_LEVEL=${SLUICE_LOG_LEVEL:-warn} "${SLUICE_BIN:-$bin_dir/sluice}" "${args[@]}" "$@" \
        >"$log" 2>&1 &
    sluice_pid=$!
    pids+=("$sluice_pid")
    for _ in $(seq 100); do
        if ! kill -0 "$sluice_pid" 2>/dev/null; then
            echo "bench: sluice exited during startup" >&2
            show_log "$log"
            return 1
        fi
        healthy "$sluice_http_port" && return 0
        sleep 0.1
    done
    echo "bench: sluice not healthy on 127.0.0.1:$sluice_http_port within 10s" >&2
    show_log "$log"
    return 1
}
