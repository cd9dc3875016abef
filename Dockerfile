# syntax=docker/dockerfile:1
# Keel's container image: a release build, then a slim Debian runtime that
# runs `keel serve` as a non-root user.
#
#   docker build -t keel .
#   docker run --rm -p 8080:8080 -e OPENAI_API_KEY -e ANTHROPIC_API_KEY keel
#   docker run --rm -p 8080:8080 -v $PWD/keel.toml:/etc/keel/keel.toml:ro keel
#
# The default config (deploy/kubernetes/base/keel.toml) listens on
# 0.0.0.0:8080 and reads the provider keys from the environment. A config
# that listens elsewhere also sets KEEL_HEALTHCHECK_URL.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p keel \
    && install -m 0755 target/release/keel /usr/local/bin/keel

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: provider TLS (Keel trusts the system roots);
# curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 keel \
    && useradd --system --uid 10001 --gid keel --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin keel
COPY --from=build /usr/local/bin/keel /usr/local/bin/keel
COPY deploy/kubernetes/base/keel.toml /etc/keel/keel.toml
USER 10001:10001
EXPOSE 8080
ENV KEEL_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null "$KEEL_HEALTHCHECK_URL" || exit 1
# SIGTERM drains in-flight requests for [server] drain_timeout, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["keel"]
CMD ["serve", "--config", "/etc/keel/keel.toml"]
