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
ENTRYPOINT ["merchant-monitor"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
