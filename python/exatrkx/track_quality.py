"""Track-candidate features and the track-quality network (the pipeline's last stage).

After track building every candidate gets a row of `NUM_TRACK_FEATURES` numbers and the
network `tracks.pt` (`x f32[T, 18] -> f32[T]` logits) scores it; candidates whose sigmoid
score is not above `track_cut` are dropped. The Rust pipeline (`pipeline/src/track_quality.rs`)
computes the same rows; definitions in docs/DESIGN.md:

 0. spacepoints in the candidate
 1. 1 / pT of the helix fit (1/GeV, at most 10; 0 for a straight track)
 2. log(1 + |d0| / mm)
 3. |z0| / 100 mm
 4. log(1 + chi2 / ndf) of the fit (0 where ndf < 1)
 5. |eta|
 6-8. min, mean and max GNN score of the edges between consecutive spacepoints (by radius,
      then index; 0 for a pair without an edge; the higher score of either direction)
 9. fraction of strip spacepoints (a cluster column differs from the spacepoint's)
 10. 1 when the candidate comes from a later pass (the walkthrough's second pass or the
     mutual-best chains)
 11-12. max and mean over its spacepoints of the best score of an edge leaving the candidate
 13. log(1 + largest transverse residual of the fit / 0.05 mm)
 14. log(1 + largest z residual of the fit / 0.5 mm)
 15. fraction of consecutive pairs less than 5 mm apart in radius and 20 mm in z (overlaps)
 16. fraction of its spacepoints whose best edge leaving the candidate scores above their
     best edge inside it
 17. the lowest best-edge-inside score of its spacepoints

The helix fit is that of `pipeline/src/fit.rs`, written again here in plain floats in the same
order of operations.
"""

from __future__ import annotations

import math

import numpy as np

NUM_TRACK_FEATURES = 18
BFIELD = 2.0
SIGMA_TRANSVERSE = 0.05
SIGMA_Z = 0.5


def fit_circle(x: list[float], y: list[float]):
    """Taubin's fit as in fit.rs: (cx, cy, radius) or None when (close to) collinear."""
    n = len(x)
    if n < 3:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxx = syy = sxy = sxz = syz = szz = 0.0
    for xi, yi in zip(x, y, strict=True):
        u, v = xi - mx, yi - my
        z = u * u + v * v
        sxx += u * u
        syy += v * v
        sxy += u * v
        sxz += u * z
        syz += v * z
        szz += z * z
    sxx, syy, sxy, sxz, syz, szz = (s / n for s in (sxx, syy, sxy, sxz, syz, szz))
    mz = sxx + syy
    cov_xy = sxx * syy - sxy * sxy
    var_z = szz - mz * mz
    a3 = 4.0 * mz
    a2 = -3.0 * mz * mz - szz
    a1 = var_z * mz + 4.0 * cov_xy * mz - sxz * sxz - syz * syz
    a0 = sxz * (sxz * syy - syz * sxy) + syz * (syz * sxx - sxz * sxy) - var_z * cov_xy
    t, p = 0.0, a0
    for _ in range(64):
        dp = a1 + t * (2.0 * a2 + 3.0 * a3 * t)
        try:
            t_new = t - p / dp
        except ZeroDivisionError:
            break
        if not math.isfinite(t_new) or t_new == t:
            break
        p_new = a0 + t_new * (a1 + t_new * (a2 + t_new * a3))
        if abs(p_new) >= abs(p):
            break
        t, p = t_new, p_new
    det = t * t - t * mz + cov_xy
    if det == 0.0:
        return None
    ux = (sxz * (syy - t) - syz * sxy) / det / 2.0
    uy = (syz * (sxx - t) - sxz * sxy) / det / 2.0
    radius = math.sqrt(ux * ux + uy * uy + mz)
    if not math.isfinite(radius) or radius > 1e9 * max(math.sqrt(mz), 1e-12):
        return None
    return ux + mx, uy + my, radius


def _fit_line(s: list[float], z: list[float]) -> tuple[float, float]:
    n = len(s)
    ms, mz = sum(s) / n, sum(z) / n
    sss = ssz = 0.0
    for si, zi in zip(s, z, strict=True):
        sss += (si - ms) * (si - ms)
        ssz += (si - ms) * (zi - mz)
    slope = ssz / sss if sss > 0.0 else 0.0
    return mz - slope * ms, slope


