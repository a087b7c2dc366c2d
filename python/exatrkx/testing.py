"""Test helpers: small random TorchScript models with the interfaces of docs/DESIGN.md, a
model repository built from them, and small events.

The random models are real networks (an MLP embedding, an MLP edge filter over both edge ends,
an interaction-network GNN), so a server or pipeline running them does the work of the trained
models at a smaller size; only their weights are random (seeded, hence reproducible).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exatrkx import paths, trackml
from exatrkx.models.networks import TrackQualityNet

NUM_FEATURES = trackml.NUM_FEATURES

# Where cargo puts the release build (the backend library and the in-process example).
CARGO_RELEASE = Path(os.environ.get("CARGO_TARGET_DIR", paths.REPO_ROOT / "target")) / "release"

# Settings under which the random models of `write_random_models` (default sizes) build
# graphs with a few neighbours per spacepoint and keep part of the edges at each cut. The
# track builder's are pinned too, so that retuning the shipped config does not change them.
RANDOM_MODEL_PARAMETERS = {
    "radius": "0.02",
    "knn": "8",
    "filter_cut": "0.97",
    "gnn_cut": "0.15",
    "track_builder": "walkthrough",
    "walk_min_cut": "0.1",
    "walk_high_cut": "0.6",
    "min_track_length": "3",
}


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class EmbeddingNet(nn.Module):
    """Metric-learning embedding: `x f32[N, F] -> f32[N, D]`."""

    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 32, dim: int = 8):
        super().__init__()
        self.features = num_features
        self.dim = dim
        self.net = _mlp([num_features, hidden, hidden, dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.jit.export
    def num_features(self) -> int:
        return self.features

    @torch.jit.export
    def embedding_dim(self) -> int:
        return self.dim


class EdgeFilterNet(nn.Module):
    """Edge filter: MLP over the concatenated features of both ends -> one logit per edge."""

    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 32):
        super().__init__()
        self.features = num_features
        self.net = _mlp([2 * num_features, hidden, hidden, 1])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        ends = torch.cat([x.index_select(0, edge_index[0]), x.index_select(0, edge_index[1])], 1)
        return self.net(ends).squeeze(-1)

    @torch.jit.export
    def num_features(self) -> int:
        return self.features


class InteractionGNN(nn.Module):
    """Interaction network: encoders, `iterations` rounds of edge and node updates (sum
    aggregation of incoming and outgoing edges), then an edge classifier -> one logit per edge."""

    def __init__(self, num_features: int = NUM_FEATURES, hidden: int = 16, iterations: int = 2):
        super().__init__()
        self.features = num_features
        self.iterations = iterations
        self.node_encoder = _mlp([num_features, hidden, hidden])
        self.edge_encoder = _mlp([2 * hidden, hidden, hidden])
        self.edge_net = _mlp([3 * hidden, hidden, hidden])
        self.node_net = _mlp([3 * hidden, hidden, hidden])
        self.classifier = _mlp([3 * hidden, hidden, 1])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        src, dst = edge_index[0], edge_index[1]
        h = self.node_encoder(x)
        e = self.edge_encoder(torch.cat([h.index_select(0, src), h.index_select(0, dst)], 1))
        for _ in range(self.iterations):
            e = e + self.edge_net(torch.cat([h.index_select(0, src), h.index_select(0, dst), e], 1))
            incoming = torch.zeros_like(h).index_add(0, dst, e)
            outgoing = torch.zeros_like(h).index_add(0, src, e)
            h = h + self.node_net(torch.cat([h, incoming, outgoing], 1))
        ends = torch.cat([h.index_select(0, src), h.index_select(0, dst), e], 1)
        return self.classifier(ends).squeeze(-1)

    @torch.jit.export
    def num_features(self) -> int:
        return self.features


def write_random_models(
    directory: str | Path,
    *,
    seed: int = 0,
    num_features: int = NUM_FEATURES,
    embedding_dim: int = 8,
    hidden: int = 32,
    gnn_iterations: int = 2,
    score_gain: float = 20.0,
) -> dict[str, Path]:
    """Script seeded random models into `embed.pt`, `filter.pt`, `gnn.pt`, `tracks.pt` (the
    track-quality network), `gnn2.pt` and `gnn3.pt` (the refining GNN passes), the files the
    project's config names, in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        models = {
            "embed.pt": EmbeddingNet(num_features, hidden, embedding_dim),
            "filter.pt": EdgeFilterNet(num_features, hidden),
            "gnn.pt": InteractionGNN(num_features, max(hidden // 2, 4), gnn_iterations),
        }
        # random track scores spread around 0.8: the served track_cut drops some candidates
        tracks = TrackQualityNet(hidden=8, layers=1)
        with torch.no_grad():
            tracks.mlp[-1].bias.add_(1.4)
        models["tracks.pt"] = tracks
        refining = ("gnn2.pt", "gnn3.pt")
        for name in refining:
            models[name] = InteractionGNN(num_features, max(hidden // 2, 4), gnn_iterations)
        # Random networks score every edge almost alike; a larger last layer spreads the
        # scores so that the cuts keep some edges and drop others.
        for name in ("filter.pt", "gnn.pt", *refining):
            last = [m for m in models[name].modules() if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                last.weight.mul_(score_gain)
                last.bias.mul_(score_gain)
    written = {}
    for name, model in models.items():
        path = directory / name
        with warnings.catch_warnings():
            # TorchScript is what the backend loads, deprecated or not.
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(model.eval())
        scripted.save(str(path))
        written[name] = path
    return written


def set_parameters(config_text: str, parameters: dict[str, str]) -> str:
    """Set `parameters` entries in config.pbtxt text (replacing or appending)."""
    for key, value in parameters.items():
        pattern = re.compile(
            r'(key:\s*"' + re.escape(key) + r'"\s*value:\s*\{\s*string_value:\s*")[^"]*(")'
        )
        if pattern.search(config_text):
            config_text = pattern.sub(lambda m, v=value: m.group(1) + v + m.group(2), config_text)
        else:
            config_text += f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    return config_text


def set_instance_group(config_text: str, kind: str = "KIND_CPU", count: int = 1) -> str:
    """Replace the `instance_group` block of config.pbtxt text."""
    block = f"instance_group [\n  {{\n    kind: {kind}\n    count: {count}\n  }}\n]"
    new, n = re.subn(r"instance_group\s*\[.*?\n\]", block, config_text, flags=re.S)
    if n != 1:
        raise ValueError("config.pbtxt has no instance_group [...] block to replace")
    return new


def make_model_repository(
    root: str | Path,
    *,
    parameters: dict[str, str] | None = None,
    instance_kind: str = "KIND_CPU",
    instance_count: int = 1,
    extra_config: str = "",
    models_seed: int | None = 0,
    model_name: str = "exatrkx",
    config_source: str | Path | None = None,
) -> Path:
    """A model repository under `root` holding `model_name` with the project's config.pbtxt
    (or `config_source`), random models (unless `models_seed` is None) and the given settings.
    Returns the repository root to pass to `--model-repository`."""
    root = Path(root)
    source = Path(config_source or paths.MODEL_REPOSITORY / "exatrkx" / "config.pbtxt")
    text = source.read_text()
    text = re.sub(r'^name:\s*"[^"]*"', f'name: "{model_name}"', text, flags=re.M)
    merged = dict(RANDOM_MODEL_PARAMETERS) if models_seed is not None else {}
    merged.update(parameters or {})
    text = set_parameters(text, merged)
    text = set_instance_group(text, instance_kind, instance_count)
    if extra_config:
        text += "\n" + extra_config.strip() + "\n"
    model_dir = root / model_name
    version_dir = model_dir / "1"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    version_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text)
    if models_seed is not None:
        write_random_models(version_dir, seed=models_seed)
    return root


def slice_event(
    source_dir: str | Path,
    event_id: int,
    dest_dir: str | Path,
    *,
    phi_range: tuple[float, float] = (-math.pi, math.pi + 1e-9),
    max_abs_z: float | None = None,
) -> Path:
    """Copy the hits (and truth, when present) of a phi wedge of an event into `dest_dir`, in
    TrackML format with the same event id: a small real event for tests."""
    event = trackml.read_event(source_dir, event_id)
    hits = event.hits
    phi = np.arctan2(hits["y"].to_numpy(), hits["x"].to_numpy())
    keep = (phi >= phi_range[0]) & (phi < phi_range[1])
    if max_abs_z is not None:
        keep &= np.abs(hits["z"].to_numpy()) < max_abs_z
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    prefix = trackml.event_prefix(event_id)
    hits[keep].to_csv(dest / f"{prefix}-hits.csv", index=False)
    if event.truth is not None:
        event.truth[keep].to_csv(dest / f"{prefix}-truth.csv", index=False)
    return dest


def synthetic_features(num_spacepoints: int, *, seed: int = 0) -> np.ndarray:
    """Features float32 [N, 9] of spacepoints on straight tracks through barrel-like layers:
    plausible inputs without any data files."""
    rng = np.random.default_rng(seed)
    radii = np.array([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0])
    per_track = len(radii)
    n_tracks = max(1, math.ceil(num_spacepoints / per_track))
    phi0 = rng.uniform(-math.pi, math.pi, n_tracks)
    cot_theta = rng.uniform(-1.0, 1.0, n_tracks)
    z0 = rng.normal(0.0, 50.0, n_tracks)
    r = np.tile(radii, n_tracks)[:num_spacepoints]
    phi = np.repeat(phi0, per_track)[:num_spacepoints] + rng.normal(0.0, 1e-3, num_spacepoints)
    z = (
        np.repeat(z0, per_track)[:num_spacepoints]
        + r * np.repeat(cot_theta, per_track)[:num_spacepoints]
    )
    own = np.stack([r / 1000.0, np.angle(np.exp(1j * phi)) / math.pi, z / 1000.0], axis=1)
    return np.ascontiguousarray(np.concatenate([own, own, own], axis=1).astype(np.float32))


def install_backend() -> Path:
    """`build/backends` with the freshly built backend: cargo (a no-op when up to date) builds
    the library and the in-process example; the library is laid out as `make setup` does.
    Returns the backend directory to pass to tritonserver."""
    # `--lib` as well: built for the example alone, the cdylib is not copied to target/release.
    build = "cargo build --release --quiet -p triton-exatrkx --lib --example run_event"
    subprocess.run(build.split(), cwd=paths.REPO_ROOT, check=True)
    built = CARGO_RELEASE / "libtriton_exatrkx.so"
    dest = paths.BACKEND_DIR / "exatrkx" / "libtriton_exatrkx.so"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_bytes() != built.read_bytes():
        # Replace atomically: a running server may have the old file mapped.
        tmp = dest.with_suffix(".so.tmp")
        shutil.copyfile(built, tmp)
        os.replace(tmp, dest)
    return paths.BACKEND_DIR


class InProcess:
    """The backend's code path without Triton: `run_event` (backend/examples) reads the
    configuration the server serves and runs the pipeline on the same features. `server` is an
    `exatrkx.server.TritonServer`."""

    def __init__(self, server, model: str, workdir: Path):
        url = f"http://{server.http_url}/v2/models/{model}/config"
        with urllib.request.urlopen(url, timeout=60) as response:
            config = json.loads(response.read())
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / f"{model}-config.json"
        self.config_path.write_text(json.dumps(config))
        self.model_dir = server.model_repository / model
        self.runs = 0

    def run(self, features: np.ndarray, *, module_ids: np.ndarray | None = None) -> dict:
        self.runs += 1
        base = self.workdir / f"run{self.runs}"
        np.ascontiguousarray(features, dtype="<f4").tofile(f"{base}.features")
        cmd = [
            str(CARGO_RELEASE / "examples" / "run_event"),
            f"--config={self.config_path}",
            f"--model-dir={self.model_dir}",
            f"--features={base}.features",
            f"--columns={features.shape[1]}",
            f"--labels={base}.labels",
            f"--edges={base}.edges",
            f"--scores={base}.scores",
        ]
        if module_ids is not None:
            np.ascontiguousarray(module_ids, dtype="<i8").tofile(f"{base}.modules")
            cmd.append(f"--module-ids={base}.modules")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        edges = np.fromfile(f"{base}.edges", dtype="<i8")
        return {
            "LABELS": np.fromfile(f"{base}.labels", dtype="<i8"),
            "EDGE_INDEX": edges.reshape(2, -1),
            "EDGE_SCORES": np.fromfile(f"{base}.scores", dtype="<f4"),
            "summary": json.loads(done.stdout),
        }
