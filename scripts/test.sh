#!/usr/bin/env bash
# Every check CI runs: formatting, lints, and the whole test suite (unit, store conformance on
# memory and a real redis-server, end-to-end against the real binary, the proxy-wasm filter in a
# wasmtime host against the real binary). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The NGINX examples run under the real nginx, the OpenResty-style one with Debian's Lua module.
[ -x /usr/sbin/nginx ] || need_apt+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need_apt+=(libnginx-mod-http-lua)
# promtool checks and unit-tests the Prometheus rules in deploy/.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# The micro-apps README is replayed with curl, as a reader would.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# Runtime overrides are tested against a real etcd too.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# The operator console is tested in a real headless browser (tests/conformance/test_console.py).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# The TypeScript client is built and tested with Node's own tools.
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
    echo "installing: ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The tests start their own redis-server, etcd and nginx processes on free loopback ports;
# packaged services (Redis on 6379, etcd on 2379, nginx on 80) are not used.

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# The independent conformance client: Envoy's protos from PyPI over grpcio.
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    -r tests/conformance/requirements.txt

# The proxy-wasm filter, built as proxies load it: the harness tests run this very file.
scripts/build-wasm.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# client_e2e runs the client's example program as a user would; `cargo test` builds examples
# only under hashed names.
cargo build -p sluice-client --examples --locked
# The filter's proxy-wasm glue only exists on wasm32.
cargo clippy -p sluice-filter -p sluice-passthrough --target wasm32-unknown-unknown --locked -- -D warnings
# The crate map (server/src/lib.rs) and every module doc link what they name: a broken link fails.
# Private items are documented too, so links to them resolve and are allowed.
RUSTDOCFLAGS="-D warnings -A rustdoc::private-intra-doc-links" cargo doc --no-deps --document-private-items --locked -p sluice-server
# Imports point one way: no module imports one above it, no import cycle crosses a folder.
python3 scripts/check-layers.py
cargo test --workspace --all-targets --locked
# The Python and TypeScript clients: lints, strict types and unit tests, each with its own
# ecosystem's tools. Their end-to-end tests run in tests/conformance/test_sdks.py below, from the
# built artefacts, against the real sluice and NGINX.
clients/python/check.sh
clients/typescript/check.sh
python3 -m unittest discover -s tests/conformance -v
