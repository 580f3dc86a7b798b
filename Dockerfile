# syntax=docker/dockerfile:1
# The yeskv container image: one `yeskv` binary (server, CLI, load generator) on Debian bookworm.
# Build: `docker build -t yeskv .` (BuildKit: the cache mounts below keep the crates and the
# ~25-minute RocksDB build between builds). Run: deploy/README.md (compose.yaml, deploy/k8s).

# --- builder: what scripts/setup installs for the build (clang and libclang for RocksDB's
# bindgen bindings; g++ and make for RocksDB itself, already in the rust image), then the same
# release build as scripts/test, pinned by Cargo.lock.
FROM rust:1-bookworm AS builder
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang libclang-dev g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p yeskv --locked \
 && install -m 0755 target/release/yeskv /usr/local/bin/yeskv

# --- runtime: the binary needs libstdc++ (RocksDB is C++), libgcc and glibc; curl answers the
# health check; ca-certificates for an operator's own tooling (the nodes trust only the cluster
# CA they are given, never the system store).
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl libstdc++6 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 yeskv \
 && useradd --system --uid 10001 --gid yeskv --home-dir /var/lib/yeskv --shell /usr/sbin/nologin yeskv \
 && install -d -o yeskv -g yeskv -m 0750 /var/lib/yeskv \
 && install -d -m 0755 /etc/yeskv
COPY --from=builder /usr/local/bin/yeskv /usr/local/bin/yeskv
# The image's default configuration (deploy/docker/yeskv.toml): a node alone on loopback, data in
# /var/lib/yeskv/data. compose.yaml and deploy/k8s mount their own over it.
COPY deploy/docker/yeskv.toml /etc/yeskv/yeskv.toml
USER yeskv
WORKDIR /var/lib/yeskv
VOLUME ["/var/lib/yeskv"]
# 8081: client HTTP; 7081: internode RPC (TCP) and gossip (UDP, same port number); 6380: the
# Redis protocol, only when `resp.listen` is set.
EXPOSE 8081/tcp 7081/tcp 7081/udp 6380/tcp
# /v1/health answers 200 while the node serves and 503 while it starts, catches up or drains.
# The URL follows the node's `http` address: set YESKV_HEALTH_URL when it is not 127.0.0.1:8081
# (compose.yaml does). -k: a node with TLS presents the cluster CA's certificate; the check
# asks only whether it is serving.
ENV YESKV_HEALTH_URL=http://127.0.0.1:8081/v1/health
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsSk --max-time 2 "$YESKV_HEALTH_URL" >/dev/null || exit 1
# SIGTERM is the clean stop (health 503, server.shutdown_drain_ms, in-flight requests finish,
# RocksDB flushed): give `docker stop` a timeout longer than the drain.
STOPSIGNAL SIGTERM
ENTRYPOINT ["yeskv"]
CMD ["server", "--config", "/etc/yeskv/yeskv.toml"]
