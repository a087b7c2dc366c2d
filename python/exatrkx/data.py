"""Training data: TrackML event folders turned into per-event samples (node features plus
truth), the train/val/test split by event, graph datasets for the edge classifiers, and
Lightning data modules that build their inputs once (rank zero) and read them on every rank.

Truth used throughout training:
- a particle's spacepoints are ordered by distance from its production vertex; *truth pairs*
  are consecutive spacepoints in that order (particle direction kept, for the module map),
  *truth edges* the same pairs in the edge convention of docs/DESIGN.md;
- a *target* spacepoint belongs to a particle with pT > pt_min, |eta| < eta_max and at least
  min_hits spacepoints in the event;
- an edge is *true* when both ends carry the same non-zero particle id.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from exatrkx import trackml
from exatrkx.models.graph import canonical_edges

Sample = dict  # str -> Tensor | int


@dataclass(frozen=True)
class TruthConfig:
    pt_min: float = 1.0
    eta_max: float = 4.0
    min_hits: int = 3


def _particle_table(event: trackml.Event) -> pd.DataFrame:
    """Per particle id: vertex and momentum; particles missing from the particles file take
    the mean truth momentum and the origin as vertex."""
    truth = event.truth
    cols = ["vx", "vy", "vz", "px", "py", "pz"]
    fallback = (
        truth[truth["particle_id"] != 0]
        .groupby("particle_id")[["tpx", "tpy", "tpz"]]
        .mean()
        .rename(columns={"tpx": "px", "tpy": "py", "tpz": "pz"})
    )
    fallback[["vx", "vy", "vz"]] = 0.0
    table = fallback[cols]
    if event.particles is not None and len(event.particles):
        known = event.particles.drop_duplicates("particle_id").set_index("particle_id")[cols]
        table = pd.concat([known, table[~table.index.isin(known.index)]])
    return table


def event_sample(event: trackml.Event, truth_cfg: TruthConfig = TruthConfig()) -> Sample:
    """Node features, module ids and truth of one event as tensors (see the module doc)."""
    if event.truth is None:
        raise ValueError(f"event {event.event_id} has no truth file; training needs one")
    n = len(event)
    x = trackml.features(event)
    pid = event.truth["particle_id"].to_numpy(np.int64)
    table = _particle_table(event)
    rows = table.reindex(pid)
    vertex = rows[["vx", "vy", "vz"]].to_numpy(np.float64)
    mom = rows[["px", "py", "pz"]].to_numpy(np.float64)
    pt = np.hypot(mom[:, 0], mom[:, 1])
    eta = np.arcsinh(mom[:, 2] / np.maximum(pt, 1e-12))
    nhits = pd.Series(pid).map(pd.Series(pid).value_counts()).to_numpy()
    real = pid != 0
    pt = np.where(real, pt, 0.0)
    target = (real & (pt > truth_cfg.pt_min) & (np.abs(eta) < truth_cfg.eta_max)) & (
        nhits >= truth_cfg.min_hits
    )

    xyz = event.hits[["x", "y", "z"]].to_numpy(np.float64)
    dist = np.linalg.norm(xyz - np.nan_to_num(vertex), axis=1)
    order = np.lexsort((np.arange(n), dist, pid))
    ps = pid[order]
    consecutive = (ps[1:] == ps[:-1]) & (ps[1:] != 0)
    pairs = np.stack([order[:-1][consecutive], order[1:][consecutive]]).astype(np.int64)

    x_t = torch.from_numpy(x)
    pairs_t = torch.from_numpy(pairs)
    truth_edges = canonical_edges(pairs_t[0], pairs_t[1], x_t[:, 0])
    target_t = torch.from_numpy(target)
    return {
        "event_id": int(event.event_id),
        "x": x_t,
        "module_id": torch.from_numpy(trackml.module_ids(event)),
        "particle_id": torch.from_numpy(pid.copy()),
        "pt": torch.from_numpy(pt.astype(np.float32)),
        "target_hit": target_t,
        "truth_pairs": pairs_t,
        "truth_edges": truth_edges,
        "truth_target": target_t[truth_edges[0]],
        # production-vertex z of each spacepoint's particle (mm; 0 for noise): loss weights
        "vertex_z": torch.from_numpy(
            np.where(real, np.nan_to_num(vertex[:, 2]), 0.0).astype(np.float32)
        ),
    }


@dataclass(frozen=True, order=True)
class EventRef:
    """One event of one folder: event ids repeat across folders (every simulated set starts
    at 0), so an event is named by both."""

    folder: str
    event_id: int

    def __str__(self) -> str:
        return f"{self.folder}:{self.event_id}"


def event_refs(folder: str | Path, event_ids: Iterable[int]) -> list[EventRef]:
    resolved = str(Path(folder).resolve())
    return [EventRef(resolved, int(i)) for i in event_ids]


def describe_refs(refs: Iterable[EventRef]) -> dict[str, list[int]]:
    """{folder: [event ids]}, for metrics files and model cards."""
    out: dict[str, list[int]] = {}
    for ref in sorted(refs):
        out.setdefault(ref.folder, []).append(ref.event_id)
    return out


def split_events(
    ids: list, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> tuple[dict[str, list], bool]:
    """Train/val/test by event, in sorted order (train first). With a single event all three
    are that event and the run is flagged as a smoke run (second value True). Works on event
    ids and on `EventRef`s alike."""
    ids = sorted(ids)
    if not ids:
        raise ValueError("no events to split")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val/test fractions must be in [0, 1) with a sum below 1, "
            f"got {val_fraction} and {test_fraction}"
        )
    if len(ids) == 1:
        return {"train": ids, "val": ids, "test": ids}, True
    n_val = max(1, round(val_fraction * len(ids)))
    n_test = max(1, round(test_fraction * len(ids))) if test_fraction > 0 and len(ids) > 2 else 0
    n_train = len(ids) - n_val - n_test
    if n_train < 1:
        n_test = max(0, n_test - (1 - n_train))
        n_train = len(ids) - n_val - n_test
    return {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "test": ids[n_train + n_val :],
    }, False


def save_sample(sample: Sample, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(sample, tmp)
    tmp.replace(path)


def load_sample(path: Path) -> Sample:
    return torch.load(path, weights_only=True)


def folder_tag(folder: str | Path) -> str:
    """A readable, collision-free subfolder name for an events folder."""
    resolved = str(Path(folder).resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:8]
    return f"{Path(resolved).name}-{digest}"


def sample_path(directory: Path, ref: EventRef) -> Path:
    """Where the sample (or graph) of event `ref` lives under `directory`."""
    return Path(directory) / folder_tag(ref.folder) / f"{trackml.event_prefix(ref.event_id)}.pt"


class SampleDataset(Dataset):
    """Per-event samples saved as `.pt` files; optionally kept in memory after the first read."""

    def __init__(self, directory: Path, refs: list[EventRef], keep_in_memory: bool = True):
        self.paths = [sample_path(directory, ref) for ref in refs]
        self.keep = keep_in_memory
        self.cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Sample:
        if index in self.cache:
            return self.cache[index]
        sample = load_sample(self.paths[index])
        if self.keep:
            self.cache[index] = sample
        return sample


class RepeatDataset(Dataset):
    """Each item `times` over: more steps per epoch on small training sets, so that validation
    and checkpoints do not come after every step."""

    def __init__(self, dataset: Dataset, times: int):
        if times < 1:
            raise ValueError(f"repeat must be >= 1, got {times}")
        self.dataset = dataset
        self.times = times

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, index: int) -> Sample:
        return self.dataset[index % len(self.dataset)]


def _single(batch: list[Sample]) -> Sample:
    # one event per step: events differ in size and are large enough on their own
    return batch[0]


class EventDataModule(L.LightningDataModule):
    """Samples of the train/val/test events (`EventRef`s). `prepare_data` (global rank zero
    only, a shared filesystem assumed across nodes) converts the CSV events and, when
    `graph_builder` is set, builds each event's input graph; `setup` reads the files on every
    rank. Graphs are reused while the builder's `key()` (the files and settings it depends on)
    is the one recorded beside them."""

    prepare_data_per_node = False

    def __init__(
        self,
        splits: dict[str, list[EventRef]],
        sample_dir: Path,
        truth_cfg: TruthConfig,
        graph_dir: Path | None = None,
        graph_builder: Callable[[Sample, EventRef], Sample] | None = None,
        num_workers: int = 0,
        train_repeat: int = 1,
        prepare_workers: int = 1,
    ):
        super().__init__()
        self.splits = splits
        self.sample_dir = Path(sample_dir)
        self.truth_cfg = truth_cfg
        self.graph_dir = Path(graph_dir) if graph_dir is not None else None
        self.graph_builder = graph_builder
        self.num_workers = num_workers
        self.train_repeat = train_repeat
        self.prepare_workers = prepare_workers
        self.datasets: dict[str, Dataset] = {}
        self.prepare_seconds = 0.0

    def all_refs(self) -> list[EventRef]:
        return sorted({ref for refs in self.splits.values() for ref in refs})

    def prepare_data(self) -> None:
        start = time.perf_counter()
        prepare_samples(self.all_refs(), self.sample_dir, self.truth_cfg, self.prepare_workers)
        if self.graph_builder is not None:
            build_graphs(self.all_refs(), self.sample_dir, self.graph_dir, self.graph_builder)
        self.prepare_seconds = time.perf_counter() - start

    def setup(self, stage: str | None = None) -> None:
        directory = self.graph_dir if self.graph_builder is not None else self.sample_dir
        for split, refs in self.splits.items():
            self.datasets[split] = SampleDataset(directory, refs)
        self.datasets["train"] = RepeatDataset(self.datasets["train"], self.train_repeat)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=1,
            shuffle=shuffle,
            collate_fn=_single,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,  # not re-spawned every epoch
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


def build_graphs(refs: list[EventRef], sample_dir: Path, graph_dir: Path, builder) -> None:
    """`graph_dir`'s sample of each event with its input graph, `builder(sample, ref)`. A
    builder with a `key()` (the files and settings its graphs depend on, recorded in
    `graph_dir/builder.json`) has its graphs reused while the key holds; others rebuild every
    time."""
    graph_dir = Path(graph_dir)
    stamp = graph_dir / "builder.json"
    key = builder.key() if hasattr(builder, "key") else None
    fresh = key is None or not (stamp.exists() and json.loads(stamp.read_text()) == key)
    if fresh:
        for old in graph_dir.glob("*/event*.pt"):
            old.unlink()
        stamp.unlink(missing_ok=True)
    for ref in refs:
        path = sample_path(graph_dir, ref)
        if fresh or not path.exists():
            save_sample(builder(load_sample(sample_path(sample_dir, ref)), ref), path)
    if key is not None:
        stamp.write_text(json.dumps(key))


def prepare_samples(
    refs: list[EventRef], sample_dir: Path, truth_cfg: TruthConfig, workers: int = 1
) -> None:
    """Write `sample_dir/<folder tag>/event%09d.pt` for each event; reuse those written from
    the same folder with the same truth settings (recorded in `<folder tag>/truth.json`).
    `workers` > 1 reads the events in that many processes (spawned: forked children of a
    process whose torch threads already ran can hang)."""
    for folder in sorted({ref.folder for ref in refs}):
        directory = Path(sample_dir) / folder_tag(folder)
        stamp = directory / "truth.json"
        wanted = {**asdict(truth_cfg), "events": folder}
        fresh = not (stamp.exists() and json.loads(stamp.read_text()) == wanted)
        directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            for old in directory.glob("event*.pt"):
                old.unlink()
            stamp.write_text(json.dumps(wanted))
    missing = [ref for ref in refs if not sample_path(sample_dir, ref).exists()]
    if workers > 1 and len(missing) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(workers, len(missing))) as pool:
            pool.starmap(_write_sample, [(ref, sample_dir, truth_cfg) for ref in missing])
    else:
        for ref in missing:
            _write_sample(ref, sample_dir, truth_cfg)


def _write_sample(ref: EventRef, sample_dir: Path, truth_cfg: TruthConfig) -> None:
    event = trackml.read_event(ref.folder, ref.event_id)
    save_sample(event_sample(event, truth_cfg), sample_path(sample_dir, ref))


# ---------------------------------------------------------------------------------------------
# Small events for tests and development


def write_particle_split(
    events_dir: Path, event_id: int, out_dir: Path, parts: int, seed: int = 0
) -> list[int]:
    """Split one event's particles (and its noise) at random into `parts` smaller events with
    ids 1..parts in `out_dir`, whole particles kept together. Returns the new ids."""
    event = trackml.read_event(events_dir, event_id)
    if event.truth is None:
        raise ValueError(f"event {event_id} in {events_dir} has no truth file")
    rng = np.random.default_rng(seed)
    pid = event.truth["particle_id"].to_numpy()
    particles = np.unique(pid[pid != 0])
    part_of = dict(zip(particles, rng.integers(0, parts, len(particles)), strict=True))
    hit_part = np.array([part_of.get(p, -1) for p in pid])
    noise = hit_part < 0
    hit_part[noise] = rng.integers(0, parts, int(noise.sum()))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in range(parts):
        rows = hit_part == k
        prefix = out_dir / trackml.event_prefix(k + 1)
        hit_ids = event.hits["hit_id"].to_numpy()[rows]
        event.hits[rows].to_csv(f"{prefix}-hits.csv", index=False)
        event.truth[rows].to_csv(f"{prefix}-truth.csv", index=False)
        if event.particles is not None:
            keep = event.particles["particle_id"].isin(np.unique(pid[rows]))
            event.particles[keep].to_csv(f"{prefix}-particles.csv", index=False)
        if event.spacepoints is not None:
            keep = event.spacepoints["hit_id"].isin(hit_ids)
            event.spacepoints[keep].to_csv(f"{prefix}-spacepoints.csv", index=False)
    return list(range(1, parts + 1))


# (volume, r or |z| of the layers, extent) of a toy detector shaped like TrackML's
_TOY_BARRELS = [
    (8, [32.0, 72.0, 116.0, 172.0], 490.0),
    (13, [260.0, 360.0, 500.0, 660.0], 1100.0),
    (17, [820.0, 1020.0], 1100.0),
]
_TOY_DISKS = [
    (7, 9, [600.0, 700.0, 820.0, 960.0, 1100.0, 1300.0, 1500.0], (30.0, 175.0)),
    (12, 14, [1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0], (240.0, 700.0)),
    (16, 18, [1220.0, 1500.0, 1800.0, 2150.0, 2550.0, 2950.0], (750.0, 1020.0)),
]
_PHI_SECTORS = 32


def _toy_module(phi: float, coord: float, extent: float) -> int:
    sector = int((phi + math.pi) / (2 * math.pi) * _PHI_SECTORS) % _PHI_SECTORS
    band = min(9, max(0, int((coord + extent) / (2 * extent) * 10)))
    return sector * 10 + band + 1


def write_toy_events(
    out_dir: Path,
    num_events: int,
    particles_per_event: int = 60,
    noise_fraction: float = 0.1,
    seed: int = 0,
) -> list[int]:
    """Helix events in a 2 T field through a detector with TrackML's layer radii and disk
    positions: pT log-uniform in [0.3, 10] GeV, |eta| < 2.5, vertex z ~ N(0, 50 mm); strip
    spacepoints come with two stereo clusters (`-spacepoints.csv`); noise spread over the
    layers. Rows are shuffled. A development and test toy, not the simulation."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids = list(range(1, num_events + 1))
    for event_id in ids:
        hits, clusters, particles = [], [], []
        for k in range(particles_per_event):
            pid = (event_id << 32) + k + 1
            pt = math.exp(rng.uniform(math.log(0.3), math.log(10.0)))
            eta = rng.uniform(-2.5, 2.5)
            phi0 = rng.uniform(-math.pi, math.pi)
            q = int(rng.choice([-1, 1]))
            vz = rng.normal(0.0, 50.0)
            radius = 1000.0 * pt / 0.6  # mm, 2 T
            slope = math.sinh(eta)
            crossings = []  # (t, volume, layer, r or None, z or None)
            for vol, radii, half in _TOY_BARRELS:
                for li, rl in enumerate(radii):
                    if rl < 2 * radius:
                        t = 2 * math.asin(rl / (2 * radius))
                        z = vz + radius * t * slope
                        if abs(z) < half:
                            crossings.append((t, vol, 2 * li + 2, half))
            for vol_neg, vol_pos, zs, (rmin, rmax) in _TOY_DISKS:
                for li, zd in enumerate(zs):
                    zt = zd if eta > 0 else -zd
                    t = (zt - vz) / (radius * slope) if slope != 0 else -1.0
                    if 0 < t < math.pi:
                        r = 2 * radius * math.sin(t / 2)
                        if rmin < r < rmax:
                            crossings.append((t, vol_pos if eta > 0 else vol_neg, 2 * li + 2, rmax))
            crossings.sort()
            n_hits = 0
            for t, vol, layer, extent in crossings:
                x = q * radius * (math.sin(phi0 + q * t) - math.sin(phi0))
                y = -q * radius * (math.cos(phi0 + q * t) - math.cos(phi0))
                z = vz + radius * t * slope
                phi = math.atan2(y, x)
                r = math.hypot(x, y)
                strip = vol >= 12
                sigma = 0.03 if strip else 0.01
                dphi = rng.normal(0.0, sigma) / r
                sx = r * math.cos(phi + dphi)
                sy = r * math.sin(phi + dphi)
                sz = z + rng.normal(0.0, 0.5 if strip else 0.05)
                coord = z if vol in (8, 13, 17) else r
                hits.append((sx, sy, sz, vol, layer, _toy_module(phi, coord, extent), pid))
                if strip:
                    # the two stereo clusters: strip centres offset along the strip direction
                    off = rng.uniform(-20.0, 20.0, 2)
                    c1 = (sx * (1 - 1e-3), sy * (1 - 1e-3), z + off[0])
                    c2 = (sx * (1 + 1e-3), sy * (1 + 1e-3), z + off[1])
                    clusters.append((len(hits) - 1, *c1, *c2))
                n_hits += 1
            px, py = pt * math.cos(phi0), pt * math.sin(phi0)
            particles.append((pid, 13 * q, 0.0, 0.0, vz, px, py, pt * slope, q, n_hits))
        n_noise = int(noise_fraction * len(hits))
        for _ in range(n_noise):
            vol, radii, half = _TOY_BARRELS[rng.integers(len(_TOY_BARRELS))]
            li = int(rng.integers(len(radii)))
            phi = rng.uniform(-math.pi, math.pi)
            z = rng.uniform(-half, half)
            r = radii[li]
            module = _toy_module(phi, z, half)
            hits.append((r * math.cos(phi), r * math.sin(phi), z, vol, 2 * li + 2, module, 0))
        order = rng.permutation(len(hits))
        new_row = np.empty(len(hits), dtype=np.int64)
        new_row[order] = np.arange(len(hits))
        h = np.array(hits, dtype=np.float64)[order]
        hit_id = np.arange(1, len(hits) + 1)
        prefix = out_dir / trackml.event_prefix(event_id)
        pd.DataFrame(
            {
                "hit_id": hit_id,
                "x": h[:, 0],
                "y": h[:, 1],
                "z": h[:, 2],
                "volume_id": h[:, 3].astype(int),
                "layer_id": h[:, 4].astype(int),
                "module_id": h[:, 5].astype(int),
            }
        ).to_csv(f"{prefix}-hits.csv", index=False)
        pids = np.array([hh[6] for hh in hits], dtype=np.int64)[order]
        pd.DataFrame(
            {
                "hit_id": hit_id,
                "particle_id": pids,
                "tx": h[:, 0],
                "ty": h[:, 1],
                "tz": h[:, 2],
                "tpx": 0.0,
                "tpy": 0.0,
                "tpz": 0.0,
                "weight": 0.0,
            }
        ).to_csv(f"{prefix}-truth.csv", index=False)
        pd.DataFrame(
            particles,
            columns=[
                "particle_id",
                "particle_type",
                "vx",
                "vy",
                "vz",
                "px",
                "py",
                "pz",
                "q",
                "nhits",
            ],
        ).to_csv(f"{prefix}-particles.csv", index=False)
        cl = np.array(clusters, dtype=np.float64).reshape(-1, 7)
        pd.DataFrame(
            {
                "hit_id": new_row[cl[:, 0].astype(np.int64)] + 1,
                "cl1_x": cl[:, 1],
                "cl1_y": cl[:, 2],
                "cl1_z": cl[:, 3],
                "cl2_x": cl[:, 4],
                "cl2_y": cl[:, 5],
                "cl2_z": cl[:, 6],
            }
        ).to_csv(f"{prefix}-spacepoints.csv", index=False)
    return ids
