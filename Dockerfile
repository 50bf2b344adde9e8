# syntax=docker/dockerfile:1
#
# The scheduler service: REST and gRPC on one port (8080).
#
#   docker build -t scheduler .
#   docker run --rm -p 8080:8080 scheduler                  # embedded store in /var/lib/scheduler
#   docker compose up --build                               # with MongoDB and Kafka: docker-compose.yml

############################################################################################
# Build stage
############################################################################################
FROM rust:1-bookworm AS builder

# rdkafka-sys builds librdkafka from source with its own configure script (bash, make, a C
# and C++ compiler, perl, python3) and links zlib (libz-sys finds it through pkg-config).
# The rust image is built on buildpack-deps, which has most of these already; listing them
# keeps the build working if that ever changes. No cmake: the cmake-build feature is off.
# Versions are not pinned (DL3008): the base image's release picks them, security fixes included.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential perl python3 pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when the manifest, the lock
# file, the build script or the protobuf schema change, not on every source edit. The bench is
# declared in Cargo.toml, so a stand-in file must exist for the manifest to load.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && echo 'fn main() {}' > benches/service.rs \
    && cargo build --release --locked --bin scheduler \
    && rm -rf src benches

# The real sources. Touching them makes cargo rebuild the crate itself over the stand-ins
# (COPY keeps the files' own modification times, which may be older than the stand-ins').
COPY src/ src/
COPY benches/ benches/
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin scheduler \
    && cp target/release/scheduler /usr/local/bin/scheduler

############################################################################################
# Runtime stage
############################################################################################
FROM debian:bookworm-slim

# ca-certificates: TLS to MongoDB (mongodb+srv, Atlas) and to any TLS Kafka. zlib1g: the one
# shared library the binary needs beyond glibc and libgcc (librdkafka links it; the slim image
# has it already). No curl: the health check below speaks HTTP through bash's /dev/tcp.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 scheduler \
    && useradd --system --uid 10001 --gid scheduler --home-dir /var/lib/scheduler \
        --shell /usr/sbin/nologin scheduler \
    && install -d -o scheduler -g scheduler -m 0750 /var/lib/scheduler

COPY --from=builder /usr/local/bin/scheduler /usr/local/bin/scheduler

# The embedded store's directory (--data-dir); unused when the store is MongoDB.
ENV SCHEDULER_DATA_DIR=/var/lib/scheduler \
    SERVER_PORT=8080
VOLUME ["/var/lib/scheduler"]
WORKDIR /var/lib/scheduler

# Numeric, so a runtime that checks for a non-root user (runAsNonRoot) can tell.
USER 10001:10001
EXPOSE 8080

# Healthy once /readyz answers 200 (the process is up and its store answers).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SERVER_PORT:-8080} && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q '^HTTP/1.1 200'"]

ENTRYPOINT ["/usr/local/bin/scheduler"]
