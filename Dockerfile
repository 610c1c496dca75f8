# syntax=docker/dockerfile:1
#
# Release image of jobhost: the binary plus the bundled plugins. The default command is
# `jobhost up` (API and worker in one process); docker-compose.yml runs `serve` and `worker` as
# separate services from this same image.

# Build stage: the Rust toolchain of rust-toolchain.toml with the wasm32-wasip2 target, because
# `cargo build` also compiles the bundled plugins (host/build.rs).
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY rust-toolchain.toml ./
RUN rustup toolchain install && rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked -p jobhost \
    && mkdir -p /out/plugins \
    && cp target/release/jobhost /out/jobhost \
    && cp plugins/*.wasm /out/plugins/ \
    && find plugins -maxdepth 1 -name '*.toml' ! -name Cargo.toml -exec cp {} /out/plugins/ \;

# Runtime stage: a slim Debian with the binary, the bundled plugins and a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --create-home jobhost \
    && mkdir -p /app/data /app/plugins /usr/share/jobhost/plugins \
    && chown jobhost:jobhost /app/data /app/plugins
COPY --from=builder /out/jobhost /usr/local/bin/jobhost
COPY --from=builder /out/plugins/ /usr/share/jobhost/plugins/

# Bundled plugins first, then user plugins mounted at /app/plugins.
ENV DATA_DIR=/app/data \
    PLUGINS_DIR=/usr/share/jobhost/plugins:/app/plugins \
    LISTEN_ADDR=0.0.0.0:3000 \
    LOG_FORMAT=json
WORKDIR /app
USER jobhost
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:3000/healthz"]
ENTRYPOINT ["jobhost"]
CMD ["up"]
