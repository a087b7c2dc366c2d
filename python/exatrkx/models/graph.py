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
    (i, j, d2, rank) with rank the position in i's list, sorted by (i, rank).

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
    slack = 1e-5 * (1.0 + 2.0 * float(sq.max())) + 1e-6 * r2 if exact else 0.0
    out_i, out_j, out_d2 = [], [], []
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        approx = sq[rows, None] + sq[None, :] - 2.0 * (e32[rows] @ e32.T)
        hit = approx < r2 + slack
        hit[torch.arange(len(rows), device=emb.device), rows] = False
        ii, jj = torch.nonzero(hit, as_tuple=True)  # row-major: j ascending within a row
        if exact:
            d2 = torch.zeros(len(ii), dtype=torch.float64, device=emb.device)
            a, b = e64[rows[ii]], e64[jj]
            for k in range(dim):
                d = a[:, k] - b[:, k]
                d2 = d2 + d * d
        else:
            d2 = approx[ii, jj].double()
        ii = rows[ii]
        keep = d2 < r2
        out_i.append(ii[keep])
        out_j.append(jj[keep])
        out_d2.append(d2[keep])
    i, j, d2 = torch.cat(out_i), torch.cat(out_j), torch.cat(out_d2)
    # j ascending within each row already: stable sorts by d2, then by i, give (i, d2, j)
    order = torch.argsort(d2, stable=True)
    order = order[torch.argsort(i[order], stable=True)]
    i, j, d2 = i[order], j[order], d2[order]
    counts = torch.bincount(i, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(i), device=emb.device) - first[i]
    keep = rank < knn
    return i[keep], j[keep], d2[keep], rank[keep]


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
