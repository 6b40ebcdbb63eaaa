# syntax=docker/dockerfile:1
# Build stage: the full toolchain. protoc is vendored by build.rs, so nothing else is needed.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY proto proto
COPY migrations migrations
COPY src src
# The workspace lists the benchmark as a member, so cargo needs its sources to load the
# manifest; only the service's binary is built.
COPY bench bench
RUN cargo build --release --locked --bin kraiter-contacts \
    && strip target/release/kraiter-contacts

# Runtime stage: a slim Debian with only CA certificates, running as a non-root user.
# Expected size: the base (~75 MB), CA certificates with openssl (< 10 MB) and the
# stripped binary (15 MB in a release build of this tree): about 90-100 MB unpacked.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kraiter --create-home kraiter
COPY --from=build /src/target/release/kraiter-contacts /usr/local/bin/kraiter-contacts
USER 10001:10001
WORKDIR /var/lib/kraiter
# Listen on every interface inside the container; metrics stay off unless
# KRAITER_METRICS_LISTEN (e.g. 0.0.0.0:9090) is set.
ENV KRAITER_LISTEN=0.0.0.0:50051
# Two malloc arenas, not 8 per core: SQLite's page reads run on blocking threads,
# and an arena each grew the peak RSS by half (README, "Memory and glibc's arenas").
ENV MALLOC_ARENA_MAX=2
EXPOSE 50051 9090
# The gRPC health service, asked by the binary itself: SERVING only while the
# database answers and until shutdown begins.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["kraiter-contacts", "health", "--addr", "127.0.0.1:50051", "--timeout", "3s"]
ENTRYPOINT ["kraiter-contacts"]
CMD ["serve"]
