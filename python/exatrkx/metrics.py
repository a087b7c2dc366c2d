"""Edge-level metrics of graph construction and edge classification, and the scans that choose
the pipeline parameters (radius, knn, filter_cut, gnn_cut) on validation events.

Definitions (per event counts, summed over events before dividing):
- *efficiency*: target truth edges (consecutive spacepoints of a target particle) present in
  the graph / all target truth edges of the event;
- *purity*: true edges (both ends on one particle) / edges;
- *stage efficiency* (classifiers): target-true edges kept / target-true edges in the input.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from exatrkx.models.graph import canonical_edges, contains, edge_labels, radius_neighbours

COUNT_KEYS = ("events", "edges", "true", "target_true", "truth_found", "truth_total")


def graph_counts(edge_index: Tensor, sample: dict) -> dict[str, int]:
    """Counts of one event's graph against its truth (see the module doc)."""
    n = sample["x"].shape[0]
    y, y_target = edge_labels(edge_index, sample["particle_id"], sample["target_hit"])
    target_truth = sample["truth_edges"][:, sample["truth_target"]]
    return {
        "events": 1,
        "edges": int(edge_index.shape[1]),
        "true": int(y.sum()),
        "target_true": int(y_target.sum()),
        "truth_found": int(contains(edge_index, target_truth, n).sum()),
        "truth_total": int(target_truth.shape[1]),
    }


def add_counts(total: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + counts[k] for k in COUNT_KEYS}


def summarize(counts: dict[str, int]) -> dict[str, float]:
    """Efficiency, purity and mean edges per event from summed counts."""
    events = max(1, counts["events"])
    return {
        "efficiency": counts["truth_found"] / max(1, counts["truth_total"]),
        "purity": counts["true"] / max(1, counts["edges"]),
        "edges_per_event": counts["edges"] / events,
        "target_true_per_event": counts["target_true"] / events,
    }


def radius_scan(
    pairs: Iterable[tuple[Tensor, dict]], radii: list[float], knns: list[int]
) -> list[dict]:
    """Efficiency/purity/size of the radius graph for each (radius, knn) over validation
    events, given (embedding, sample) pairs. One neighbour search at the largest setting; the
    smaller ones are subsets of it (sorted by distance, so a cap keeps a prefix)."""
    r_max, k_max = max(radii), max(knns)
    totals: dict[tuple[float, int], dict[str, int]] = {}
    for emb, sample in pairs:
        i, j, d2, rank = radius_neighbours(emb, r_max, k_max)
        r_col = sample["x"][:, 0]
        for radius in radii:
            inside = d2 < radius * radius
            for knn in knns:
                keep = inside & (rank < knn)
                graph = canonical_edges(i[keep], j[keep], r_col)
                key = (radius, knn)
                totals[key] = add_counts(totals.get(key, {}), graph_counts(graph, sample))
    return [{"radius": r, "knn": k, **summarize(c), **c} for (r, k), c in sorted(totals.items())]


def choose_radius(rows: list[dict], efficiency: float) -> dict:
    """The (radius, knn) reaching `efficiency` with the fewest edges; if none does, the most
    efficient one."""
    good = [r for r in rows if r["efficiency"] >= efficiency]
    if good:
        return min(good, key=lambda r: (r["edges_per_event"], r["radius"], r["knn"]))
    return max(rows, key=lambda r: (r["efficiency"], -r["edges_per_event"]))


def cut_scan(graphs: Iterable[tuple[Tensor, dict]], cuts: list[float]) -> list[dict]:
    """For each cut on sigmoid scores: stage efficiency, total efficiency, purity and edges
    kept over the given (scores, graph sample) pairs. Stage efficiency is over the target
    *truth* edges (consecutive spacepoints of a target particle) the input holds: other
    same-particle pairs (same-layer overlaps, skipped layers) are not needed to build the
    track, and asking the cut to keep them all would keep nearly every edge."""
    totals: dict[float, dict[str, int]] = {}
    stage: dict[float, list[int]] = {}
    for scores, sample in graphs:
        edge_index = sample["edge_index"]
        found_in_input = graph_counts(edge_index, sample)["truth_found"]
        for cut in cuts:
            keep = scores > cut
            counts = graph_counts(edge_index[:, keep], sample)
            totals[cut] = add_counts(totals.get(cut, {}), counts)
            kept, total = stage.get(cut, [0, 0])
            stage[cut] = [kept + counts["truth_found"], total + found_in_input]
    rows = []
    for cut in sorted(totals):
        kept, total = stage[cut]
        rows.append(
            {
                "cut": cut,
                "stage_efficiency": kept / max(1, total),
                **summarize(totals[cut]),
                **totals[cut],
            }
        )
    return rows


def choose_cut(rows: list[dict], stage_efficiency: float) -> dict:
    """The highest cut keeping at least `stage_efficiency` of the input's target-true edges
    (the purest such); the lowest cut if none does."""
    good = [r for r in rows if r["stage_efficiency"] >= stage_efficiency]
    if good:
        return max(good, key=lambda r: r["cut"])
    return min(rows, key=lambda r: r["cut"])


DEFAULT_CUTS = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4,
    0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95,
]  # fmt: skip


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain text table for the console and the model card."""
    lines = ["  ".join(f"{c:>14}" for c in columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row[c]
            cells.append(f"{v:>14.4f}" if isinstance(v, float) else f"{v:>14}")
        lines.append("  ".join(cells))
    return "\n".join(lines)
