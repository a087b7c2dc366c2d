#!/usr/bin/env bash
# make demo: simulated events through a real tritonserver over gRPC (see python/exatrkx/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m exatrkx.demo "$@"
