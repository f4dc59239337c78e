# syntax=docker/dockerfile:1
# The cxpulse image: the engine binary, the bundled queries and shared
# views, and the image's configuration, run as a non-root user.
#
#   docker build -t cxpulse:0.1.0 .
#   docker run --rm -e CXPULSE__KAFKA__BROKERS=kafka:9092 -p 9464:9464 cxpulse:0.1.0
#
# Build stage: librdkafka is compiled from source (make, a C compiler) with
# OpenSSL for TLS and SASL/SCRAM.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin cxpulse \
 && strip target/release/cxpulse

# Runtime stage: Debian slim with OpenSSL and CA certificates only.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cxpulse \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin cxpulse
COPY --from=build /src/target/release/cxpulse /usr/local/bin/cxpulse
COPY config/image/cxpulse.toml /etc/cxpulse/cxpulse.toml
COPY queries/*.sql /etc/cxpulse/queries/
COPY queries/views/*.sql /etc/cxpulse/queries/views/
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/cxpulse"]
CMD ["run", "--config", "/etc/cxpulse/cxpulse.toml"]
