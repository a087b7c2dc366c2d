"""Benchmark inputs: simulated events at several pile-ups, their feature files, and stand-in
models when the model repository holds no trained ones yet.

Events come from the simulator (`exatrkx simulate`, docs/SIMULATION.md) and are converted to
`event%09d-features.npy` (+ `-module_ids.npy`), the form `run_features`, the Python reference
and the perf_analyzer input writer read. Everything is cached under the output folder: a
second run with the same settings reuses the files.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import torch

from exatrkx import fixtures, paths, reference, testing, trackml

TARGET = Path(os.environ.get("CARGO_TARGET_DIR", paths.REPO_ROOT / "target")) / "release"
EXATRKX_CLI = TARGET / "exatrkx"
RUN_FEATURES = TARGET / "examples" / "run_features"

# Stand-in networks shaped like the trained ones (docs/TRAINING.md defaults): embedding
# 9 -> 128 x4 -> 12, filter 64 x3, interaction GNN hidden 32 with 6 iterations.
FIXTURE_SHAPES = {"embedding": (128, 4, 12), "filter": (64, 3), "gnn": (32, 6)}
# Stand-in cuts, as fractions of edges kept by the filter and the GNN (about what the first
# trained models kept: docs/TRAINING.md, phase-1 trials).
FIXTURE_KEEP = {"filter": 0.4, "gnn": 0.5}


def simulate_events(out: Path, mu: float, count: int = 1, seed: int = 1) -> Path:
    """`count` events at pile-up `mu` in `out` (TrackML CSV), unless already there."""
    out = Path(out)
    if out.is_dir() and len(trackml.list_events(out)) >= count:
        return out
    if not EXATRKX_CLI.is_file():
        raise FileNotFoundError(f"{EXATRKX_CLI} not found: cargo build --release -p exatrkx-cli")
    cmd = [str(EXATRKX_CLI), "simulate", "--mu", f"{mu:g}", "--events", str(count)]
    cmd += ["--seed", str(seed), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"exatrkx simulate --mu {mu:g} failed:\n{done.stderr[-2000:]}")
    return out


def write_feature_events(trackml_dir: Path, out: Path) -> list[int]:
    """Features and module ids (`.npy`) of every TrackML event in `trackml_dir`, into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = trackml.list_events(trackml_dir)
    for event_id in ids:
        prefix = out / trackml.event_prefix(event_id)
        if Path(f"{prefix}-features.npy").exists():
            continue
        event = trackml.read_event(trackml_dir, event_id)
        np.save(f"{prefix}-module_ids.npy", trackml.module_ids(event))
        np.save(f"{prefix}-features.npy", trackml.features(event))
    return ids


def has_models(model_repository: Path, model_name: str = "exatrkx") -> bool:
    """Whether the model folder holds every file its configuration names."""
    try:
        folder = reference.model_folder(Path(model_repository), model_name)
        params = reference.load_parameters(folder)
    except (FileNotFoundError, ValueError):
        return False
    version = folder / "1"
    if params.graph_construction == "radius":
        names = [params.embedding_model, params.filter_model, params.gnn_model]
    else:
        names = [params.module_map, params.filter_model, params.gnn_model]
    return all((version / name).is_file() for name in names)


def tuned_radius(folder: Path, features: np.ndarray, edges_per_spacepoint: float) -> str:
    """A radius at which the embedding of `folder` gives about `edges_per_spacepoint`
    candidate edges per spacepoint on this event (the median distance to the k-th
    neighbour, k = 2 x edges, as each edge is counted from both ends)."""
    params = reference.load_parameters(folder)
    model = torch.jit.load(str(folder / "1" / params.embedding_model)).eval()
    with torch.no_grad():
        embedding = reference.embed(model, torch.from_numpy(features), params.embedding_batch)
    degree = max(1, round(2 * edges_per_spacepoint))
    return repr(fixtures._radius_for_degree(embedding, degree))


def write_fixture_models(
    dest: Path, tuning_features: np.ndarray, edges_per_spacepoint: float = 10.0, seed: int = 0
) -> Path:
    """A model folder `dest/exatrkx` with random networks shaped like the trained ones, the
    project's config.pbtxt, a radius giving `edges_per_spacepoint` candidate edges on
    `tuning_features` and cuts keeping `FIXTURE_KEEP` of the edges. Returns the repository
    `dest`. Random networks stand in for the cost of inference, not for its quality."""
    folder = Path(dest) / "exatrkx"
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    (eh, el, ed), (fh, fl), (gh, gi) = (FIXTURE_SHAPES[k] for k in ("embedding", "filter", "gnn"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        networks = {
            "embed.pt": fixtures.EmbeddingNet(eh, el, ed, mlp_scale=0.02),
            "filter.pt": fixtures.FilterNet(fh, fl),
            "gnn.pt": fixtures.InteractionGnn(gh, gi),
        }
    for name, network in networks.items():
        torch.jit.script(network.eval()).save(str(version / name))
    config = (paths.MODEL_REPOSITORY / "exatrkx" / "config.pbtxt").read_text()
    (folder / "config.pbtxt").write_text(config)
    radius = tuned_radius(folder, tuning_features, edges_per_spacepoint)
    params = reference.load_parameters(folder, {"radius": radius, "knn": "32"})
    pipeline = reference.ReferencePipeline(version, params)
    x = torch.from_numpy(tuning_features)
    with torch.no_grad():
        embedding = reference.embed(pipeline.embedding, x, params.embedding_batch)
        edges = torch.from_numpy(
            reference.radius_graph(embedding, params.radius, params.knn, tuning_features)
        )
        scores = reference.edge_scores(pipeline.filter, x, edges, params.filter_chunk)
        filter_cut = fixtures._cut_between(scores.numpy(), 1.0 - FIXTURE_KEEP["filter"])
        kept = torch.nonzero(scores > float(filter_cut)).view(-1)
        gnn = reference.edge_scores(pipeline.gnn, x, edges[:, kept], None).numpy()
    cuts = {
        "radius": radius,
        "knn": "32",
        "filter_cut": filter_cut,
        "gnn_cut": fixtures._cut_between(gnn, 1.0 - FIXTURE_KEEP["gnn"]),
    }
    (folder / "config.pbtxt").write_text(testing.set_parameters(config, cuts))
    return Path(dest)
