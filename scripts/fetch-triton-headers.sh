#!/usr/bin/env bash
# Obtain Triton's C headers (tritonserver.h, tritonbackend.h) without committing them.
# Order: $TRITON_INCLUDE_DIR, /opt/tritonserver/include (NVIDIA's server images), else unpack
# them from the crates.io package triton-sys 0.2.0, fetched by cargo into its registry cache.
# Prints the include directory (the one holding triton/core/tritonbackend.h).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/build/triton-headers"

has_headers() { [ -f "$1/triton/core/tritonbackend.h" ] && [ -f "$1/triton/core/tritonserver.h" ]; }

for dir in "${TRITON_INCLUDE_DIR:-}" /opt/tritonserver/include "$dest"; do
  if [ -n "$dir" ] && has_headers "$dir"; then echo "$dir"; exit 0; fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
cat > "$work/Cargo.toml" <<'TOML'
[package]
name = "fetch-triton-headers"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
triton-sys = "=0.2.0"
TOML
: > "$work/src/lib.rs"
(cd "$work" && cargo fetch --quiet) >&2
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/triton-sys-0.2.0.crate | head -n 1)
mkdir -p "$dest"
tar -xzf "$crate" -C "$work" triton-sys-0.2.0/deps/core/include/triton
cp -r "$work/triton-sys-0.2.0/deps/core/include/triton" "$dest/"
has_headers "$dest" || { echo "Triton headers not found in $crate" >&2; exit 1; }
echo "$dest"
