#!/usr/bin/env bash
# What Redis pays for Sluice's batch script, and for the least any script could do, per decision:
# the batch script is loaded into a throwaway redis-server and called by redis-benchmark with
# compact fixed-window requests (one enforced hit each, as the store sends them), DEPTH requests
# per call, 1 000 keys; then minimal scripts with the same arguments isolate the floor (the call
# alone, then its HMGET and HSET per request). No Sluice runs: this is Redis's side alone.
#
#   bench/redis-script.sh [--depths "1 8 32"] [--calls N]
#
# Prints one line per run: Redis CPU (user + sys, INFO cpu) per decision and `EVALSHA`'s own
# usec_per_call (INFO commandstats). The script is assembled from the same files, in the same
# order, as `apply_body!` in server/src/storage/backend/redis/scripts.rs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lua=$root/server/src/storage/backend/redis
depths="1 8 32"
calls=40000
while (($#)); do
    case "$1" in
    --depths) depths=$2; shift 2 ;;
    --calls) calls=$2; shift 2 ;;
    *) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
[[ $calls =~ ^[1-9][0-9]*$ ]] && ((calls <= 1000000)) || { echo "--calls: 1..1000000" >&2; exit 2; }
for d in $depths; do
    [[ $d =~ ^[1-9][0-9]*$ ]] && ((d <= 64)) || { echo "--depths: each 1..64" >&2; exit 2; }
done
command -v redis-benchmark >/dev/null || { echo "redis-script.sh: redis-benchmark is not on PATH" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-script.XXXXXX")
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
trap 'bench_cleanup; rm -rf "$work"' EXIT
start_redis port

{
    printf 'local FIRST_KEY, FIRST_ARG, GUARDED = 0, 1, false\n'
    cat "$lua/clock.lua" "$lua/compact.lua"
    printf 'local function general()\n'
    cat "$lua/script.lua" "$lua/pools.lua" "$lua/batch.lua"
    printf 'return decide\nend\n'
    cat "$lua/requests.lua"
} >"$work/apply.lua"
apply=$(redis-cli -p "$port" -x SCRIPT LOAD <"$work/apply.lua")
floor_call=$(redis-cli -p "$port" SCRIPT LOAD \
    "redis.call('TIME') local out = {} for i = 1, #KEYS do out[i] = {1, 5, 1796660564287200} end return out")
floor_rw=$(redis-cli -p "$port" SCRIPT LOAD \
    "redis.call('TIME') local out = {} for i = 1, #KEYS do local v = redis.call('HMGET', KEYS[i], 'w', 'n') \
redis.call('HSET', KEYS[i], 'n', (tonumber(v[2]) or 0) + 1) out[i] = {1, 5, 1796660564287200} end return out")

cpu() { redis-cli -p "$port" INFO cpu | awk -F: '/used_cpu_(sys|user):/ {s += $2} END {print s}'; }
run() {
    local label=$1 sha=$2 depth=$3 keys=() args=() i
    for ((i = 1; i <= depth; i++)); do
        keys+=("bench:$i:__rand_int__")
        args+=(A "" F 60 1000000000 1)
    done
    local n=$((calls / depth < 2000 ? 2000 : calls / depth))
    redis-benchmark -p "$port" -c 4 -n 1000 -r 1000 EVALSHA "$sha" "$depth" "${keys[@]}" "${args[@]}" >/dev/null
    redis-cli -p "$port" CONFIG RESETSTAT >/dev/null
    local before after
    before=$(cpu)
    redis-benchmark -p "$port" -c 4 -n "$n" -r 1000 EVALSHA "$sha" "$depth" "${keys[@]}" "${args[@]}" >/dev/null
    after=$(cpu)
    local per_call
    per_call=$(redis-cli -p "$port" INFO commandstats | awk -F'usec_per_call=' '/cmdstat_evalsha:/ {split($2, a, ","); print a[1]}')
    python3 -c "print('%-28s depth %2d: Redis CPU %.2f us/decision, EVALSHA %s us/call' % ('$label', $depth, ($after - $before) / ($n * $depth) * 1e6, '$per_call'))"
}
for d in $depths; do
    run "batch script, compact" "$apply" "$d"
    run "floor: call, TIME, reply" "$floor_call" "$d"
    run "floor: + HMGET, HSET" "$floor_rw" "$d"
done
