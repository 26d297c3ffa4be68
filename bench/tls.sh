#!/usr/bin/env bash
# TLS against plaintext on the gRPC listener, on the memory store: the steady-state throughput
# (long-lived connections) and the connection set-up rate (`--reconnect`: a new connection, and a
# TLS handshake, for every request), alternating plaintext and TLS for --rounds rounds.
#
#   bench/tls.sh [--rounds N] [-- sluice-load flags...]
#
# Makes a throwaway CA and server certificate (ECDSA P-256, as cert-manager issues by default)
# with openssl, starts one Sluice in plaintext and one with --grpc-tls-cert on free loopback
# ports, and prints one JSON line per run, then the medians.
set -euo pipefail

rounds=3
while [[ $# -gt 0 ]]; do
    case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [--rounds N] [-- sluice-load flags...]" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
config=${BENCH_CONFIG:-$root/bench/config/sluice.yaml}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-tls.XXXXXX")
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
cleanup() {
    local status=$?
    bench_cleanup
    [[ $status -eq 0 ]] && rm -rf "$work" || echo "tls.sh: failed; logs in $work" >&2
    exit "$status"
}
trap cleanup EXIT

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    (cd "$root" && cargo build --release --quiet -p sluice-server --bin sluice -p sluice-bench --bin sluice-load)
fi

(
    cd "$work"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -subj /CN=bench-ca -days 1 -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj /CN=localhost 2>/dev/null
    printf 'subjectAltName=DNS:localhost\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 1 -extfile server.ext 2>/dev/null
)

start_sluice "$config" memory "" --store-budget-ms 1000
plain_port=$sluice_grpc_port plain_pid=$sluice_pid
start_sluice "$config" memory "" --store-budget-ms 1000 \
    --grpc-tls-cert "$work/server.pem" --grpc-tls-key "$work/server.key"
tls_port=$sluice_grpc_port tls_pid=$sluice_pid

load() {
    "$bin_dir/sluice-load" --shape generic --domain bench --duration 5 --warmup 1 "$@"
}
for round in $(seq "$rounds"); do
    for reconnect in "" --reconnect; do
        extra=()
        [[ -n $reconnect ]] && extra=(--reconnect --connections 4 --in-flight 1)
        load --target "http://127.0.0.1:$plain_port" --server-pid "$plain_pid" "${extra[@]}" "$@" \
            | tee -a "$work/runs.jsonl"
        load --target "http://127.0.0.1:$tls_port" --server-pid "$tls_pid" --tls-ca "$work/ca.pem" \
            "${extra[@]}" "$@" | tee -a "$work/runs.jsonl"
    done
done
python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
out = {}
for r in runs:
    key = ("tls" if r["tls"] else "plaintext") + (" reconnect" if r["reconnect"] else " steady")
    out.setdefault(key, []).append(r)
summary = {k: {"decisions_per_s": statistics.median(r["decisions_per_s"] for r in v),
               "p50_us": statistics.median(r["latency_us"]["p50"] for r in v),
               "p99_us": statistics.median(r["latency_us"]["p99"] for r in v),
               "server_cpu_us_per_decision": statistics.median(r["server_cpu_us_per_decision"] for r in v)}
           for k, v in out.items()}
print(json.dumps({"medians": summary}))
PY
