# The merchant-monitor binary with its dashboard embedded. (Not built by the test suite: CI
# has no Docker engine.)
FROM node:20-bookworm AS node

FROM rust:1.95-bookworm AS build
# Node.js 20 for the dashboard build (Debian's is older than Vite needs).
COPY --from=node /usr/local/bin /usr/local/bin
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
WORKDIR /src
COPY . .
RUN cargo build --release -p merchant-monitor

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/merchant-monitor /usr/local/bin/merchant-monitor
# Runs as an unprivileged user that owns the data directory (a named volume mounted there
# takes this ownership when it is first created).
RUN useradd --system --uid 10001 --home-dir /data monitor && mkdir -p /data && chown monitor /data
USER monitor
# Healthy while /healthz answers 200 (bash's /dev/tcp: the image needs no HTTP client).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["merchant-monitor"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
