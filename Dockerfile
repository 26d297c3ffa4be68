# syntax=docker/dockerfile:1
#
# Sluice server image: build with the full Rust toolchain, run on slim Debian as a non-root user.
#   docker build -t sluice .

FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the workspace needs to resolve and build, so a local target/ never enters the context
# of this stage. Every member's manifest must be present for Cargo to load the workspace.
COPY Cargo.toml Cargo.lock ./
COPY server server
COPY wasm-filter wasm-filter
COPY tests tests
COPY wasm-host wasm-host
COPY bench bench
COPY clients/rust clients/rust
COPY fuzz fuzz
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sluice-server --bin sluice \
    && install -m 0755 target/release/sluice /usr/local/bin/sluice

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
# A default rule set so the image runs on its own; mount your own over /etc/sluice/config.
COPY examples/config /etc/sluice/config
USER 10001:10001
EXPOSE 8080 8081
# The image has no curl: bash's /dev/tcp speaks just enough HTTP to read the status line.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthcheck HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["--config", "/etc/sluice/config", "--grpc-addr", "0.0.0.0:8081", "--http-addr", "0.0.0.0:8080"]
