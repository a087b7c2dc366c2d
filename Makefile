# exatrkx-triton: `make demo` and `make test` are the two commands; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
CARGO_FLAGS := --release --workspace

.PHONY: help setup build lint test test-rust test-python test-integration demo bench clean

help:
	@echo "make setup  - apt packages, .venv (pinned), Triton headers, release build, backend layout"
	@echo "make demo   - simulate events, serve them through tritonserver over gRPC, print quality and latency"
	@echo "make test   - everything: lint, Rust tests, Python tests, integration tests with a real server"
	@echo "make bench  - benchmarks (results/ and README numbers)"

setup:
	@scripts/setup.sh

build: setup

lint: setup
	cargo fmt --all --check
	cargo clippy $(CARGO_FLAGS) --all-targets --quiet -- -D warnings
	.venv/bin/ruff check python tests scripts
	.venv/bin/ruff format --check python tests scripts

test-rust: setup
	cargo test $(CARGO_FLAGS) --quiet

test-python: setup
	$(PY) -m pytest -q python/tests

test-integration: setup
	$(PY) -m pytest -q tests

test: lint test-rust test-python test-integration

demo: setup
	@scripts/demo.sh

bench: setup
	@scripts/bench.sh

clean:
	rm -rf target build results
