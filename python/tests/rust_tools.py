"""Where the Rust binaries built by `cargo build --release` / `cargo test --release` are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from exatrkx.paths import REPO_ROOT

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", REPO_ROOT / "target")) / "release"
EXATRKX = TARGET / "exatrkx"
DUMP_FEATURES = TARGET / "examples" / "dump_features"


def run(*args) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def simulate(out: Path, mu: int = 10, events: int = 1, seed: int = 5) -> Path:
    run(EXATRKX, "simulate", "--mu", mu, "--events", events, "--seed", seed, "--out", out)
    return out
