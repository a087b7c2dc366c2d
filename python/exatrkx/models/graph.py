"""Graph helpers with the edge convention of docs/DESIGN.md: each unordered pair once, no
self-loops, `src` the spacepoint of smaller radius (feature column 0; smaller index on equal
radius), edges sorted by (src, dst). The radius graph follows the brute-force definition."""

from __future__ import annotations

import torch
from torch import Tensor


def canonical_edges(src: Tensor, dst: Tensor, r: Tensor) -> Tensor:
    """Orient, drop self-loops and duplicates, sort: int64 [2, E] on the input device."""
    src = src.long()
    dst = dst.long()
    keep = src != dst
    src, dst = src[keep], dst[keep]
    rs, rd = r[src], r[dst]
    swap = (rs > rd) | ((rs == rd) & (src > dst))
    a = torch.where(swap, dst, src)
    b = torch.where(swap, src, dst)
    n = int(r.numel())
    key = torch.unique(a * n + b)  # sorted, so (src, dst) order
    return torch.stack([key // n, key % n])


def phi_sector_edges(x: Tensor, edge_index: Tensor, sectors: int, start: float) -> Tensor:
    """The edges with both ends in the phi window [start, start + 2/sectors) (phi/pi units,
    feature column 1, wrapped): a crop that trains on a part of a dense event."""
    inside = phi_sector_mask(x, sectors, start)
    return edge_index[:, inside[edge_index[0]] & inside[edge_index[1]]]


def phi_sector_mask(x: Tensor, sectors: int, start: float) -> Tensor:
    """Which spacepoints lie in the phi window [start, start + 2/sectors) (phi/pi units)."""
    return torch.remainder(x[:, 1].float() - start, 2.0) < 2.0 / sectors


def phi_sector_sample(sample: dict, sectors: int, start: float) -> dict:
    """The spacepoints in the phi window of `phi_sector_edges` with their per-spacepoint
    columns, and the truth pairs with both ends inside, renumbered: a crop of a dense event
    for training the embedding."""
    x = sample["x"]
    inside = phi_sector_mask(x, sectors, start)
    new_index = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    new_index[inside] = torch.arange(int(inside.sum()), device=x.device)
    out = {
        k: v[inside]
        for k, v in sample.items()
        if not k.startswith("truth")
        and torch.is_tensor(v)
        and v.dim() >= 1
        and v.shape[0] == x.shape[0]
    }
    truth = sample["truth_edges"]
    keep = inside[truth[0]] & inside[truth[1]]
    out["truth_edges"] = new_index[truth[:, keep]]
    return out


def edge_keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    """One int64 per oriented edge, for set membership between graphs."""
    return edge_index[0] * num_nodes + edge_index[1]


def contains(edge_index: Tensor, query: Tensor, num_nodes: int) -> Tensor:
    """Which `query` edges (oriented) are in `edge_index`: bool [E_query]."""
    return torch.isin(edge_keys(query, num_nodes), edge_keys(edge_index, num_nodes))


def radius_neighbours(
    emb: Tensor,
    radius: float,
    knn: int,
    exact: bool = True,
    rows_per_chunk: int = 0,
    queries: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Directed neighbour lists: for every i (every spacepoint, or those in `queries`), the
    j != i with d2(i, j) < radius^2 sorted by (d2, j) and cut to `knn`. Returns
    (i, j, d2, rank) with rank the position in i's list, in the order of the queries.

    Candidates come from a float32 matrix product with a margin. With `exact`, their d2 is
    recomputed in f64 accumulating dims in order 0..D, as the definition (and the Rust grid)
    does, so the result matches it bit for bit; without (hard-negative mining in training),
    the float32 value is used."""
    n, dim = emb.shape
    if radius <= 0 or knn < 1:
        raise ValueError(f"radius must be > 0 and knn >= 1, got radius={radius}, knn={knn}")
    empty = torch.zeros(0, dtype=torch.long, device=emb.device)
    if n < 2:
        return empty, empty, torch.zeros(0, dtype=torch.float64, device=emb.device), empty
    e32 = emb.detach().float()
    sq = (e32 * e32).sum(1)
    r2 = float(radius) * float(radius)
    # chunks of ~16 MB of distances: larger temporaries cost page faults, not just bandwidth
    chunk = rows_per_chunk or min(n, max(32, (1 << 22) // n))
    if queries is None:
        queries = torch.arange(n, device=emb.device)
    e64 = emb.detach().double()
    # the float32 expansion |a|^2 + |b|^2 - 2ab is off by a few ulp of |a|^2 + |b|^2
    slack = 1e-5 * (1.0 + 2.0 * float(sq.max())) + 1e-6 * r2
    out: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        approx = sq[rows, None] + sq[None, :] - 2.0 * (e32[rows] @ e32.T)
        approx[torch.arange(len(rows), device=emb.device), rows] = float("inf")
        bound = torch.full((len(rows), 1), r2 + slack, device=emb.device)
        many = (approx <= bound).sum(1) > knn
        if bool(many.any()):
            # the exact knn nearest all have an approximate d2 within 2 slack of the knn-th
            # approximate one: nothing further need be kept
            kth = torch.kthvalue(approx[many], knn, dim=1).values
            bound[many, 0] = torch.minimum(bound[many, 0], kth + 2.0 * slack)
        ii, jj = torch.nonzero(approx <= bound, as_tuple=True)  # j ascending within a row
        if exact:
            d2 = torch.zeros(len(ii), dtype=torch.float64, device=emb.device)
            a, b = e64[rows[ii]], e64[jj]
            for k in range(dim):
                d = a[:, k] - b[:, k]
                d2 = d2 + d * d
        else:
            d2 = approx[ii, jj].double()
        keep = d2 < r2
        ii, jj, d2 = ii[keep], jj[keep], d2[keep]
        # a chunk holds whole rows, so the knn cut happens here and memory stays N x knn
        # (an untrained embedding puts everything within the radius); stable sorts by d2,
        # then by row, give (row, d2, j) order
        order = torch.argsort(d2, stable=True)
        order = order[torch.argsort(ii[order], stable=True)]
        ii, jj, d2 = ii[order], jj[order], d2[order]
        counts = torch.bincount(ii, minlength=len(rows))
        rank = torch.arange(len(ii), device=emb.device) - (torch.cumsum(counts, 0) - counts)[ii]
        keep = rank < knn
        out.append((rows[ii[keep]], jj[keep], d2[keep], rank[keep]))
    i, j, d2, rank = (torch.cat(parts) for parts in zip(*out, strict=True))
    return i, j, d2, rank


def radius_graph(emb: Tensor, radius: float, knn: int, r: Tensor) -> Tensor:
    """The radius graph of docs/DESIGN.md: union of the capped neighbour lists, oriented by
    the spacepoint radius `r` (feature column 0) and sorted."""
    i, j, _, _ = radius_neighbours(emb, radius, knn)
    return canonical_edges(i, j, r.to(emb.device))


def edge_labels(edge_index: Tensor, particle_id: Tensor, target_hit: Tensor):
    """Per edge: true (both ends on one particle, not noise) and true for a target particle."""
    a = particle_id[edge_index[0]]
    b = particle_id[edge_index[1]]
    y = (a == b) & (a != 0)
    return y, y & target_hit[edge_index[0]]
