# The merchant-monitor binary with its dashboard embedded. (Not built by the test suite: CI
# has no Docker engine.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p merchant-monitor

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/merchant-monitor /usr/local/bin/merchant-monitor
ENTRYPOINT ["merchant-monitor"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