def fit_helix(x: list[float], y: list[float], z: list[float]) -> tuple[float, ...]:
    """(pt, eta, d0, z0, chi2_ndf, largest abs transverse residual, largest abs z residual) of
    points in crossing order, as fit.rs's `helix`."""
    n = len(x)
    first, last = 0, n - 1
    s = [0.0] * n
    res_t = [0.0] * n
    circle = fit_circle(x, y)
    if circle is not None:
        cx, cy, radius = circle
        cross = (x[first] - cx) * (y[last] - cy) - (y[first] - cy) * (x[last] - cx)
        h = 1.0 if cross >= 0.0 else -1.0
        dc = math.hypot(cx, cy)
        if dc > 0.0:
            px, py = cx * (1.0 - radius / dc), cy * (1.0 - radius / dc)
        else:
            px, py = x[first], y[first]
        ux, uy = (px - cx) / radius, (py - cy) / radius
        tx, ty = -h * uy, h * ux
        phi = math.atan2(ty, tx)
        d0 = py * math.cos(phi) - px * math.sin(phi)
        pt = 0.3 * BFIELD * radius / 1000.0
        for i in range(n):
            vx, vy = x[i] - cx, y[i] - cy
            res_t[i] = math.hypot(vx, vy) - radius
            s[i] = h * math.atan2(ux * vy - uy * vx, ux * vx + uy * vy) * radius
    else:
        phi = math.atan2(y[last] - y[first], x[last] - x[first])
        cp, sp = math.cos(phi), math.sin(phi)
        d0 = y[first] * cp - x[first] * sp
        pt = math.inf
        for i in range(n):
            s[i] = x[i] * cp + y[i] * sp
            res_t[i] = y[i] * cp - x[i] * sp - d0
    z0, cot_theta = _fit_line(s, z)
    chi2 = max_t = max_z = 0.0
    for i in range(n):
        rz = z[i] - (z0 + cot_theta * s[i])
        chi2 += (res_t[i] / SIGMA_TRANSVERSE) ** 2 + (rz / SIGMA_Z) ** 2
        max_t = max(max_t, abs(res_t[i]))
        max_z = max(max_z, abs(rz))
    ndf = 2 * n - 5
    chi2_ndf = chi2 / ndf if ndf > 0 else math.nan
    return pt, math.asinh(cot_theta), d0, z0, chi2_ndf, max_t, max_z


def pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of spacepoints (of `n`)."""
    return np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)


def best_pair_scores(
    src: np.ndarray, dst: np.ndarray, scores: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The edges' unordered pairs, sorted and unique (`pair_keys`), and the best score of
    each (either direction)."""
    keys = pair_keys(src, dst, n)
    order = np.lexsort((-scores, keys))
    first = np.r_[True, keys[order][1:] != keys[order][:-1]] if len(order) else order
    return keys[order][first], scores[order][first]


def pair_scores(
    pair_key: np.ndarray, pair_best: np.ndarray, a: np.ndarray, b: np.ndarray, n: int, missing
) -> np.ndarray:
    """The best score (`best_pair_scores`) of each pair (a, b), `missing` where no edge joins
    them."""
    k = pair_keys(a, b, n)
    if not len(pair_key):
        return np.full(len(k), missing, dtype=np.float32)
    pos = np.minimum(np.searchsorted(pair_key, k), len(pair_key) - 1)
    return np.where(pair_key[pos] == k, pair_best[pos], np.float32(missing))


