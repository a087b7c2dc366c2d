"""Where the repository, the model repository and the shared real TrackML data are."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
BACKEND_DIR = REPO_ROOT / "build" / "backends"


def shared_trackml_dir() -> Path | None:
    """The real TrackML files: $EXATRKX_TRACKML_DIR, else shared/ beside or inside the checkout."""
    env = os.environ.get("EXATRKX_TRACKML_DIR")
    candidates = [Path(env)] if env else []
    candidates += [REPO_ROOT.parent / "shared/data/trackml", REPO_ROOT / "shared/data/trackml"]
    for path in candidates:
        if (path / "detectors.csv.gz").exists() or (path / "detectors.csv").exists():
            return path
    return None
