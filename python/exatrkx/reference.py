"""The Python reference pipeline: the same TorchScript models and parameters as the Rust
pipeline (`exatrkx-pipeline`), written independently with PyTorch, numpy and scipy.

It is the check of the Rust pipeline (equal labels on equal features and models) and its
benchmark peer. Definitions (docs/DESIGN.md): radius graph with f64 distances accumulated
over the dimensions in order, strict `< radius^2`, per-spacepoint `knn` cap by (d2, index),
union of both directions; module map windows; edges oriented by radius and sorted. Track
building as documented in `pipeline/src/track_building.rs`.

    python -m exatrkx.reference --events DIR --model-repo DIR --out DIR [--param key=value]

Events are TrackML CSV (`event%09d-hits.csv[.gz]`, labels written as `-labels.csv`) or
feature arrays (`event%09d-features.npy` [N, 9] float32 with optional `-module_ids.npy`,
labels written as `-labels.npy`).
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components
from scipy.spatial import cKDTree

from exatrkx import track_quality

# --- parameters --------------------------------------------------------------------------

PARAMETER_KEYS = (
    "embedding_model",
    "filter_model",
    "gnn_model",
    "module_map",
    "graph_construction",
    "radius",
    "knn",
    "filter_cut",
    "gnn_cut",
    "gnn_refine_cut",
    "gnn_refine_model",
    "track_builder",
    "walk_min_cut",
    "walk_high_cut",
    "min_track_length",
    "walk_rescue_cut",
    "walk_chain_cut",
    "track_model",
    "track_cut",
    "precision",
    "embedding_batch",
    "filter_chunk",
    "gpu_filter_chunk",
    "max_spacepoints",
    "allow_cpu_fallback",
    "cpu_kernels",
    "intra_op_threads",
)

_ALIASES = {
    "graph_construction": {
        "radius": "radius",
        "metric_learning": "radius",
        "module_map": "module_map",
    },
    "track_builder": {
        "cc": "cc",
        "connected_components": "cc",
        "walkthrough": "walkthrough",
        "walk": "walkthrough",
    },
    "precision": {
        "fp32": "fp32",
        "float32": "fp32",
        "bf16": "bf16",
        "bfloat16": "bf16",
        "fp16": "fp16",
        "float16": "fp16",
        "half": "fp16",
    },
    "cpu_kernels": {
        "auto": "auto",
        "fused": "auto",
        "torch": "torch",
        "libtorch": "torch",
    },
}


# values of the optional settings (gnn_refine_cut, gnn_refine_model, walk_rescue_cut,
# walk_chain_cut, track_model) that switch them off
_NONE = ("", "none", "off")


# most refining GNN passes one configuration may ask for (as on the Rust side)
MAX_REFINE_PASSES = 3


def _cut_list(value: str) -> list[float]:
    """Cuts separated by commas or spaces; `none`/`off` gives none."""
    if value.lower() in _NONE:
        return []
    cuts = [_f32(part) for part in value.replace(",", " ").split()]
    if len(cuts) > MAX_REFINE_PASSES:
        raise ValueError(f"at most {MAX_REFINE_PASSES} cuts (one per refining pass)")
    return cuts


def _file_list(value: str) -> list[str]:
    """File names separated by commas; `none`/`off` gives none."""
    if value.lower() in _NONE:
        return []
    files = [part.strip() for part in value.split(",")]
    if "" in files or len(files) > MAX_REFINE_PASSES:
        raise ValueError(f"expected 1 to {MAX_REFINE_PASSES} file names separated by commas")
    return files


def _f32(value: str) -> float:
    """A setting parsed as the Rust side does: an f32 (kept as the Python float of it)."""
    v = np.float32(float(value))
    if not np.isfinite(v):
        raise ValueError(f"'{value}' is not a finite number")
    return float(v)


@dataclass
class PipelineParameters:
    """The pipeline parameters of docs/DESIGN.md, with the same defaults as the Rust side."""

    embedding_model: str = "embed.pt"
    filter_model: str = "filter.pt"
    gnn_model: str = "gnn.pt"
    module_map: str = "module_map.csv"
    graph_construction: str = "radius"
    radius: float = _f32("0.1")
    knn: int = 100
    filter_cut: float = _f32("0.05")
    gnn_cut: float = _f32("0.5")
    # one refining GNN pass per cut; empty: one GNN pass
    gnn_refine_cut: list[float] = field(default_factory=list)
    # the refining passes' networks: one for all or one per pass; empty: gnn_model again
    gnn_refine_model: list[str] = field(default_factory=list)
    track_builder: str = "cc"
    walk_min_cut: float = _f32("0.1")
    walk_high_cut: float = _f32("0.6")
    min_track_length: int = 3
    walk_rescue_cut: float | None = None  # None: no second walkthrough pass
    walk_chain_cut: float | None = None  # None: no pass of mutual-best chains
    track_model: str = ""  # "": no track-quality network
    track_cut: float = _f32("0.5")
    precision: str = "fp32"
    embedding_batch: int = 65536
    filter_chunk: int = 16384
    gpu_filter_chunk: int = 1 << 20  # parsed and checked; the reference runs on the CPU
    max_spacepoints: int = 500_000
    intra_op_threads: int = 0  # parsed and checked; the reference keeps torch's setting
    allow_cpu_fallback: bool = False
    # parsed and checked; the reference runs every network through torch
    cpu_kernels: str = "auto"

    def set(self, key: str, value: str) -> None:
        if key not in PARAMETER_KEYS:
            raise ValueError(f"unknown parameter '{key}' (known: {', '.join(PARAMETER_KEYS)})")
        v = value.strip()
        try:
            if key in _ALIASES:
                if v not in _ALIASES[key]:
                    raise ValueError(f"expected one of {sorted(set(_ALIASES[key].values()))}")
                setattr(self, key, _ALIASES[key][v])
            elif key in (
                "radius",
                "filter_cut",
                "gnn_cut",
                "walk_min_cut",
                "walk_high_cut",
                "track_cut",
            ):
                setattr(self, key, _f32(v))
            elif key == "gnn_refine_cut":
                self.gnn_refine_cut = _cut_list(v)
            elif key in ("walk_rescue_cut", "walk_chain_cut"):
                setattr(self, key, None if v.lower() in _NONE else _f32(v))
            elif key == "track_model":
                self.track_model = "" if v.lower() in _NONE else v
            elif key == "gnn_refine_model":
                self.gnn_refine_model = _file_list(v)
            elif key in (
                "knn",
                "min_track_length",
                "embedding_batch",
                "filter_chunk",
                "gpu_filter_chunk",
                "intra_op_threads",
            ):
                setattr(self, key, int(v))
            elif key == "max_spacepoints":
                self.max_spacepoints = int(v)
            elif key == "allow_cpu_fallback":
                flags = {"true": True, "1": True, "yes": True, "on": True}
                flags.update({"false": False, "0": False, "no": False, "off": False})
                if v.lower() not in flags:
                    raise ValueError("expected true or false")
                self.allow_cpu_fallback = flags[v.lower()]
            else:
                setattr(self, key, v)
        except ValueError as err:
            raise ValueError(f"parameter '{key}' = '{value}': {err}") from None

    def validate(self) -> None:
        problems = []
        if self.radius <= 0:
            problems.append(f"radius = {self.radius} must be > 0")
        if self.knn < 1:
            problems.append("knn must be at least 1")
        cuts = ["filter_cut", "gnn_cut", "walk_min_cut", "walk_high_cut", "track_cut"]
        cuts += ["walk_rescue_cut", "walk_chain_cut"]  # None: switched off
        values = [(k, getattr(self, k)) for k in cuts]
        values += [("gnn_refine_cut", cut) for cut in self.gnn_refine_cut]
        for key, value in values:
            if value is not None and not 0.0 <= value < 1.0:
                problems.append(f"{key} = {value} must be in [0, 1)")
        if self.walk_high_cut < self.walk_min_cut:
            problems.append("walk_high_cut must not be below walk_min_cut")
        passes, networks = len(self.gnn_refine_cut), len(self.gnn_refine_model)
        if passes and networks > 1 and networks != passes:
            problems.append(
                f"gnn_refine_model names {networks} networks for {passes} refining passes "
                "(gnn_refine_cut); name one for all or one per pass"
            )
        for key in (
            "min_track_length",
            "embedding_batch",
            "filter_chunk",
            "gpu_filter_chunk",
            "max_spacepoints",
        ):
            if getattr(self, key) < 1:
                problems.append(f"{key} must be at least 1")
        if self.intra_op_threads < 0:
            problems.append("intra_op_threads must not be negative")
        if problems:
            raise ValueError("invalid pipeline parameters: " + "; ".join(problems))


_TOKEN = re.compile(r'\s+|#[^\n]*|"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*)|(.)', re.S)


def parse_pbtxt_parameters(text: str) -> dict[str, str]:
    """The `parameters { key: "K" value: { string_value: "V" } }` entries of a Triton
    `config.pbtxt` (also in the list form `parameters: [ {...}, {...} ]`)."""
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            tokens.append(("str", bytes(m.group(1), "utf-8").decode("unicode_escape")))
        elif m.group(2) is not None:
            tokens.append(("id", m.group(2)))
        elif m.group(3) is not None:
            tokens.append(("punct", m.group(3)))
    params: dict[str, str] = {}
    depth = 0
    inside = False  # within the value of a top-level `parameters` field
    key = last_id = None
    for kind, value in tokens:
        if kind == "punct" and value in "{[":
            depth += 1
        elif kind == "punct" and value in "}]":
            depth -= 1
            inside = inside and depth > 0
        elif kind == "id":
            inside = inside or (value == "parameters" and depth == 0)
            last_id = value
        elif kind == "str" and inside:
            if last_id == "key":
                key = value
            elif last_id == "string_value" and key is not None:
                params[key] = value
                key = None
    return params


def model_folder(model_repo: Path, model_name: str = "exatrkx") -> Path:
    """The model folder (holding config.pbtxt) given itself or the repository above it."""
    model_repo = Path(model_repo)
    if (model_repo / "config.pbtxt").exists():
        return model_repo
    if (model_repo / model_name / "config.pbtxt").exists():
        return model_repo / model_name
    raise FileNotFoundError(f"no config.pbtxt in {model_repo} or {model_repo / model_name}")


def load_parameters(folder: Path, overrides: dict[str, str] | None = None) -> PipelineParameters:
    """Parameters from `folder/config.pbtxt` (keys the pipeline does not know are left to the
    backend), then `overrides`."""
    params = PipelineParameters()
    for key, value in parse_pbtxt_parameters((folder / "config.pbtxt").read_text()).items():
        if key in PARAMETER_KEYS:
            params.set(key, value)
    for key, value in (overrides or {}).items():
        params.set(key, value)
    params.validate()
    return params


# --- stages ------------------------------------------------------------------------------


def embed(model, x: torch.Tensor, batch: int) -> np.ndarray:
    """[N, D] float32 embedding, `batch` rows per call."""
    parts = [model(x[s : s + batch]).float() for s in range(0, x.shape[0], batch)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, 0), np.float32)


def orient_and_sort(radius_key: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[2, E] int64 edges: self-loops and repeats dropped, src the spacepoint of smaller radius
    (smaller index on a tie), sorted by (src, dst)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    ra, rb = radius_key[a], radius_key[b]
    swap = (ra > rb) | ((ra == rb) & (a > b))
    src = np.where(swap, b, a)
    dst = np.where(swap, a, b)
    keep = src != dst
    n = max(len(radius_key), 1)
    key = np.unique(src[keep] * n + dst[keep])
    return np.stack([key // n, key % n]).astype(np.int64)


def radius_pairs(embedding: np.ndarray, radius: float, knn: int) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs (i, j) of the radius graph: candidates from a KD-tree searched slightly
    beyond the radius, then the exact selection of the definition."""
    n, dim = embedding.shape
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty
    points = embedding.astype(np.float64)
    r = float(np.float32(radius))
    r2 = r * r
    pairs = cKDTree(points).query_pairs(r * (1 + 1e-5), output_type="ndarray")
    i = pairs[:, 0].astype(np.int64)
    j = pairs[:, 1].astype(np.int64)
    d2 = np.zeros(len(i))
    for k in range(dim):  # in order of the dimensions, as the definition accumulates
        diff = points[i, k] - points[j, k]
        d2 += diff * diff
    inside = d2 < r2
    i, j, d2 = i[inside], j[inside], d2[inside]
    # Both directions; per query spacepoint keep the first `knn` by (d2, neighbour index).
    query = np.concatenate([i, j])
    other = np.concatenate([j, i])
    dist = np.concatenate([d2, d2])
    order = np.lexsort((other, dist, query))
    query, other = query[order], other[order]
    starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
    counts = np.diff(np.r_[starts, len(query)])
    rank = np.arange(len(query)) - np.repeat(starts, counts)
    keep = rank < knn
    return query[keep], other[keep]


