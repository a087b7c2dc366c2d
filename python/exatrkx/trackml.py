"""TrackML CSV events: reading (plain or gzipped), node features, module ids, label files.

The layout and the feature definition are fixed in docs/DESIGN.md; `trackml::features` in Rust
builds the same arrays.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

NUM_FEATURES = 9
_EVENT_RE = re.compile(r"event(\d{9})-hits\.csv(\.gz)?$")


@dataclass
class Event:
    """One event; `hits` row i is spacepoint i of the pipeline."""

    event_id: int
    hits: pd.DataFrame
    truth: pd.DataFrame | None = None
    particles: pd.DataFrame | None = None
    spacepoints: pd.DataFrame | None = None

    def __len__(self) -> int:
        return len(self.hits)


def event_prefix(event_id: int) -> str:
    return f"event{event_id:09d}"


def _find(directory: Path, event_id: int, kind: str) -> Path | None:
    for suffix in (".csv", ".csv.gz"):
        path = directory / f"{event_prefix(event_id)}-{kind}{suffix}"
        if path.exists():
            return path
    return None


def list_events(directory: str | Path) -> list[int]:
    """Event ids that have a hits file in `directory`, sorted."""
    ids = set()
    for path in Path(directory).iterdir():
        match = _EVENT_RE.match(path.name)
        if match:
            ids.add(int(match.group(1)))
    return sorted(ids)


def read_event(directory: str | Path, event_id: int) -> Event:
    """Read the hits and, where present, truth, particles and strip spacepoint files."""
    directory = Path(directory)
    hits_path = _find(directory, event_id, "hits")
    if hits_path is None:
        raise FileNotFoundError(f"no {event_prefix(event_id)}-hits.csv[.gz] in {directory}")
    hits = pd.read_csv(hits_path)
    parts = {}
    for kind in ("truth", "particles", "spacepoints"):
        path = _find(directory, event_id, kind)
        parts[kind] = pd.read_csv(path) if path is not None else None
    truth = parts["truth"]
    hit_ids = hits["hit_id"].to_numpy()
    if truth is not None and not np.array_equal(truth["hit_id"].to_numpy(), hit_ids):
        truth = truth.set_index("hit_id").loc[hits["hit_id"]].reset_index()
    return Event(event_id, hits, truth, parts["particles"], parts["spacepoints"])


def _cylindrical(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    z = z.astype(np.float64)
    r = np.sqrt(x * x + y * y)
    phi = np.arctan2(y, x)
    return np.stack([r / 1000.0, phi / math.pi, z / 1000.0], axis=1).astype(np.float32)


def features(event: Event) -> np.ndarray:
    """Node features float32 [N, 9]: spacepoint (r/1000, phi/pi, z/1000), then both clusters."""
    hits = event.hits
    own = _cylindrical(hits["x"].to_numpy(), hits["y"].to_numpy(), hits["z"].to_numpy())
    out = np.concatenate([own, own, own], axis=1)
    sp = event.spacepoints
    if sp is not None and len(sp):
        row_of = pd.Series(np.arange(len(hits)), index=hits["hit_id"].to_numpy())
        rows = row_of.reindex(sp["hit_id"].to_numpy()).to_numpy()
        if np.isnan(rows.astype(np.float64)).any():
            raise ValueError("spacepoints file names hit_ids that are not in the hits file")
        rows = rows.astype(np.int64)
        for k, cols in ((1, ("cl1_x", "cl1_y", "cl1_z")), (2, ("cl2_x", "cl2_y", "cl2_z"))):
            out[rows, 3 * k : 3 * k + 3] = _cylindrical(*(sp[c].to_numpy() for c in cols))
    return np.ascontiguousarray(out)


def module_ids(event: Event) -> np.ndarray:
    """Global module id per spacepoint: volume * 1e8 + layer * 1e5 + module (int64)."""
    hits = event.hits
    return (
        hits["volume_id"].to_numpy(np.int64) * 100_000_000
        + hits["layer_id"].to_numpy(np.int64) * 100_000
        + hits["module_id"].to_numpy(np.int64)
    )


def write_labels(directory: str | Path, event_id: int, hit_ids, labels) -> Path:
    """Write `event%09d-labels.csv` with columns hit_id,track_id (-1 = no track)."""
    hit_ids = np.asarray(hit_ids, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if hit_ids.shape != labels.shape:
        raise ValueError(f"{len(hit_ids)} hit ids but {len(labels)} labels")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{event_prefix(event_id)}-labels.csv"
    pd.DataFrame({"hit_id": hit_ids, "track_id": labels}).to_csv(path, index=False)
    return path


def read_labels(directory: str | Path, event_id: int) -> pd.DataFrame:
    path = _find(Path(directory), event_id, "labels")
    if path is None:
        raise FileNotFoundError(f"no {event_prefix(event_id)}-labels.csv in {directory}")
    return pd.read_csv(path)