def track_features(
    features: np.ndarray,
    labels: np.ndarray,
    second_pass: np.ndarray,
    edge_index: np.ndarray,
    scores: np.ndarray,
) -> np.ndarray:
    """`[T, NUM_TRACK_FEATURES]` float32 rows of tracks `0..T` (labels as track building
    numbers them, -1 none); `second_pass[t]` tells where track t came from;
    `edge_index`/`scores` are the edges track building read (above the GNN cut)."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    num_tracks = len(second_pass)
    out = np.zeros((num_tracks, NUM_TRACK_FEATURES), dtype=np.float32)
    if num_tracks == 0:
        return out
    src = np.asarray(edge_index[0], dtype=np.int64)
    dst = np.asarray(edge_index[1], dtype=np.int64)
    w = np.asarray(scores, dtype=np.float32)

    # Best score per unordered pair, for the consecutive spacepoints.
    pair_key, pair_best = best_pair_scores(src, dst, w, n)

    # Best score of an edge leaving a track (its other end in another track or in none), and
    # of one inside it.
    leaving = np.zeros(n, dtype=np.float32)
    inside = np.zeros(n, dtype=np.float32)
    cross = labels[src] != labels[dst]
    for best, sel in ((leaving, cross), (inside, ~cross)):
        np.maximum.at(best, src[sel], w[sel])
        np.maximum.at(best, dst[sel], w[sel])

    radius = features[:, 0]
    strip = np.any(features[:, 3:9] != np.tile(features[:, 0:3], 2), axis=1)
    r_mm = 1000.0 * features[:, 0].astype(np.float64)
    phi = math.pi * features[:, 1].astype(np.float64)
    zs = (1000.0 * features[:, 2].astype(np.float64)).tolist()
    r_list = r_mm.tolist()
    # math's cos/sin (the C library's, as in Rust), not numpy's, which may differ in the last bit
    xs = [r * math.cos(p) for r, p in zip(r_mm.tolist(), phi.tolist(), strict=True)]
    ys = [r * math.sin(p) for r, p in zip(r_mm.tolist(), phi.tolist(), strict=True)]

    members = np.flatnonzero(labels >= 0)
    members = members[np.lexsort((members, radius[members], labels[members]))]
    bounds = np.flatnonzero(np.r_[True, labels[members][1:] != labels[members][:-1], True])
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        hits = members[a:b]
        t = int(labels[hits[0]])
        hl = hits.tolist()
        hz = [zs[i] for i in hl]
        pt, eta, d0, z0, chi2_ndf, max_t, max_z = fit_helix(
            [xs[i] for i in hl], [ys[i] for i in hl], hz
        )
        hr = [r_list[i] for i in hl]
        overlaps = sum(
            1
            for k in range(len(hl) - 1)
            if hr[k + 1] - hr[k] < 5.0 and abs(hz[k + 1] - hz[k]) < 20.0
        )
        pair = [0.0]
        if len(hits) > 1:
            pair = pair_scores(pair_key, pair_best, hits[:-1], hits[1:], n, 0.0).tolist()
        out_best = leaving[hits].tolist()
        in_best = inside[hits].tolist()
        inv_pt = 0.0 if math.isinf(pt) else min(1.0 / pt, 10.0)
        out[t] = [
            len(hits),
            inv_pt,
            math.log1p(abs(d0)),
            abs(z0) / 100.0,
            math.log1p(chi2_ndf) if math.isfinite(chi2_ndf) else 0.0,
            abs(eta),
            min(pair),
            sum(pair) / len(pair),
            max(pair),
            float(np.count_nonzero(strip[hits])) / len(hits),
            1.0 if second_pass[t] else 0.0,
            max(out_best),
            sum(out_best) / len(out_best),
            math.log1p(max_t / SIGMA_TRANSVERSE),
            math.log1p(max_z / SIGMA_Z),
            overlaps / (len(hl) - 1) if len(hl) > 1 else 0.0,
            sum(1 for a, b in zip(out_best, in_best, strict=True) if a > b) / len(hl),
            min(in_best),
        ]
    return out


def matched_candidates(
    particle_ids: np.ndarray, labels: np.ndarray, num_tracks: int, match_fraction: float = 0.5
) -> np.ndarray:
    """Per track: more than `match_fraction` of its spacepoints come from one particle (the
    match of docs/SIMULATION.md; noise, particle id 0, matches nothing)."""
    labels = np.asarray(labels, dtype=np.int64)
    pid = np.asarray(particle_ids, dtype=np.uint64)
    size = np.bincount(labels[labels >= 0], minlength=num_tracks)
    sel = (labels >= 0) & (pid != 0)
    best = np.zeros(num_tracks, dtype=np.int64)
    if sel.any():
        pairs = np.stack([labels[sel].astype(np.uint64), pid[sel]], axis=1)
        unique, counts = np.unique(pairs, axis=0, return_counts=True)
        np.maximum.at(best, unique[:, 0].astype(np.int64), counts)
    return best > match_fraction * size
