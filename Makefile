# exatrkx-triton: `make demo` and `make test` are the two commands; see README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY := .venv/bin/python
CARGO_FLAGS := --release --workspace

.PHONY: help setup build lint test test-rust test-python test-integration demo bench soak clean

help:
	@echo "make setup  - apt packages, .venv (pinned), Triton headers, release build, backend layout"
	@echo "make demo   - simulate events, serve them through tritonserver over gRPC, print quality and latency"
	@echo "make test   - everything: lint, Rust tests, Python tests, integration tests with a real server"
	@echo "make bench  - benchmarks (results/ and README numbers)"
	@echo "make soak   - bounded soak (~5 min): 20000 mixed good/bad requests, 4 clients, 2 instances;"
	@echo "              figures in results/soak/soak.md and soak.json (SOAK_ARGS to change)"

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

# The long soak (docs/ROBUSTNESS.md); `make test` runs a short one.
SOAK_ARGS ?= --requests 20000 --concurrency 4 --instances 2 --bad-fraction 0.1 --time-limit 540
soak: setup
	PYTHONPATH=python $(PY) -m exatrkx.soak $(SOAK_ARGS) --out-dir results/soak

clean:
	rm -rf target build results
