# syntax=docker/dockerfile:1
# Build stage: the full toolchain. protoc is vendored by build.rs, so nothing else is needed.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY proto proto
COPY migrations migrations
COPY src src
RUN cargo build --release --locked --bin kraiter-contacts \
    && strip target/release/kraiter-contacts

# Runtime stage: a slim Debian with only CA certificates, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kraiter --create-home kraiter
COPY --from=build /src/target/release/kraiter-contacts /usr/local/bin/kraiter-contacts
USER kraiter
WORKDIR /var/lib/kraiter
ENV KRAITER_LISTEN=0.0.0.0:50051
EXPOSE 50051
ENTRYPOINT ["kraiter-contacts"]
CMD ["serve"]
