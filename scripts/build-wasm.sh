#!/usr/bin/env bash
# Builds the proxy-wasm filter: target/wasm32-unknown-unknown/release-wasm/sluice_filter.wasm
# (and the benches' pass-through baseline, sluice_passthrough.wasm, beside it)
# (under $CARGO_TARGET_DIR when it is set, as cargo builds it there), optimised with binaryen's
# wasm-opt when Debian has it, and checked against the 300 KB budget. Installs what it needs.
# Prints the path and size of the result on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-unknown-unknown
PROFILE=release-wasm
MAX_BYTES=$((300 * 1024))
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=$TARGET_DIR/$TARGET/$PROFILE/sluice_filter.wasm

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_updated=""
apt_install() {
    if [ -z "$apt_updated" ]; then
        $SUDO apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

build_with_rustup() {
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
    rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
    cargo build --locked -p sluice-filter -p sluice-passthrough --target "$TARGET" --profile "$PROFILE"
}

# Where rustup cannot add the target: Debian's second Rust ships the standard library's source,
# from which cargo builds std for wasm32 itself (see the README's filter section). Its own target
# directory, since it is another compiler.
build_with_debian_rust() {
    echo "rustup could not add $TARGET; building std from source with Debian's rustc-web" >&2
    apt_install rustc-web cargo-web rust-web-src lld
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld \
        /usr/bin/cargo build --locked -p sluice-filter -p sluice-passthrough --target "$TARGET" \
        --profile "$PROFILE" --target-dir "$TARGET_DIR/debian-rust" -Z build-std=std,panic_abort
    mkdir -p "$(dirname "$OUT")"
    cp "$TARGET_DIR/debian-rust/$TARGET/$PROFILE/sluice_filter.wasm" "$OUT"
    cp "$TARGET_DIR/debian-rust/$TARGET/$PROFILE/sluice_passthrough.wasm" "$(dirname "$OUT")/"
}

build_with_rustup || build_with_debian_rust

built=$(stat -c %s "$OUT")
if ! command -v wasm-opt >/dev/null 2>&1; then
    apt_install binaryen || echo "binaryen is not installable here; keeping the unoptimised build" >&2
fi
if command -v wasm-opt >/dev/null 2>&1; then
    # -O3: fastest code, as the profile's opt-level (the result stays under the budget). The
    # exports (the ABI's callbacks and marker) are roots, so nothing the host calls is removed.
    # The features are the ones rustc enables for this target by default (every proxy-wasm
    # runtime has them); binaryen must be told, since the build strips the section that lists
    # them.
    wasm-opt -O3 --strip-debug --strip-producers \
        --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-reference-types --enable-multivalue \
        "$OUT" -o "$OUT.opt"
    mv "$OUT.opt" "$OUT"
fi

size=$(stat -c %s "$OUT")
echo "sluice_filter.wasm: $built bytes built, $size bytes shipped (budget $MAX_BYTES)" >&2
if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "error: $OUT is $size bytes, over the $MAX_BYTES-byte budget" >&2
    exit 1
fi
echo "$OUT $size"
