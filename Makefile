# The commands a newcomer needs, each the one the README gives.
.PHONY: run test bench docker up down proto

# The demo: embedded storage in ./data, generated traffic, the dashboard.
run:
	cargo run --release -- demo

# Every test suite (what CI runs after installing what is missing: .ci/run).
test:
	./scripts/test

# The default benchmarks; pass more with ARGS, e.g. make bench ARGS="--only publish".
bench:
	cargo run --release -- bench $(ARGS)

# The runtime image.
docker:
	docker build -t merchant-monitor .

# Cluster mode on one host (docker-compose.yml), and its end.
up:
	docker compose up --build -d
down:
	docker compose down

# The gRPC code is generated from proto/ by crates/grpc/build.rs (with the protoc the build
# brings, protoc-bin-vendored).
proto:
	cargo build -p mm-grpc
