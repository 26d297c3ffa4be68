#!/usr/bin/env python3
"""Checks that the server's modules import one way: no top-level module imports one above it in
LAYERS, and no import cycle crosses a folder: within a folder, files may refer to each other (one
concern split for size, such as the rule-file reader's `impl` blocks), but a cycle through a
subfolder (a concern of its own) is an error.

The graph is read from the source: every `crate::a::b` path and every `super::` path, resolved
against the importing file's module, in production code only (files named `tests*.rs` and items
under `#[cfg(test)]` are left out: tests may reach anywhere). Run from the repository root; prints
the top-level graph and exits non-zero on a violation.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = "server/src"

# Highest first: a module may import only modules below it. `lib.rs` and `main.rs` sit above all.
LAYERS = [
    "fuzz",         # the fuzz targets' entry points: a whole in-process server, wired as `server` does
    "server",       # start-up wiring: settings → listeners, store, overrides, tasks
    "settings",     # flags and environment, read once
    "admin",        # the admin API and its CLI
    "grpc",         # the gRPC listener and RateLimitService
    "http",         # the HTTP listener: /json, /auth, leases, /rlconfig, /metrics
    "adapter",      # what every adapter does around a check
    "trace",        # OpenTelemetry spans
    "listener",     # connection bounds shared by both listeners
    "log_throttle", # client-triggered warnings, throttled
    "adaptive",     # adaptive limits: reports, the fleet's aggregate, the controller
    "limiter",      # the transport-free check
    "notify",       # quota notifications: events, de-duplication, sinks
    "overrides",    # runtime overrides, applied during matching
    "xds",          # rules from a control plane, loaded as files are
    "config",       # rule files → the rule tree, and matching
    "storage",      # counters: layers and backends
    "algorithm",    # the quota math
    "metrics",      # Prometheus families
    "file_watch",   # files watched through their directories
    "clock",        # time
]

# Within a folder, the same rule for the modules whose order is the point of the folder.
FOLDER_LAYERS = {
    ("storage",): ["stack", "layer", "backend"],
}


def strip_tests(text):
    """The text without comments and without the items marked `#[cfg(test)]`."""
    text = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        j = m.end()
        # The item ends at its `;` or at the brace closing its first `{`.
        depth = 0
        while j < len(text):
            c = text[j]
            if c == ";" and depth == 0:
                j += 1
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    j += 1
                    break
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def module_of(rel):
    parts = rel[:-3].split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    return parts


def targets(path, text):
    """Module paths referred to from the module at `path`."""
    found = []
    for m in re.finditer(r"\bcrate::(\{[^}]*\}|[a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)", text):
        body = m.group(1)
        if body.startswith("{"):
            for item in body[1:-1].split(","):
                item = item.strip()
                if item and item[0].islower():
                    found.append(item.split("::"))
        else:
            found.append(body.split("::"))
    # `#[macro_export]` macros live at the crate root, named after nothing: map them to their module.
    found = [["log_throttle"] if t == ["warn_throttled"] else t for t in found]
    for m in re.finditer(r"\b((?:super::)+)([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)?", text):
        up = m.group(1).count("super::")
        base = path[: len(path) - up] if up <= len(path) else []
        found.append(base + (m.group(2).split("::") if m.group(2) else []))
    return found


def main():
    edges = defaultdict(set)  # (folder path tuple) -> {(child, child)}
    top = defaultdict(set)
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs") or f.startswith("tests"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
            if rel in ("lib.rs", "main.rs"):
                continue
            path = module_of(rel)
            text = strip_tests(open(os.path.join(dirpath, f)).read())
            for target in targets(path, text):
                # The deepest folder both share, and the child of it on each side.
                n = 0
                while n < min(len(path), len(target)) and path[n] == target[n]:
                    n += 1
                if n < len(path) and n < len(target):
                    edges[tuple(path[:n])].add((path[n], target[n]))
                    if n == 0:
                        top[path[0]].add(target[0])
    rank = {m: i for i, m in enumerate(LAYERS)}
    problems = []
    for m in sorted(top, key=lambda x: rank.get(x, 99)):
        if m not in rank:
            problems.append(f"module `{m}` is not in LAYERS")
        up = sorted(t for t in top[m] if t in rank and rank[t] < rank.get(m, 99))
        print(f"{m:13} -> {', '.join(sorted(top[m]))}")
        problems += [f"`{m}` imports `{t}`, which is above it" for t in up]
    for folder, order in FOLDER_LAYERS.items():
        for a, b in sorted(edges.get(folder, ())):
            if a in order and b in order and order.index(b) < order.index(a):
                where = "::".join(folder)
                problems.append(f"`{where}::{a}` imports `{where}::{b}`, which is above it")
    for folder, pairs in sorted(edges.items()):
        graph = defaultdict(set)
        for a, b in pairs:
            graph[a].add(b)
        folders = {c for c in graph if os.path.isdir(os.path.join(ROOT, *folder, c))}
        for cycle in cycles(graph):
            if not folders & set(cycle):
                continue
            where = "::".join(folder) or "crate"
            problems.append(f"cycle in `{where}`: {' -> '.join(cycle + cycle[:1])}")
    sys.stdout.flush()
    for p in problems:
        print("error:", p, file=sys.stderr)
    return 1 if problems else 0


def cycles(graph):
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    sys.exit(main())
