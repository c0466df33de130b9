# ringsfu — the commands a newcomer needs. `make help` lists them.

CARGO ?= cargo

.PHONY: help run build test test-deps test-rust lint fmt bench bench-browser loadtest scaling flamegraph fuzz

help:
	@echo "make run    build (release) and start ringsfu on its embedded defaults"
	@echo "make test   everything CI runs: unit, integration and browser tests"
	@echo "make test-deps  install chromium and the npm packages the browser tests need"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make bench  criterion micro-benchmarks, the shard core's cost per packet, the machine's ceiling, short load tests, the gateway, 4 Chromium pages (reports/)"
	@echo "make bench-browser  server CPU per forwarded packet with 4 headless Chromium pages in one call (light load)"
	@echo "make loadtest SCENARIO=meeting ARGS='--size 10'   one load-test scenario (reports/)"
	@echo "make scaling ARGS='--max-shards 8'   one broadcast channel over 1..N shards (300 listeners each), per-shard efficiency against one shard (reports/)"
	@echo "make flamegraph   CPU profiles of ringsfu under the audio room, broadcast and meeting (flamegraphs/)"
	@echo "make fuzz   each cargo-fuzz target for FUZZ_SECONDS (default 60) on nightly, from fuzz/corpus (new inputs: fuzz/scratch)"
	@echo "make deb    the Debian package with both binaries and their systemd units (target/debian/)"
	@echo "make test-package  build the .deb, install it into a throw-away root, start both units, ask /health/ready"
	@echo "make docker the container image (IMAGE, default ringsfu:latest; deploy/docker/)"

run:
	$(CARGO) run --release --bin ringsfu

build:
	$(CARGO) build --release --workspace --bins

test: test-deps test-rust test-package

# Chromium, Node.js and the npm packages the browser tests use (installs only what is missing).
test-deps:
	./scripts/test-deps.sh

test-rust:
	$(CARGO) test --workspace --all-targets

.PHONY: deb test-package docker

# The Debian package (deploy/debian/, [package.metadata.deb]); cargo-deb is installed if missing.
deb:
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	$(CARGO) build --release --bin ringsfu --bin sfu-gateway
	$(CARGO) deb --no-build

# Builds the .deb and checks it installed: contents, both units started, /health/ready, SIGHUP.
test-package:
	./scripts/check-package.sh

# The container image; base images from Docker Hub, or built from Debian's mirror without it.
IMAGE ?= ringsfu:latest
docker:
	IMAGE=$(IMAGE) ./deploy/docker/build.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

REPORTS ?= reports
SCENARIO ?= meeting
# The gateway ours replaces (Odoo's sfu-gateway binary, built elsewhere): `make bench` measures it
# alongside ours when set (docs/gateway.md).
COMPARE_GATEWAY ?=
ARGS ?=
BENCH_SECONDS ?= 20

# Micro-benchmarks, the sans-IO shard's CPU per forwarded packet in the simulation, then ringsfu
# under load as ratios of this machine's ceiling, then the gateway.
bench: build
	$(CARGO) bench --bench hot_path -- --warm-up-time 1 --measurement-time 3
	$(CARGO) bench --bench shard_cost
	./target/release/ringsfu-loadtest bench --out $(REPORTS) --duration $(BENCH_SECONDS)
	./target/release/gateway-bench > $(REPORTS)/gateway-bench.json && cat $(REPORTS)/gateway-bench.json
	./target/release/gateway-bench --fake-sfu --json $(REPORTS)/gateway-fake-sfu.json \
		$(if $(COMPARE_GATEWAY),--compare-with $(COMPARE_GATEWAY))
	$(MAKE) bench-browser

# Light load: server CPU per forwarded packet and wake-ups with four browser participants.
bench-browser: build test-deps
	@mkdir -p $(REPORTS)
	./scripts/browser-cost.py --pages 4 --width 640 --height 480 --seconds 30 | tee $(REPORTS)/browser-cost.json

loadtest: build
	./target/release/ringsfu-loadtest run $(SCENARIO) --out $(REPORTS) $(ARGS)

# One channel over more and more shards (docs/cross-shard.md); defaults to every core but one.
scaling: build
	./target/release/ringsfu-loadtest scaling --out $(REPORTS) $(ARGS)

# perf (Debian linux-perf) records ringsfu during a load test; inferno draws the flame graph.
flamegraph: build
	@command -v perf >/dev/null || { echo "flamegraph: install perf (apt-get install linux-perf)"; exit 1; }
	@command -v inferno-flamegraph >/dev/null || $(CARGO) install inferno --locked
	./scripts/flamegraph.sh audio-room --listeners 300
	./scripts/flamegraph.sh broadcast --listeners 300
	./scripts/flamegraph.sh meeting --size 10

FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= jwt bus_frame rtp_parameters udp_demux
FUZZ_CARGO ?= cargo +nightly

# libFuzzer writes new inputs to the first corpus directory: the scratch one, so the committed
# corpus changes only by a deliberate merge (see README, Fuzzing). Crashes go to fuzz/artifacts.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/scratch/$$t && \
		$(FUZZ_CARGO) fuzz run $$t fuzz/scratch/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
