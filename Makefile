# ringsfu — the commands a newcomer needs. `make help` lists them.

CARGO ?= cargo

.PHONY: help run build test test-deps test-rust lint fmt

help:
	@echo "make run    build (release) and start ringsfu on its embedded defaults"
	@echo "make test   everything CI runs: unit, integration and browser tests"
	@echo "make test-deps  install chromium and the npm packages the browser tests need"
	@echo "make lint   cargo fmt --check and clippy -D warnings"

run:
	$(CARGO) run --release --bin ringsfu

build:
	$(CARGO) build --release --workspace --bins

test: test-deps test-rust

# Chromium, Node.js and the npm packages the browser tests use (installs only what is missing).
test-deps:
	./scripts/test-deps.sh

test-rust:
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