def radius_graph(
    embedding: np.ndarray, radius: float, knn: int, features: np.ndarray
) -> np.ndarray:
    a, b = radius_pairs(embedding, radius, knn)
    return orient_and_sort(features[:, 0], a, b)


def hit_geometry(features: np.ndarray):
    """r, phi, z, eta (f64) from the features; eta with the C library's asinh, as in Rust."""
    r = 1000.0 * features[:, 0].astype(np.float64)
    phi = math.pi * features[:, 1].astype(np.float64)
    z = 1000.0 * features[:, 2].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = z / r
    eta = np.fromiter(map(math.asinh, ratio.tolist()), dtype=np.float64, count=len(ratio))
    return r, phi, z, eta


def _quantities(geometry, p: np.ndarray, q: np.ndarray):
    r, phi, z, eta = geometry
    d = phi[q] - phi[p]
    dphi = np.where(d >= math.pi, d - 2.0 * math.pi, np.where(d < -math.pi, d + 2.0 * math.pi, d))
    dr = r[q] - r[p]
    dz = z[q] - z[p]
    flat = dr == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        z0 = np.where(flat, z[p], z[p] - r[p] * dz / dr)
        phislope = np.where(flat, 0.0, dphi / dr)
    return dphi, z0, phislope, eta[q] - eta[p]


