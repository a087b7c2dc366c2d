"""The module map: which ordered module pairs training particles cross consecutively, with the
range of each doublet quantity, and the graph it builds (docs/DESIGN.md, "Module map").

Quantities of a hit pair (p on module a, then q on module b along the particle), in f64 from
the f32 features: dphi = wrap(phi_q - phi_p) into [-pi, pi) as `mod(d + pi, 2 pi) - pi`,
z0 = z_p - r_p dz / dr (z_p when dr == 0), phislope = dphi / dr (0 when dr == 0),
deta = asinh(z_q / r_q) - asinh(z_p / r_p).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from exatrkx.models.graph import canonical_edges

QUANTITIES = ("dphi", "z0", "phislope", "deta")
COLUMNS = ["module_a", "module_b", "count"] + [
    f"{q}_{end}" for q in QUANTITIES for end in ("min", "max")
]


def cylindrical(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """r, phi, z (mm, rad) and eta of each spacepoint, in f64, from feature columns 0..3."""
    x = np.asarray(x)
    r = 1000.0 * x[:, 0].astype(np.float64)
    phi = math.pi * x[:, 1].astype(np.float64)
    z = 1000.0 * x[:, 2].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eta = np.arcsinh(z / r)
    return r, phi, z, eta


def doublet_quantities(geo, p: np.ndarray, q: np.ndarray) -> dict[str, np.ndarray]:
    """The four quantities for pairs (p, q); `geo` is the output of `cylindrical`."""
    r, phi, z, eta = geo
    dphi = np.mod(phi[q] - phi[p] + math.pi, 2.0 * math.pi) - math.pi
    dr = r[q] - r[p]
    dz = z[q] - z[p]
    flat = dr == 0
    safe = np.where(flat, 1.0, dr)
    z0 = np.where(flat, z[p], z[p] - r[p] * dz / safe)
    slope = np.where(flat, 0.0, dphi / safe)
    return {"dphi": dphi, "z0": z0, "phislope": slope, "deta": eta[q] - eta[p]}


def event_rows(sample: dict, pt_min: float = 0.0) -> pd.DataFrame:
    """Per ordered module pair of one event: count and min/max of each quantity over its
    truth pairs whose particle has pT > pt_min (all particles when pt_min <= 0)."""
    pairs = sample["truth_pairs"].numpy()
    p, q = pairs[0], pairs[1]
    if pt_min > 0:
        keep = sample["pt"].numpy()[p] > pt_min
        p, q = p[keep], q[keep]
    geo = cylindrical(sample["x"].numpy())
    mid = sample["module_id"].numpy()
    frame = pd.DataFrame({"module_a": mid[p], "module_b": mid[q], **doublet_quantities(geo, p, q)})
    return _aggregate(frame, first=True)


def _aggregate(frame: pd.DataFrame, first: bool) -> pd.DataFrame:
    spec = {"count": ("module_a", "size") if first else ("count", "sum")}
    for name in QUANTITIES:
        lo, hi = (name, name) if first else (f"{name}_min", f"{name}_max")
        spec[f"{name}_min"] = (lo, "min")
        spec[f"{name}_max"] = (hi, "max")
    out = frame.groupby(["module_a", "module_b"], sort=True).agg(**spec).reset_index()
    return out[COLUMNS]


def build_module_map(samples: Iterable[dict], pt_min: float = 0.0) -> pd.DataFrame:
    """The module map of the training samples, one row per ordered module pair, sorted."""
    parts = [event_rows(s, pt_min) for s in samples]
    if not parts:
        raise ValueError("no training events to build the module map from")
    return _aggregate(pd.concat(parts, ignore_index=True), first=False)


def save_module_map(table: pd.DataFrame, path: Path) -> None:
    """Write `module_map.csv`; floats with 17 significant digits so they read back exactly."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table[COLUMNS].to_csv(path, index=False, float_format="%.17g")


def load_module_map(path: Path) -> pd.DataFrame:
    # pandas' default float parser may be off by an ulp; the cuts are inclusive bounds
    table = pd.read_csv(path, float_precision="round_trip")
    if list(table.columns) != COLUMNS:
        raise ValueError(
            f"{path}: header must be {','.join(COLUMNS)}, got {','.join(table.columns)}"
        )
    return table


def module_map_graph(
    x, module_id, table: pd.DataFrame, max_pairs_per_chunk: int = 1 << 22
) -> torch.Tensor:
    """Candidate edges of one event: every hit pair (p on a, q on b) of a map row whose four
    quantities lie within the row's [min, max]; then oriented and sorted (int64 [2, E])."""
    x = np.asarray(x)
    mid = np.asarray(module_id, dtype=np.int64)
    if len(mid) == 0:
        return torch.zeros((2, 0), dtype=torch.long)
    order = np.argsort(mid, kind="stable")
    modules, start, count = np.unique(mid[order], return_index=True, return_counts=True)

    def locate(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(modules, ids), len(modules) - 1)
        found = modules[pos] == ids
        return np.where(found, start[pos], 0), np.where(found, count[pos], 0)

    start_a, n_a = locate(table["module_a"].to_numpy(np.int64))
    start_b, n_b = locate(table["module_b"].to_numpy(np.int64))
    n_pairs = n_a * n_b
    rows = np.nonzero(n_pairs)[0]
    bounds = {
        f"{name}_{end}": table[f"{name}_{end}"].to_numpy(np.float64)
        for name in QUANTITIES
        for end in ("min", "max")
    }
    geo = cylindrical(x)
    found_p, found_q = [], []
    cum = np.cumsum(n_pairs[rows])
    first = 0
    while first < len(rows):
        base = cum[first - 1] if first else 0
        last = max(first + 1, int(np.searchsorted(cum, base + max_pairs_per_chunk, "right")))
        chunk = rows[first:last]
        per = n_pairs[chunk]
        rep = np.repeat(chunk, per)
        k = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
        nb = n_b[rep]
        p = order[start_a[rep] + k // nb]
        q = order[start_b[rep] + k % nb]
        ok = p != q
        for name, values in doublet_quantities(geo, p, q).items():
            ok &= (values >= bounds[f"{name}_min"][rep]) & (values <= bounds[f"{name}_max"][rep])
        found_p.append(p[ok])
        found_q.append(q[ok])
        first = last
    p = torch.from_numpy(np.concatenate(found_p)) if found_p else torch.zeros(0, dtype=torch.long)
    q = torch.from_numpy(np.concatenate(found_q)) if found_q else torch.zeros(0, dtype=torch.long)
    return canonical_edges(p, q, torch.as_tensor(x[:, 0]))
