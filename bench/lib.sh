# Shared by the bench scripts (sourced, not run): free loopback ports, throwaway redis-server
# (one, or the masters of a Redis Cluster) and sluice processes that are stopped on exit.
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

# The kernel's ephemeral range, where outgoing connections take their local ports: a port there can
# be bound by a connection (a cluster bus link, a client) while nothing listens on it, which the
# probe below cannot see, so listening ports are chosen outside it.
read -r ephemeral_low ephemeral_high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null ||
    { ephemeral_low=32768 ephemeral_high=60999; }

# PORT is outside the ephemeral range?
outside_ephemeral() {
    (($1 < ephemeral_low || $1 > ephemeral_high))
}

# A port nothing on 127.0.0.1 answers on, outside the ephemeral range. Another process could still
# take it before we bind; the readiness waits turn that race into a clear failure instead of a
# silent mix-up.
free_port() {
    local port
    for _ in $(seq 1000); do
        port=$((20000 + (RANDOM << 15 | RANDOM) % 45536))
        outside_ephemeral "$port" || continue
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
    wait_redis "$port_out" redis-server
}

# wait_redis PORT WHAT: waits up to 5 s for the Redis on 127.0.0.1:PORT to answer PING; else shows
# its log and fails.
wait_redis() {
    local port=$1 what=$2
    for _ in $(seq 50); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: $what did not answer on 127.0.0.1:$port within 5s" >&2
    show_log "$work/redis-$port.log"
    return 1
}

# A port P such that nothing on 127.0.0.1 answers on P or on P+10000, the cluster bus port Redis
# derives from it, both are outside the ephemeral range, and neither is already in use by a node
# of ours (the ports given as arguments).
free_port_pair() {
    local port taken used
    for _ in $(seq 1000); do
        port=$((20000 + (RANDOM << 15 | RANDOM) % 35536))
        outside_ephemeral "$port" && outside_ephemeral $((port + 10000)) || continue
        taken=0
        for used in "$@"; do
            if ((port == used || port == used + 10000 || port + 10000 == used)); then
                taken=1
            fi
        done
        ((taken)) && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "bench: no free loopback port pair (P, P+10000) found" >&2
    return 1
}

# start_redis_cluster SHARDS VAR: starts SHARDS throwaway Redis Cluster masters (no persistence, no
# replicas) on loopback, gives each an equal share of the 16384 slots, joins them, waits until
# every node reports cluster_state:ok with every slot served and every node known, and stores
# their ports in the array VAR. Slots are assigned by hand rather than with
# `redis-cli --cluster create`, which refuses fewer than three masters.
start_redis_cluster() {
    local shards=$1
    local -n cluster_ports_out=$2
    cluster_ports_out=()
    command -v redis-server >/dev/null || {
        echo "bench: redis-server is not on PATH" >&2
        return 1
    }
    local i port reply
    for ((i = 0; i < shards; i++)); do
        port=$(free_port_pair "${cluster_ports_out[@]}")
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
            --protected-mode yes --dir "$work" --cluster-enabled yes \
            --cluster-config-file "nodes-$port.conf" >"$work/redis-$port.log" 2>&1 &
        pids+=($!)
        cluster_ports_out+=("$port")
    done
    for port in "${cluster_ports_out[@]}"; do
        wait_redis "$port" "cluster node" || return 1
    done
    for ((i = 0; i < shards; i++)); do
        port=${cluster_ports_out[i]}
        for command in "CLUSTER ADDSLOTSRANGE $((i * 16384 / shards)) $(((i + 1) * 16384 / shards - 1))" \
            "CLUSTER SET-CONFIG-EPOCH $((i + 1))"; do
            # shellcheck disable=SC2086 # the command's words
            reply=$(redis-cli -p "$port" $command 2>&1)
            [[ $reply == OK ]] || {
                echo "bench: $command on 127.0.0.1:$port: $reply" >&2
                return 1
            }
        done
    done
    for port in "${cluster_ports_out[@]:1}"; do
        reply=$(redis-cli -p "${cluster_ports_out[0]}" CLUSTER MEET 127.0.0.1 "$port" 2>&1)
        [[ $reply == OK ]] || {
            echo "bench: CLUSTER MEET 127.0.0.1 $port: $reply" >&2
            return 1
        }
    done
    local info healthy_nodes
    for _ in $(seq 300); do
        healthy_nodes=0
        for port in "${cluster_ports_out[@]}"; do
            info=$(redis-cli -p "$port" CLUSTER INFO 2>/dev/null | tr -d '\r')
            if [[ $info == *cluster_state:ok* && $info == *cluster_slots_ok:16384* &&
                $info == *"cluster_known_nodes:$shards"* ]]; then
                healthy_nodes=$((healthy_nodes + 1))
            fi
        done
        ((healthy_nodes == shards)) && return 0
        sleep 0.1
    done
    echo "bench: the $shards-node cluster was not healthy within 30s" >&2
    for port in "${cluster_ports_out[@]}"; do
        echo "--- CLUSTER INFO of 127.0.0.1:$port ---" >&2
        redis-cli -p "$port" CLUSTER INFO >&2 || true
    done
    return 1
}

# start_sluice CONFIG BACKEND REDIS_PORT [extra sluice flags...]: starts sluice on free ports and
# waits until it is healthy. Sets sluice_pid, sluice_grpc_port and sluice_http_port. BACKEND is
# memory, redis, or cluster (Redis Cluster: REDIS_PORT is then the masters' ports separated by
# commas, all given to sluice as seeds).
start_sluice() {
    local config=$1 backend=$2 redis_port=$3
    shift 3
    local args=(--config "$config")
    case "$backend" in
    redis) args+=(--backend redis --redis-url "redis://127.0.0.1:$redis_port") ;;
    cluster)
        local seeds=() port
        for port in ${redis_port//,/ }; do seeds+=("127.0.0.1:$port"); done
        args+=(--backend redis --redis-type cluster --redis-url "$(
            IFS=,
            echo "${seeds[*]}"
        )")
        ;;
    *) args+=(--backend "$backend") ;;
    esac
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