def pair_quantities(features: np.ndarray, p: np.ndarray, q: np.ndarray):
    """dphi, z0, phislope, deta of the hit pairs (p, q) (docs/DESIGN.md, module map)."""
    return _quantities(hit_geometry(features), p, q)


MODULE_MAP_WINDOWS = [
    f"{name}_{end}" for name in ("dphi", "z0", "phislope", "deta") for end in ("min", "max")
]
MODULE_MAP_COLUMNS = ["module_a", "module_b", "count", *MODULE_MAP_WINDOWS]


def read_module_map(path: Path) -> pd.DataFrame:
    """`module_map.csv` (docs/DESIGN.md), numbers parsed exactly; a repeated pair keeps its
    first row (as the Rust reader does)."""
    table = pd.read_csv(path, float_precision="round_trip", skipinitialspace=True)
    expected = MODULE_MAP_COLUMNS
    if list(table.columns) != expected:
        raise ValueError(f"{path}: header {list(table.columns)}, expected {expected}")
    return table.drop_duplicates(subset=["module_a", "module_b"], keep="first")


def module_map_graph(
    table: pd.DataFrame, features: np.ndarray, module_ids: np.ndarray, batch: int = 4_000_000
) -> np.ndarray:
    """Edges of the module map: every hit pair on a connected module pair within its windows."""
    n = len(module_ids)
    geometry = hit_geometry(features)
    order = np.lexsort((np.arange(n), module_ids))
    modules, first, count = np.unique(module_ids[order], return_index=True, return_counts=True)
    a_pos = np.searchsorted(modules, table["module_a"].to_numpy())
    b_pos = np.searchsorted(modules, table["module_b"].to_numpy())
    a_pos = np.minimum(a_pos, len(modules) - 1)
    b_pos = np.minimum(b_pos, len(modules) - 1)
    present = (modules[a_pos] == table["module_a"].to_numpy()) & (
        modules[b_pos] == table["module_b"].to_numpy()
    )
    rows = np.flatnonzero(present)
    windows = table[MODULE_MAP_WINDOWS].to_numpy()[rows]
    na, nb = count[a_pos[rows]], count[b_pos[rows]]
    fa, fb = first[a_pos[rows]], first[b_pos[rows]]
    sizes = na * nb
    ps, qs = [], []
    start = 0
    while start < len(rows):
        # A batch of rows holding at most `batch` candidate pairs (at least one row).
        stop = start + max(1, int(np.searchsorted(np.cumsum(sizes[start:]), batch)))
        k = np.repeat(np.arange(start, stop), sizes[start:stop])
        offset = np.repeat(np.cumsum(np.r_[0, sizes[start:stop]])[:-1], sizes[start:stop])
        local = np.arange(len(k)) - offset
        p = order[fa[k] + local // nb[k]]
        q = order[fb[k] + local % nb[k]]
        dphi, z0, phislope, deta = _quantities(geometry, p, q)
        w = windows[k]
        ok = p != q
        for col, v in enumerate((dphi, z0, phislope, deta)):
            ok &= (w[:, 2 * col] <= v) & (v <= w[:, 2 * col + 1])
        ps.append(p[ok])
        qs.append(q[ok])
        start = stop
    p = np.concatenate(ps) if ps else np.zeros(0, np.int64)
    q = np.concatenate(qs) if qs else np.zeros(0, np.int64)
    return orient_and_sort(features[:, 0], p, q)


def edge_scores(
    model, x: torch.Tensor, edge_index: torch.Tensor, chunk: int | None
) -> torch.Tensor:
    """[E] float32 sigmoid scores, `chunk` edges per call (None: all at once)."""
    e = edge_index.shape[1]
    step = max(1, chunk or e)
    parts = [
        model(x, edge_index[:, s : s + step]).reshape(-1).float().sigmoid()
        for s in range(0, e, step)
    ]
    return torch.cat(parts) if parts else torch.zeros(0)


def load_network(path: Path, dtype: torch.dtype = torch.float32):
    """A TorchScript network on the CPU in eval mode, converted to `dtype` unless fp32."""
    with warnings.catch_warnings():
        # TorchScript is the contract of docs/DESIGN.md (libtorch loads it in Rust).
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated")
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return module.to(dtype) if dtype != torch.float32 else module


def classify_edges(
    model, x: torch.Tensor, edge_index: torch.Tensor, cut: float, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The edges scored above `cut` and their scores, in their order."""
    scores = edge_scores(model, x, edge_index, chunk)
    keep = torch.nonzero(scores > cut).view(-1)
    return edge_index[:, keep], scores[keep]


def gnn_refine_files(p: PipelineParameters) -> list[str]:
    """The network file of each refining GNN pass (one per `gnn_refine_cut`)."""
    models = p.gnn_refine_model or [p.gnn_model]
    return [models[k] if len(models) > 1 else models[0] for k in range(len(p.gnn_refine_cut))]


def gnn_passes(p: PipelineParameters, gnn, refine: list) -> list[tuple[str, object, float]]:
    """(stage, network, cut) of the GNN's passes: one at `gnn_cut`, then one more per
    `gnn_refine_cut` with its network in `refine`; each pass before the last keeps its edges
    above the next cut in that list and the last pass's scores meet `gnn_cut`."""
    cuts = [*p.gnn_refine_cut, p.gnn_cut]
    names = ["gnn"] + [f"gnn_refine{k if k > 1 else ''}" for k in range(1, len(cuts))]
    return list(zip(names, [gnn, *refine], cuts, strict=True))


def _number_by_first_member(track_of: np.ndarray) -> np.ndarray:
    """Track ids (any non-negative ints, -1 = none) renumbered 0..T-1 by smallest member."""
    labels = np.full(len(track_of), -1, dtype=np.int64)
    valid = np.flatnonzero(track_of >= 0)
    if len(valid) == 0:
        return labels
    ids, first = np.unique(track_of[valid], return_index=True)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(ids))
    labels[valid] = rank[np.searchsorted(ids, track_of[valid])]
    return labels


def _components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n))
    return scipy_components(graph, directed=True, connection="weak")[1]


