#!/usr/bin/env bash
# make bench: the exatrkx backend next to its Python peers (a Triton ensemble of Python-backend
# steps, and the plain PyTorch reference pipeline) on this machine; tables and plots in
# results/bench/ (see docs/BENCHMARKS.md and `python -m exatrkx.bench --help`).
# Arguments are passed to the driver, e.g. scripts/bench.sh --quick, --only perf,
# --model-repository DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# The in-process Rust runner; the CLI (simulator) and the backend come from `make setup`.
cargo build --release --quiet -p exatrkx-pipeline --example run_features
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/python -m exatrkx.bench "$@"
