"""Where the served pipeline's GNN input keeps and scores the target truth edges: by the
pseudorapidity of the edge's first spacepoint and the pT of its particle.

    exatrkx run --events data/mu200-test --event 0 --out /tmp/labels \\
        --edges-out data/mu200-test --param gnn_cut=0
    python -m exatrkx.edge_scan --events data/mu200-test --event 0 [--cut 0.5]

With `--param gnn_cut=0` the written edges are all of the GNN's input (the graph after the
filter), so "in graph" is the efficiency of graph construction and filter and "score > cut"
the share the GNN keeps at that cut. An edge counts in either orientation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from exatrkx import data, trackml
from exatrkx.track_quality import best_pair_scores, pair_scores

ABS_ETA_BINS = (0.0, 1.0, 2.5, 4.0)
PT_BINS = (1.0, 1.5, 2.0, 5.0, float("inf"))  # GeV; targets are above 1 GeV


def read_scored_edges(directory: Path, event_id: int) -> tuple[np.ndarray, np.ndarray]:
    prefix = trackml.event_prefix(event_id)
    edges = np.load(directory / f"{prefix}-edges.npy")
    scores = np.load(directory / f"{prefix}-scores.npy")
    if edges.ndim != 2 or edges.shape != (2, len(scores)):
        raise ValueError(f"{directory}/{prefix}: {edges.shape} edges for {len(scores)} scores")
    return edges.astype(np.int64), scores.astype(np.float32)


def truth_edge_scores(sample: dict, edges: np.ndarray, scores: np.ndarray) -> dict:
    """Per target truth edge: its score in the graph (-1 where the graph lacks it), the
    |eta| of its first spacepoint and its particle's pT. An edge counts in either orientation,
    at the better score where both are there."""
    a, b = sample["truth_edges"][:, sample["truth_target"]].numpy()
    n = sample["x"].shape[0]
    pair_key, pair_best = best_pair_scores(edges[0], edges[1], scores, n)
    x = sample["x"].numpy()
    eta = np.arcsinh(x[a, 2] / np.maximum(x[a, 0], 1e-6))
    return {
        "score": pair_scores(pair_key, pair_best, a, b, n, -1.0),
        "abs_eta": np.abs(eta),
        "pt": sample["pt"].numpy()[a],
    }


def table(parts: list[dict], cut: float) -> list[dict]:
    """One row per |eta| bin (and one for all): per pT bin the number of target truth edges,
    the share in the graph and the share scored above `cut`."""
    score = np.concatenate([p["score"] for p in parts])
    abs_eta = np.concatenate([p["abs_eta"] for p in parts])
    pt = np.concatenate([p["pt"] for p in parts])
    eta_bins = bin_masks(np.digitize(abs_eta, ABS_ETA_BINS[1:-1]), eta_name, len(ABS_ETA_BINS))
    pt_bins = bin_masks(np.digitize(pt, PT_BINS[1:-1]), pt_name, len(PT_BINS))
    rows = []
    for eta_label, in_eta in eta_bins:
        row: dict = {"abs_eta": eta_label, "cells": []}
        for pt_label, in_pt in pt_bins:
            m = in_eta & in_pt
            total = int(m.sum())
            row["cells"].append(
                {
                    "pt": pt_label,
                    "edges": total,
                    "in_graph": float((score[m] >= 0).mean()) if total else float("nan"),
                    "kept": float((score[m] > cut).mean()) if total else float("nan"),
                }
            )
        rows.append(row)
    return rows


def bin_masks(index: np.ndarray, name, num_edges: int) -> list[tuple[str, np.ndarray]]:
    """(name, mask) per bin of `index` (bins between `num_edges` bin edges), then ("all", every
    entry)."""
    masks = [(name(i), index == i) for i in range(num_edges - 1)]
    return masks + [("all", np.ones(len(index), dtype=bool))]


def eta_name(i: int) -> str:
    return f"{ABS_ETA_BINS[i]:g}-{ABS_ETA_BINS[i + 1]:g}"


def pt_name(i: int) -> str:
    lo, hi = PT_BINS[i], PT_BINS[i + 1]
    return f"{lo:g}-{hi:g}" if hi != float("inf") else f">{lo:g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exatrkx.edge_scan", description=__doc__)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--event", type=int, action="append", help="event ids (default: all)")
    p.add_argument(
        "--edges", type=Path, help="folder of the -edges.npy / -scores.npy (default: --events)"
    )
    p.add_argument("--cut", type=float, default=0.5, help="score cut of the 'kept' share")
    args = p.parse_args(argv)
    ids = args.event or trackml.list_events(args.events)
    parts = []
    for event_id in ids:
        sample = data.event_sample(trackml.read_event(args.events, event_id))
        edges, scores = read_scored_edges(args.edges or args.events, event_id)
        parts.append(truth_edge_scores(sample, edges, scores))
    rows = table(parts, args.cut)
    names = [c["pt"] for c in rows[0]["cells"]]
    print(f"target truth edges in the graph / scored above {args.cut:g}, by |eta| and pT (GeV)")
    print(f"{'|eta|':>8} " + " ".join(f"{'pT ' + n:>19}" for n in names))
    for row in rows:
        cells = [f"{c['in_graph']:.3f} / {c['kept']:.3f} ({c['edges']})" for c in row["cells"]]
        print(f"{row['abs_eta']:>8} " + " ".join(f"{c:>19}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