def connected_components(n: int, edge_index: np.ndarray, min_track_length: int) -> np.ndarray:
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    comp = _components(n, edge_index[0], edge_index[1])
    size = np.bincount(comp, minlength=n)
    track_of = np.where(size[comp] >= max(min_track_length, 2), comp, -1)
    return _number_by_first_member(track_of)


def walkthrough(
    n: int,
    edge_index: np.ndarray,
    scores: np.ndarray,
    min_cut: float,
    high_cut: float,
    min_track_length: int,
) -> np.ndarray:
    """CC & walk (see pipeline/src/track_building.rs for the definition)."""
    min_len = max(min_track_length, 2)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    src, dst = edge_index[0].astype(np.int64), edge_index[1].astype(np.int64)
    scores = np.asarray(scores, dtype=np.float32)
    comp = _components(n, src, dst)
    n_comp = int(comp.max()) + 1
    nodes = np.bincount(comp, minlength=n_comp)
    edges = np.bincount(comp[src], minlength=n_comp)
    branchy = (np.bincount(dst, minlength=n) > 1) | (np.bincount(src, minlength=n) > 1)
    branching = np.bincount(comp, weights=branchy, minlength=n_comp) > 0
    simple = (nodes >= 2) & ~branching & (edges + 1 == nodes)
    track_of = np.where(simple[comp] & (nodes[comp] >= min_len), comp, -1)
    walk_node = ~simple[comp] & (nodes[comp] >= 2)

    # Pruned walk graph: best outgoing edge above min_cut (ties: smaller target) and every
    # edge above high_cut.
    sel = np.flatnonzero(walk_node[src])
    s, d, w = src[sel], dst[sel], scores[sel]
    cand = np.flatnonzero(w > np.float32(min_cut))
    ranked = cand[np.lexsort((d[cand], -w[cand], s[cand]))]
    is_best = np.zeros(len(s), dtype=bool)
    if len(ranked):
        is_best[ranked[np.r_[True, s[ranked][1:] != s[ranked][:-1]]]] = True
    keep = is_best | (w > np.float32(high_cut))
    s, d, w = s[keep].tolist(), d[keep].tolist(), w[keep].tolist()
    out: dict[int, list[tuple[int, float]]] = {}
    indeg: dict[int, int] = {}
    for a, b, score in zip(s, d, w, strict=True):
        out.setdefault(a, []).append((b, score))
        indeg[b] = indeg.get(b, 0) + 1

    # Topological order, smallest index first; nodes on cycles after, by index.
    walk_nodes = np.flatnonzero(walk_node).tolist()
    heap = [u for u in walk_nodes if indeg.get(u, 0) == 0]
    heapq.heapify(heap)
    order = []
    while heap:
        u = heapq.heappop(heap)
        order.append(u)
        for v, _ in out.get(u, ()):
            indeg[v] -= 1
            if indeg[v] == 0:
                heapq.heappush(heap, v)
    placed = set(order)
    order += [u for u in walk_nodes if u not in placed]
    position = {u: k for k, u in enumerate(order)}

    used: set[int] = set()
    next_track = int(n_comp)
    for start in order:
        if start in used:
            continue
        reached = []
        seen = {start}
        stack = [start]
        while stack:
            u = stack.pop()
            reached.append(u)
            for v, _ in out.get(u, ()):
                if v not in used and position[u] < position[v] and v not in seen:
                    seen.add(v)
                    stack.append(v)
        reached.sort(key=lambda u: -position[u])
        length: dict[int, int] = {}
        successor: dict[int, int] = {}
        for u in reached:
            best = None
            for v, score in out.get(u, ()):
                if v in used or position[u] >= position[v] or v not in seen:
                    continue
                # longest first, then the higher score, then the smaller index
                key = (length[v], score, -v)
                if best is None or key > best:
                    best = key
            length[u] = 1 + (best[0] if best else 0)
            if best:
                successor[u] = -best[2]
        if length[start] >= min_len:
            u = start
            while u is not None:
                used.add(u)
                track_of[u] = next_track
                u = successor.get(u)
            next_track += 1
        else:
            used.add(start)
    return _number_by_first_member(track_of)


