"""Folds `perf script` output into flame-graph stacks and summarises where the CPU went.

    perf script -i perf.data | python3 bench/fold.py FOLDED_OUT > summary.txt

FOLDED_OUT gets one line per distinct stack, `thread;outermost;...;innermost count` (the input of
any flame-graph renderer, e.g. `inferno-flamegraph < FOLDED_OUT > flame.svg`). The summary on
stdout has the share of samples by layer (judged by the innermost frame of a crate that is not generic,
so time in memcpy or the allocator is charged to whoever called it; kernel time is its own
layer), the inclusive share of frames that mark the request path (the allocator and memcpy
among them), and the top innermost frames.
"""

import collections
import re
import sys

# A frame's crate decides its layer; frames of generic crates (std, core, alloc, bytes, the
# allocator, libc) are skipped so their time is charged to the first caller that is not generic.
CRATE_LAYERS = {
    "h2": "HTTP/2 (h2)",
    "hyper": "HTTP (hyper, tower, axum)",
    "hyper_util": "HTTP (hyper, tower, axum)",
    "tower": "HTTP (hyper, tower, axum)",
    "tower_layer": "HTTP (hyper, tower, axum)",
    "http": "HTTP (hyper, tower, axum)",
    "http_body": "HTTP (hyper, tower, axum)",
    "http_body_util": "HTTP (hyper, tower, axum)",
    "axum": "HTTP (hyper, tower, axum)",
    "tonic": "gRPC (tonic)",
    "tonic_prost": "gRPC (tonic)",
    "tonic_health": "gRPC (tonic)",
    "prost": "protobuf (prost)",
    "envoy_types": "protobuf (prost)",
    "matchit": "HTTP (hyper, tower, axum)",
    "percent_encoding": "HTTP (hyper, tower, axum)",
    "fnv": "HTTP (hyper, tower, axum)",
    "tokio": "tokio runtime",
    "tokio_util": "tokio runtime",
    "mio": "tokio runtime",
    "tracing": "tracing",
    "tracing_core": "tracing",
    "tracing_subscriber": "tracing",
    "redis": "redis client",
    "combine": "redis client",
    "prometheus_client": "metrics",
    "arc_swap": "sluice: limiter + matching",
}
SLUICE_MODULES = {
    "limiter": "sluice: limiter + matching",
    "overrides": "sluice: limiter + matching",
    "algorithm": "sluice: counter store",
    "config": "sluice: limiter + matching",
    "clock": "sluice: limiter + matching",
    "storage": "sluice: counter store",
    "metrics": "metrics",
    "grpc": "sluice: gRPC adapter",
    "http": "sluice: HTTP adapter",
    "adapter": "sluice: gRPC adapter",
    "trace": "tracing",
    "listener": "sluice: server setup layers",
    "server": "sluice: server setup layers",
}
GENERIC = {"core", "std", "alloc", "bytes", "slab", "hashbrown", "parking_lot", "parking_lot_core",
           "futures_util", "futures_core", "pin_project_lite", "smallvec", "indexmap", "mimalloc",
           "lock_api", "__rustc"}

# Frames whose inclusive share tells where a request's time goes (regular expressions).
MARKERS = [
    r"RateLimiter<S>::check",
    r"^<sluice_server::grpc::RlsService",
    r"sluice_server::http::json::check",
    r"sluice_server::storage::backend::memory",
    r"sluice_server::storage::backend::redis",
    r"prometheus_client",
    r"^<?prost::|Message>::(encode|decode)",
    r"^<?h2::codec",
    r"^<?h2::proto::streams",
    r"^<?tonic::",
    r"^<?tracing",
    r"^<?tokio::runtime::scheduler",
    r"^(mi_|_mi_)",
    r"memcpy|memmove",
    r"^\[kernel\]",
]
MARKER_RES = [(m, re.compile(m)) for m in MARKERS]

OFFSET = re.compile(r"\+0x[0-9a-f]+$")
HASH = re.compile(r"::h[0-9a-f]{16}$")


def frames(lines):
    """Yields (thread, [innermost..outermost frames]) per sample."""
    thread, stack = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if thread is not None:
                yield thread, stack
            thread, stack = None, []
        elif not line[0].isspace():
            thread = line.split()[0]
        else:
            parts = line.strip().split(None, 1)
            if len(parts) < 2:
                continue
            sym_dso = parts[1]
            sym, _, dso = sym_dso.rpartition(" (")
            sym = HASH.sub("", OFFSET.sub("", sym.strip()))
            if sym in ("", "[unknown]"):
                sym = "[unknown " + dso.rstrip(")").rsplit("/", 1)[-1] + "]"
            if "kernel" in dso:
                sym = "[kernel] " + sym
            stack.append(sym)
    if thread is not None:
        yield thread, stack


def crate_path(sym):
    """The path of the item a symbol belongs to: for `<T as Trait>::f`, T's path."""
    if sym.startswith("<"):
        depth, i = 0, 1
        while i < len(sym):
            c = sym[i]
            if c == "<":
                depth += 1
            elif c == ">":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and sym.startswith(" as ", i):
                break
            i += 1
        sym = sym[1:i]
    sym = sym.lstrip("&[*").removeprefix("const ").removeprefix("mut ").removeprefix("dyn ")
    return sym.split("<", 1)[0].split("::")


def layer_of(stack):
    if stack and stack[0].startswith("[kernel]"):
        return "kernel (syscalls, TCP, scheduling)"
    for frame in stack:
        if frame.startswith("["):
            continue
        path = crate_path(frame)
        crate = path[0]
        if crate == "sluice_server" and len(path) > 1:
            return SLUICE_MODULES.get(path[1], "sluice: other")
        if crate in CRATE_LAYERS:
            return CRATE_LAYERS[crate]
        if len(path) > 1 and crate not in GENERIC:
            return "other crates"
    return "std / allocator / libc only"


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: perf script | python3 bench/fold.py FOLDED_OUT (the folded stacks' path)")
    folded_out = sys.argv[1]
    folded = collections.Counter()
    layers = collections.Counter()
    leaves = collections.Counter()
    markers = collections.Counter()
    total = 0
    for thread, stack in frames(sys.stdin):
        if not stack:
            continue
        total += 1
        thread = re.sub(r"-\d+$", "", thread)
        folded[";".join([thread] + [f.replace(";", ":") for f in reversed(stack)])] += 1
        layers[layer_of(stack)] += 1
        leaves[stack[0]] += 1
        for m, pattern in MARKER_RES:
            if any(pattern.search(frame) for frame in stack):
                markers[m] += 1
    with open(folded_out, "w") as f:
        for stack, n in sorted(folded.items()):
            f.write(f"{stack} {n}\n")
    if total == 0:
        print("no samples")
        return
    pct = lambda n: f"{100.0 * n / total:5.1f}%"
    print(f"{total} samples\n\nby layer (innermost known frame):")
    for name, n in layers.most_common():
        print(f"  {pct(n)}  {name}")
    print("\ninclusive share of request-path frames:")
    for m in MARKERS:
        print(f"  {pct(markers[m])}  {m}")
    print("\ntop innermost frames:")
    for sym, n in leaves.most_common(30):
        print(f"  {pct(n)}  {sym[:150]}")


if __name__ == "__main__":
    main()
