"""How an embedding's radius graph keeps the target truth edges at several `knn` caps, overall
and by the production vertex's |z|: where the k cap loses edges at high pile-up.

    python -m exatrkx.graph_scan --embedding model_repository/exatrkx/1/embed.pt \\
        --radius 0.1055 --events data/mu200-test --event 0 --event 1 [--knn 32 48 64]

A truth edge (a, b) is in the graph of docs/DESIGN.md at cap k when d(a, b) < radius and b is
among the k nearest of a or a among the k nearest of b; its rank in a's list is the number of
other spacepoints strictly nearer to a (ties between equal distances are not resolved by
index here, which moves nothing at float64 precision). One pass over the spacepoints per
truth edge gives every cap at once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from exatrkx import data, trackml

KNN = (16, 24, 32, 48, 64, 96, 128)
ABS_VZ_BINS = (0.0, 25.0, 50.0, 75.0, 100.0, float("inf"))  # mm; the beam spot's sigma_z is 50


def truth_ranks(emb: torch.Tensor, a: torch.Tensor, b: torch.Tensor, chunk: int = 2048):
    """For each pair (a, b): how many spacepoints other than a are strictly nearer to a than
    b is, and the squared distance (float64)."""
    e = emb.double()
    sq = (e * e).sum(1)
    d2 = (e[a] - e[b]).pow(2).sum(1)
    rank = torch.empty(len(a), dtype=torch.long)
    for start in range(0, len(a), chunk):
        rows, ends = a[start : start + chunk], b[start : start + chunk]
        dist = sq[rows, None] + sq[None, :] - 2.0 * (e[rows] @ e.T)
        # neither a itself nor b, whose expanded distance may round below d2
        dist[torch.arange(len(rows)), rows] = float("inf")
        dist[torch.arange(len(rows)), ends] = float("inf")
        rank[start : start + chunk] = (dist < d2[start : start + chunk, None]).sum(1)
    return rank, d2


def scan_sample(net, sample: dict, radius: float, knn=KNN) -> dict:
    """Counts of target truth edges kept per cap and |vz| bin for one event."""
    with torch.no_grad():
        emb = net(sample["x"])
    a, b = sample["truth_edges"][:, sample["truth_target"]]
    rank_a, d2 = truth_ranks(emb, a, b)
    rank_b, _ = truth_ranks(emb, b, a)
    inside = d2 < radius * radius
    vz = sample["vertex_z"][a].abs().double()
    bins = torch.bucketize(vz, torch.tensor(ABS_VZ_BINS[1:-1], dtype=torch.float64), right=True)
    nbins = len(ABS_VZ_BINS) - 1
    counts = {"total": torch.bincount(bins, minlength=nbins).tolist(), "kept": {}}
    for k in knn:
        kept = inside & ((rank_a < k) | (rank_b < k))
        counts["kept"][k] = torch.bincount(bins[kept], minlength=nbins).tolist()
    return counts


def table(counts: list[dict], knn=KNN) -> list[dict]:
    """One row per cap: efficiency overall and per |vz| bin, summed over the events."""
    nbins = len(ABS_VZ_BINS) - 1
    total = [sum(c["total"][i] for c in counts) for i in range(nbins)]
    rows = []
    for k in knn:
        kept = [sum(c["kept"][k][i] for c in counts) for i in range(nbins)]
        row = {"knn": k, "efficiency": sum(kept) / max(sum(total), 1)}
        for i in range(nbins):
            row[bin_name(i)] = kept[i] / total[i] if total[i] else float("nan")
        rows.append(row)
    return rows


def bin_name(i: int) -> str:
    lo, hi = ABS_VZ_BINS[i], ABS_VZ_BINS[i + 1]
    return f"|vz| {lo:g}-{hi:g}" if hi != float("inf") else f"|vz| >{lo:g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m exatrkx.graph_scan", description=__doc__)
    p.add_argument("--embedding", type=Path, required=True, help="an exported embed.pt")
    p.add_argument("--radius", type=float, required=True)
    p.add_argument("--events", type=Path, required=True)
    p.add_argument("--event", type=int, action="append", help="event ids (default: all)")
    p.add_argument("--knn", type=int, nargs="+", default=list(KNN))
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    net = torch.jit.load(str(args.embedding), map_location="cpu").eval()
    ids = args.event or trackml.list_events(args.events)
    counts = []
    for event_id in ids:
        sample = data.event_sample(trackml.read_event(args.events, event_id))
        counts.append(scan_sample(net, sample, args.radius, args.knn))
        print(f"event {event_id}: {sum(counts[-1]['total'])} target truth edges", flush=True)
    rows = table(counts, args.knn)
    names = [bin_name(i) for i in range(len(ABS_VZ_BINS) - 1)]
    print(f"{'knn':>5} {'efficiency':>10} " + " ".join(f"{n:>12}" for n in names))
    for row in rows:
        cells = " ".join(f"{row[n]:>12.4f}" for n in names)
        print(f"{row['knn']:>5} {row['efficiency']:>10.4f} {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