def mutual_best_chains(
    n: int, edge_index: np.ndarray, scores: np.ndarray, cut: float, min_track_length: int
) -> np.ndarray:
    """Chains of the edges above `cut` that are both the best outgoing edge of their source
    and the best incoming edge of their target (ties: the smaller index at the other end), as
    tracks of at least `max(min_track_length, 2)` spacepoints (pipeline/src/track_building.rs)."""
    src, dst = (np.asarray(edge_index[i], dtype=np.int64) for i in (0, 1))
    w = np.asarray(scores, dtype=np.float32)
    keep = (w > np.float32(cut)) & (src != dst)
    src, dst, w = src[keep], dst[keep], w[keep]

    def best(end: np.ndarray, other: np.ndarray) -> np.ndarray:
        # per spacepoint the other end of its best edge (-1: none)
        order = np.lexsort((other, -w, end))
        first = np.ones(len(order), dtype=bool)
        first[1:] = end[order][1:] != end[order][:-1]
        out = np.full(n, -1, dtype=np.int64)
        out[end[order][first]] = other[order][first]
        return out

    best_out, best_in = best(src, dst), best(dst, src)
    chain_src = np.flatnonzero(best_out >= 0)
    chain_src = chain_src[best_in[best_out[chain_src]] == chain_src]
    # a spacepoint on no chain is a component of one, below any track length
    chains = np.stack([chain_src, best_out[chain_src]])
    return connected_components(n, chains, min_track_length)


