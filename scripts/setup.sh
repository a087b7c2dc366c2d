#!/usr/bin/env bash
# One-command setup, idempotent: system packages, the pinned Python venv, Triton headers,
# the release build, and the backend laid out for tritonserver's --backend-directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '[setup] %s\n' "$*"; }

# 1. System packages: libclang for bindgen, a C++ compiler for torch-sys.
need_apt=()
for pkg in libclang-dev clang g++ make; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. Python environment with the pinned packages (torch's libtorch is what tch links).
PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha
want=$(cat python/requirements.txt python/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "creating .venv (torch, tritonserver, tritonclient: a few GB, a few minutes)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q --progress-bar off -r python/requirements.txt
  .venv/bin/pip install -q --no-deps -e python
  echo "$want" > "$stamp"
fi
torch_version=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if [ "$torch_version" != "2.11.0" ]; then
  echo "setup: torch $torch_version found, tch 0.24 needs torch 2.11.0" >&2
  exit 1
fi
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
mkdir -p build
ln -sfn "$torch_dir" build/libtorch

# 3. Triton's C headers (never committed).
scripts/fetch-triton-headers.sh >/dev/null

# 4. Release build of the whole workspace, then the backend layout.
log "cargo build --release"
cargo build --release --workspace --quiet
mkdir -p build/backends/exatrkx
cp -f target/release/libtriton_exatrkx.so build/backends/exatrkx/libtriton_exatrkx.so
log "backend: build/backends/exatrkx/libtriton_exatrkx.so"
log "cli:     target/release/exatrkx"