def _add_later_pass(
    earlier: np.ndarray, earlier_flags: np.ndarray, later: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The tracks of `earlier` and of a later pass on what it left, numbered by smallest
    member; the later pass's tracks flagged."""
    offset = int(earlier.max(initial=-1)) + 1
    labels = _number_by_first_member(np.where(later >= 0, later + offset, earlier))
    flags = np.zeros(int(labels.max(initial=-1)) + 1, dtype=bool)
    flags[labels[later >= 0]] = True
    from_earlier = earlier >= 0
    flags[labels[from_earlier]] = earlier_flags[earlier[from_earlier]]
    return labels, flags


def walkthrough_passes(
    n: int,
    edge_index: np.ndarray,
    scores: np.ndarray,
    params: PipelineParameters,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and, per track, whether a later pass found it: the walkthrough, then (with
    `walk_rescue_cut`) the walkthrough again on the edges between spacepoints the first left,
    following edges above `walk_rescue_cut`, then (with `walk_chain_cut`) the mutual-best
    chains on what is left; tracks numbered by smallest member."""
    p = params
    scores = np.asarray(scores)
    labels = walkthrough(n, edge_index, scores, p.walk_min_cut, p.walk_high_cut, p.min_track_length)
    flags = np.zeros(int(labels.max(initial=-1)) + 1, dtype=bool)
    if n == 0:
        return labels, flags

    def free_edges(labels: np.ndarray) -> np.ndarray:
        # the edges whose two ends are in no track yet
        return (labels[edge_index[0]] < 0) & (labels[edge_index[1]] < 0)

    if p.walk_rescue_cut is not None:
        free = free_edges(labels)
        second = walkthrough(
            n,
            edge_index[:, free],
            scores[free],
            p.walk_rescue_cut,
            max(p.walk_high_cut, p.walk_rescue_cut),
            p.min_track_length,
        )
        labels, flags = _add_later_pass(labels, flags, second)
    if p.walk_chain_cut is not None:
        free = free_edges(labels)
        chains = mutual_best_chains(
            n, edge_index[:, free], scores[free], p.walk_chain_cut, p.min_track_length
        )
        labels, flags = _add_later_pass(labels, flags, chains)
    return labels, flags


def track_candidates(
    n: int, edge_index: np.ndarray, scores: np.ndarray, params: PipelineParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Track building as configured: labels and, per track, whether the walkthrough's second
    pass found it."""
    if params.track_builder == "cc":
        labels = connected_components(n, edge_index, params.min_track_length)
        return labels, np.zeros(int(labels.max(initial=-1)) + 1, dtype=bool)
    return walkthrough_passes(n, edge_index, scores, params)


def select_by_quality(
    model, features, labels, second_pass, edge_index, scores, cut: float
) -> np.ndarray:
    """The track-quality stage: the candidates' rows, scored, the ones above `cut` kept."""
    rows = track_quality.track_features(features, labels, second_pass, edge_index, scores)
    return select_tracks(model, rows, labels, cut)


def select_tracks(model, rows: np.ndarray, labels: np.ndarray, cut: float) -> np.ndarray:
    """Labels without the candidates the network scores at or below `cut` (sigmoid), the rest
    numbered by smallest member again."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(rows) == 0:
        return labels.copy()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
    keep = (torch.sigmoid(logits.reshape(-1).float()) > np.float32(cut)).numpy()
    return _number_by_first_member(
        np.where((labels >= 0) & keep[np.maximum(labels, 0)], labels, -1)
    )


# --- the pipeline ------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    labels: np.ndarray
    edge_index: np.ndarray
    edge_scores: np.ndarray
    graph_sizes: list[int]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_tracks(self) -> int:
        return int(self.labels.max() + 1) if len(self.labels) else 0


class ReferencePipeline:
    """Loads the models of a model version folder once; `run` processes one event.

    `jit_optimize` lets TorchScript's graph executor re-specialise the networks to each new
    input shape; off by default, as in the Triton backend (every event brings new shapes)."""

    def __init__(self, version_dir: Path, params: PipelineParameters, jit_optimize: bool = False):
        params.validate()
        if params.precision == "fp16":
            raise ValueError("parameter 'precision' = 'fp16' needs a GPU; use bf16 or fp32")
        self.params = params
        self.jit_optimize = jit_optimize
        self.dtype = torch.bfloat16 if params.precision == "bf16" else torch.float32
        version_dir = Path(version_dir)

        def load(name: str, dtype: torch.dtype = self.dtype):
            return load_network(version_dir / name, dtype)

        self.embedding = (
            load(params.embedding_model) if params.graph_construction == "radius" else None
        )
        self.filter = load(params.filter_model)
        self.gnn = load(params.gnn_model)
        refine = gnn_refine_files(params)
        networks = {name: load(name) for name in set(refine)}
        self.gnn_refine = [networks[name] for name in refine]
        self.module_map = (
            read_module_map(version_dir / params.module_map)
            if params.graph_construction == "module_map"
            else None
        )
        self.num_features = int(self.filter.num_features())
        self.track_model = None
        if params.track_model:
            # a small MLP on host rows: always fp32
            self.track_model = load(params.track_model, torch.float32)
            width = int(self.track_model.num_track_features())
            if width != track_quality.NUM_TRACK_FEATURES:
                raise ValueError(
                    f"{params.track_model} reads {width} track features, "
                    f"not {track_quality.NUM_TRACK_FEATURES}"
                )

    def run(self, features: np.ndarray, module_ids: np.ndarray | None = None) -> ReferenceResult:
        p = self.params
        features = np.ascontiguousarray(features, dtype=np.float32)
        n = len(features)
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(
                f"features of shape {features.shape}, expected [N, {self.num_features}]"
            )
        if n > p.max_spacepoints:
            raise ValueError(
                f"event has {n} spacepoints, above max_spacepoints = {p.max_spacepoints}"
            )
        if not np.isfinite(features).all():
            raise ValueError("features hold non-finite values")
        timings: dict[str, float] = {}

        def timed(stage, fn, *args):
            start = time.perf_counter()
            result = fn(*args)
            timings[stage] = time.perf_counter() - start
            return result

        with torch.no_grad(), torch.jit.optimized_execution(self.jit_optimize):
            x = torch.from_numpy(features).to(self.dtype)
            if n == 0:
                edge_index = np.zeros((2, 0), dtype=np.int64)
            elif p.graph_construction == "radius":
                emb = timed("embedding", embed, self.embedding, x, p.embedding_batch)
                edge_index = timed("graph", radius_graph, emb, p.radius, p.knn, features)
            else:
                if module_ids is None:
                    raise ValueError("graph_construction = module_map needs the module ids")
                ids = np.asarray(module_ids, dtype=np.int64)
                edge_index = timed("graph", module_map_graph, self.module_map, features, ids)
            sizes = [edge_index.shape[1]]
            edges = torch.from_numpy(edge_index)
            scores = torch.zeros(0)
            stages = [("filter", self.filter, p.filter_cut, p.filter_chunk)]
            stages += [(*s, None) for s in gnn_passes(p, self.gnn, self.gnn_refine)]
            for stage, model, cut, chunk in stages:
                if edges.shape[1] > 0:
                    start = time.perf_counter()
                    edges, scores = classify_edges(model, x, edges, cut, chunk)
                    timings[stage] = time.perf_counter() - start
                sizes.append(edges.shape[1])
            sizes = sizes[:2] + sizes[-1:]  # graph, filter, GNN (the last pass), as in Rust
        edge_index = edges.numpy()
        score_array = scores.numpy().astype(np.float32)
        labels, second_pass = timed("tracks", track_candidates, n, edge_index, score_array, p)
        if self.track_model is not None:
            labels = timed(
                "track_quality",
                select_by_quality,
                self.track_model,
                features,
                labels,
                second_pass,
                edge_index,
                score_array,
                p.track_cut,
            )
        return ReferenceResult(labels, edge_index, score_array, sizes, timings)


# --- events and command line -------------------------------------------------------------

_NPY_EVENT = re.compile(r"event(\d{9})-features\.npy$")


def list_feature_events(directory: Path) -> list[int]:
    return sorted(
        int(m.group(1)) for p in Path(directory).iterdir() if (m := _NPY_EVENT.match(p.name))
    )


def load_feature_event(directory: Path, event_id: int) -> tuple[np.ndarray, np.ndarray | None]:
    prefix = Path(directory) / f"event{event_id:09d}"
    features = np.load(f"{prefix}-features.npy")
    ids_path = Path(f"{prefix}-module_ids.npy")
    return features, (np.load(ids_path) if ids_path.exists() else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exatrkx.reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument(
        "--model-repo",
        type=Path,
        required=True,
        help="model folder with config.pbtxt, or the repository holding it",
    )
    parser.add_argument("--model-name", default="exatrkx")
    parser.add_argument("--version", default="1")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--summary", type=Path, help="write per-event timings as JSON here")
    args = parser.parse_args(argv)

    overrides = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = value
    folder = model_folder(args.model_repo, args.model_name)
    params = load_parameters(folder, overrides)
    pipeline = ReferencePipeline(folder / args.version, params)
    args.out.mkdir(parents=True, exist_ok=True)

    from exatrkx import trackml

    npy_events = list_feature_events(args.events)
    csv_events = [] if npy_events else trackml.list_events(args.events)
    if not npy_events and not csv_events:
        print(f"no events in {args.events}", file=sys.stderr)
        return 1
    summary = []
    for event_id in npy_events or csv_events:
        if npy_events:
            features, module_ids = load_feature_event(args.events, event_id)
        else:
            event = trackml.read_event(args.events, event_id)
            features, module_ids = trackml.features(event), trackml.module_ids(event)
        start = time.perf_counter()
        result = pipeline.run(features, module_ids)
        total = time.perf_counter() - start
        if npy_events:
            np.save(args.out / f"event{event_id:09d}-labels.npy", result.labels)
        else:
            trackml.write_labels(args.out, event_id, event.hits["hit_id"], result.labels)
        stages = " ".join(f"{k} {v * 1e3:.1f}" for k, v in result.timings.items())
        print(
            f"event {event_id}: {len(features)} spacepoints, edges {result.graph_sizes}, "
            f"{result.num_tracks} tracks, {total * 1e3:.1f} ms ({stages} ms)"
        )
        summary.append(
            {
                "event_id": event_id,
                "spacepoints": len(features),
                "graph_sizes": result.graph_sizes,
                "num_tracks": result.num_tracks,
                "timings": result.timings,
                "total": total,
            }
        )
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
